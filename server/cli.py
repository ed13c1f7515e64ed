"""`deploy-server`: the server without a window, for a machine that stays on.

Prints where it listens and, when it made new tokens, shows them once. Ctrl+C or
SIGTERM stops it cleanly (agents see a clean disconnect). `--demo` hands the started
server to `server.demo.run_headless_demo` and exits with its result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from server import runtime
from server.app import DeployServer
from server.config import DEFAULT_PORT, ServerConfig, default_data_dir, port_number
from server.errors import ServerError

log = logging.getLogger(__name__)

READY_LINE = "Press Ctrl+C to stop."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy-server", description="Deploy Console server without a window."
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
    parser.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help="0: any free"
    )
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--database-url", default=None, help="SQLAlchemy async URL")
    parser.add_argument("--redis-url", default=None, help="scale-out message queue")
    parser.add_argument(
        "--enrollment-token", default=os.environ.get("DEPLOY_ENROLLMENT_TOKEN")
    )
    parser.add_argument("--admin-token", default=os.environ.get("DEPLOY_ADMIN_TOKEN"))
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start demo agents, deploy every sample to them, exit 0 if all succeed",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig(
        host=args.host,
        port=args.port,
        data_dir=args.data_dir or default_data_dir(),
        database_url=args.database_url,
        enrollment_token=args.enrollment_token or None,
        admin_token=args.admin_token or None,
        redis_url=args.redis_url,
    )


async def run(args: argparse.Namespace) -> int:
    server = DeployServer(config_from(args))
    try:
        await server.start()
    except ServerError as exc:
        print(f"deploy-server: {exc}", file=sys.stderr)
        return 2
    runtime.tune_garbage_collector()

    stop = asyncio.Event()
    try:
        with _stop_on_signals(stop):
            _announce(server)
            if args.demo:
                return await _run_demo(server, args)
            await stop.wait()
            log.info("stop requested")
            return 0
    finally:
        await server.stop()


def _announce(server: DeployServer) -> None:
    print(f"Deploy server listening on {server.url}", flush=True)
    print(f"Data folder: {server.config.data_dir}", flush=True)
    if server.tokens_generated:
        print("New tokens were generated and stored in the data folder:", flush=True)
        print(f"  enrollment token (agents): {server.enrollment_token}", flush=True)
        print(f"  admin token (consoles, API): {server.admin_token}", flush=True)
    print(READY_LINE, flush=True)


async def _run_demo(server: DeployServer, args: argparse.Namespace) -> int:
    try:
        from server.demo import run_headless_demo
    except ModuleNotFoundError as exc:
        if exc.name != "server.demo":
            raise
        print(
            "deploy-server: this build has no demo (server/demo.py).", file=sys.stderr
        )
        return 2
    return await run_headless_demo(server, args)


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    """Set `stop` on SIGINT or SIGTERM while inside; Windows has Ctrl+C instead."""
    loop = asyncio.get_running_loop()
    installed = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        return runtime.run(run(args))
    except KeyboardInterrupt:  # Windows, where there is no signal handler
        return 0


if __name__ == "__main__":
    sys.exit(main())
