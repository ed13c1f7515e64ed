"""A contract-shaped server for the fleet tests, run in the test's own loop.

`bench.peers.bare_python.BarePeer` is a real python-socketio + aiohttp server with
the contract's handler shape; here it listens on a free loopback port.
"""

from __future__ import annotations

import os
from pathlib import Path

from aiohttp import web

from bench.peers.bare_python import BarePeer
from bench.procs import ServerProcess

TOKEN = "enroll-token"
ADMIN = "admin-token"


async def serve(peer: BarePeer) -> tuple[web.AppRunner, str]:
    """Start `peer` on 127.0.0.1; its runner (clean it up) and its URL."""
    runner = web.AppRunner(peer.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


def as_server(peer: BarePeer) -> ServerProcess:
    """The benchmark helpers take a ServerProcess; this one runs in-process."""
    return ServerProcess("bare", peer.url, TOKEN, ADMIN, None, Path(os.devnull))
