"""The fleet simulator speaks the contract: registers, downloads, resumes, reports.

Every test runs twice, once with the Python worker (`python -m bench.fleet
--worker`) and once with its Node.js twin (`bench/peers/node/fleet_worker.js`): the
two must behave and answer alike. The server here is
`bench.peers.bare_python.BarePeer` -- a real python-socketio + aiohttp server with
the contract's handler shape, run on loopback in the test's loop. It stands in for
the product server so the simulator is tested on its own; the product server is
exercised by `test_quick.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bench.fleet import COUNTERS, Fleet, FleetError, FleetOptions
from bench.peers.bare_python import BarePeer
from bench.suite import AdminApi, ConsoleListener
from tests.bench.bench_helpers import ADMIN, TOKEN, as_server, serve

TIMEOUT = 30


@pytest.fixture(params=["python", "node"])
def client(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Fleet keyword arguments for one worker kind (node: skipped if unavailable)."""
    if request.param == "python":
        return {"client": "python"}
    return {"client": "node", "node_modules": request.getfixturevalue("node_modules")}


@pytest.fixture
def package_file(tmp_path: Path) -> Path:
    data = os.urandom(3 * (1 << 20) + 123)
    path = tmp_path / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return path


@pytest.fixture
async def peer(package_file: Path):
    peer = BarePeer(TOKEN, ADMIN, package_file)
    runner, url = await serve(peer)
    peer.url = url
    yield peer
    await runner.cleanup()


async def settled_stats(
    fleet: Fleet, done: Callable[[dict[str, Any]], bool], within: float = TIMEOUT
) -> dict[str, Any]:
    """The fleet's stats once `done(stats)` holds.

    A worker speaks only when asked, so this asks again until the condition holds
    (each ask is a round trip through the worker's loop), bounded by `within`.
    """
    async with asyncio.timeout(within):
        while not done(stats := await fleet.stats()):
            pass
    return stats


async def run_deployment(
    peer: BarePeer, fleet: Fleet, device_ids: list[int], name: str
) -> int:
    """Deploy the peer's package to `device_ids`; return once it has finished."""
    server = as_server(peer)
    console = ConsoleListener(server)
    await console.connect()
    try:
        async with aiohttp.ClientSession() as http:
            deployment = await AdminApi(server, http).create_deployment(
                [1], device_ids, name
            )
        await console.wait_finished(deployment["id"], TIMEOUT)
    finally:
        await console.close()
    return deployment["id"]


async def test_fleet_agents_register_each_as_its_own_device(peer, client):
    options = FleetOptions(server=peer.url, token=TOKEN)
    async with Fleet(options, processes=2, **client) as fleet:
        results = await fleet.connect(6, prefix="reg")
        stats = await fleet.stats()
        cpu = fleet.cpu_seconds()

    assert all(r["ok"] for r in results), results
    assert len({r["device_id"] for r in results}) == 6
    assert sorted(peer.devices) == sorted(r["agent_id"] for r in results)
    assert stats["connected"] == 6
    assert cpu > 0
    assert all(r["t_start"] <= r["t_connected"] <= r["t_registered"] for r in results)


async def test_fleet_agent_with_wrong_token_reports_the_refusal(peer, client):
    options = FleetOptions(server=peer.url, token="wrong")
    async with Fleet(options, processes=1, **client) as fleet:
        [result] = await fleet.connect(1)

    assert result["ok"] is False
    assert "ConnectionError" in result["error"]


async def test_fleet_worker_times_are_on_the_controllers_monotonic_clock(peer, client):
    options = FleetOptions(server=peer.url, token=TOKEN)
    async with Fleet(options, processes=1, **client) as fleet:
        before = time.monotonic()
        [result] = await fleet.connect(1)
        stats = await fleet.stats(jobs=False)
        after = time.monotonic()

    assert before <= result["t_start"] <= result["t_registered"] <= stats["t"] <= after


async def test_fleet_counters_add_up_for_jobs_without_download(peer, client):
    options = FleetOptions(
        server=peer.url,
        token=TOKEN,
        install_seconds=0.3,
        report_hz=10,
        skip_download=True,
    )
    async with Fleet(options, processes=2, **client) as fleet:
        results = await fleet.connect(4, prefix="count")
        deployment_id = await run_deployment(
            peer, fleet, [r["device_id"] for r in results], "count"
        )
        stats = await settled_stats(
            fleet,
            lambda s: (
                s["counters"]["reports_acked"] >= 4 * 5
                and all("t_completed" in j for j in s["jobs"])
            ),
        )

    # Per job: in_progress, 3 installing ticks (0.3 s x 10 Hz) -- then completed,
    # which is a call: its acknowledgement is counted, it is not a sent report.
    assert stats["counters"] == {
        **dict.fromkeys(COUNTERS, 0),
        "jobs": 4,
        "reports_sent": 4 * 4,
        "reports_acked": 4 * 5,
    }
    assert len(stats["jobs"]) == 4
    for job in stats["jobs"]:
        assert job["deployment_id"] == deployment_id
        assert job["t_received"] <= job["t_downloaded"] <= job["t_completed"]
        assert job["completed_ack"] == {"ok": True}
        assert job["urls"] == [f"/packages/{peer.software[0]['sha256']}"]
    targets = peer.deployments[deployment_id]["targets"].values()
    assert {(t["status"], t["progress_percent"]) for t in targets} == {("success", 100)}


async def test_fleet_downloads_checks_and_reports_each_job_completed(
    peer, package_file, client
):
    options = FleetOptions(
        server=peer.url, token=TOKEN, install_seconds=0.2, report_hz=10
    )
    async with Fleet(options, processes=2, **client) as fleet:
        results = await fleet.connect(3, prefix="job")
        deployment_id = await run_deployment(
            peer, fleet, [r["device_id"] for r in results], "test"
        )
        stats = await fleet.stats()

    targets = peer.deployments[deployment_id]["targets"].values()
    assert {t["status"] for t in targets} == {"success"}
    assert stats["counters"]["bytes_downloaded"] == 3 * package_file.stat().st_size
    assert stats["counters"]["job_errors"] == 0


async def test_fleet_agent_resumes_a_broken_download_with_range(package_file, client):
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
    runner, url = await serve(flaky)
    flaky.url = url
    try:
        options = FleetOptions(server=url, token=TOKEN, install_seconds=0)
        async with Fleet(options, processes=1, **client) as fleet:
            [result] = await fleet.connect(1)
            deployment_id = await run_deployment(
                flaky, fleet, [result["device_id"]], "flaky"
            )
            stats = await fleet.stats()
    finally:
        await runner.cleanup()

    assert ranges_seen[0] is None
    assert ranges_seen[1] is not None and ranges_seen[1].startswith("bytes=")
    assert int(ranges_seen[1].removeprefix("bytes=").rstrip("-")) > 0
    assert stats["counters"]["download_resumes"] == 1
    [target] = flaky.deployments[deployment_id]["targets"].values()
    assert target["status"] == "success"


async def test_node_worker_answers_with_the_python_workers_fields(peer, node_modules):
    """Same keys in connect results, stats, counters and job records."""
    options = FleetOptions(server=peer.url, token=TOKEN, install_seconds=0.1)
    shapes = {}
    for kind, extra in (("python", {}), ("node", {"node_modules": node_modules})):
        async with Fleet(options, processes=1, client=kind, **extra) as fleet:
            [result] = await fleet.connect(1, prefix=kind)
            await run_deployment(peer, fleet, [result["device_id"]], kind)
            stats = await settled_stats(
                fleet, lambda s: all("t_completed" in j for j in s["jobs"])
            )
        shapes[kind] = (
            sorted(result),
            sorted(stats),
            sorted(stats["counters"]),
            [sorted(job) for job in stats["jobs"]],
        )

    assert shapes["node"] == shapes["python"]


async def test_node_worker_refuses_to_start_without_socket_io_client(tmp_path):
    fleet = Fleet(
        FleetOptions(server="http://127.0.0.1:9", token=TOKEN),
        client="node",
        node_modules=tmp_path,
    )

    with pytest.raises(FleetError, match=r"socket\.io-client|node not installed"):
        await fleet.start()
