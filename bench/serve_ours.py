"""Run our `DeployServer` alone, for the benchmarks, until SIGTERM.

Used only while `server/cli.py` (`deploy-server`) is not there: it starts the server
through its public in-process interface (server/app.py), with the same settings the
benchmarks would pass to the CLI.

    python -m bench.serve_ours --port P --data-dir D   (tokens from DEPLOY_*_TOKEN)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

from bench.fleet import raise_fd_limit
from server.app import DeployServer
from server.config import ServerConfig

logger = logging.getLogger(__name__)


async def _serve(args: argparse.Namespace) -> None:
    server = DeployServer(
        ServerConfig(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            enrollment_token=os.environ.get("DEPLOY_ENROLLMENT_TOKEN"),
            admin_token=os.environ.get("DEPLOY_ADMIN_TOKEN"),
        )
    )
    await server.start()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    logger.info("serving on %s", server.url)
    await stopping.wait()
    await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_ours")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    raise_fd_limit()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
