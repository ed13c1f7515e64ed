"""The fleet simulator speaks the contract: registers, downloads, resumes, reports.

The server here is `bench.peers.bare_python.BarePeer` -- a real python-socketio +
aiohttp server with the contract's handler shape, run on loopback in the test's loop.
It stands in for the product server so the simulator is tested on its own; the
product server is exercised by `test_quick.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.fleet import Fleet, FleetOptions
from bench.peers.bare_python import BarePeer
from bench.procs import ServerProcess
from bench.suite import AdminApi, ConsoleListener

TOKEN = "enroll-token"
ADMIN = "admin-token"
TIMEOUT = 30


@pytest.fixture
def package_file(tmp_path: Path) -> Path:
    data = os.urandom(3 * (1 << 20) + 123)
    path = tmp_path / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return path


async def _serve(peer: BarePeer):
    runner = web.AppRunner(peer.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def peer(package_file: Path):
    peer = BarePeer(TOKEN, ADMIN, package_file)
    runner, url = await _serve(peer)
    peer.url = url
    yield peer
    await runner.cleanup()


def _as_server(peer: BarePeer) -> ServerProcess:
    """The benchmark helpers take a ServerProcess; this one runs in-process."""
    return ServerProcess("bare", peer.url, TOKEN, ADMIN, None, Path(os.devnull))


async def test_fleet_agents_register_each_as_its_own_device(peer):
    options = FleetOptions(server=peer.url, token=TOKEN)
    async with Fleet(options, processes=2) as fleet:
        results = await fleet.connect(6, prefix="reg")

    assert all(r["ok"] for r in results), results
    assert len({r["device_id"] for r in results}) == 6
    assert sorted(peer.devices) == sorted(r["agent_id"] for r in results)


async def test_fleet_agent_with_wrong_token_reports_the_refusal(peer):
    options = FleetOptions(server=peer.url, token="wrong")
    async with Fleet(options, processes=1) as fleet:
        [result] = await fleet.connect(1)

    assert result["ok"] is False
    assert "ConnectionError" in result["error"]


async def test_fleet_downloads_checks_and_reports_each_job_completed(
    peer, package_file
):
    options = FleetOptions(
        server=peer.url, token=TOKEN, install_seconds=0.2, report_hz=10
    )
    server = _as_server(peer)
    console = ConsoleListener(server)
    await console.connect()
    try:
        async with Fleet(options, processes=2) as fleet:
            results = await fleet.connect(3, prefix="job")
            async with aiohttp.ClientSession() as http:
                api = AdminApi(server, http)
                deployment = await api.create_deployment(
                    [1], [r["device_id"] for r in results], "test"
                )
            await console.wait_finished(deployment["id"], TIMEOUT)
            stats = await fleet.stats()
    finally:
        await console.close()

    targets = peer.deployments[deployment["id"]]["targets"].values()
    assert {t["status"] for t in targets} == {"success"}
    assert stats["counters"]["bytes_downloaded"] == 3 * package_file.stat().st_size
    assert stats["counters"]["job_errors"] == 0


async def test_fleet_agent_resumes_a_broken_download_with_range(peer, package_file):
    ranges_seen: list[str | None] = []
    broken_once = asyncio.Event()

    @web.middleware
    async def break_first_transfer(request: web.Request, handler):
        if not request.path.startswith("/packages/"):
            return await handler(request)
        ranges_seen.append(request.headers.get("Range"))
        if broken_once.is_set():
            return await handler(request)
        broken_once.set()
        size = package_file.stat().st_size
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        await response.write(package_file.read_bytes()[: size // 2])
        request.transport.close()  # the link drops half way
        return response

    flaky = BarePeer(TOKEN, ADMIN, package_file)
    flaky.app.middlewares.append(break_first_transfer)
    runner, url = await _serve(flaky)
    flaky.url = url
    server = _as_server(flaky)
    console = ConsoleListener(server)
    await console.connect()
    try:
        options = FleetOptions(server=url, token=TOKEN, install_seconds=0)
        async with Fleet(options, processes=1) as fleet:
            [result] = await fleet.connect(1)
            async with aiohttp.ClientSession() as http:
                deployment = await AdminApi(server, http).create_deployment(
                    [1], [result["device_id"]], "flaky"
                )
            await console.wait_finished(deployment["id"], TIMEOUT)
            stats = await fleet.stats()
    finally:
        await console.close()
        await runner.cleanup()

    assert ranges_seen[0] is None
    assert ranges_seen[1] is not None and ranges_seen[1].startswith("bytes=")
    assert int(ranges_seen[1].removeprefix("bytes=").rstrip("-")) > 0
    assert stats["counters"]["download_resumes"] == 1
    [target] = flaky.deployments[deployment["id"]]["targets"].values()
    assert target["status"] == "success"
