"""The peers' forced collection before memory readings, the fleet's command line with
either client, the run's heading naming the client, and the ingestion window.

The Node peer runs as the benchmarks run it (`node --expose-gc server.js`, a real
subprocess); the bare python-socketio peer runs in the test's loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from bench import procs, report, suite
from bench.fleet import node_client_missing, pick_client
from bench.peers.bare_python import BarePeer
from tests.bench.bench_helpers import ADMIN, TOKEN, as_server, serve

REPO = Path(__file__).resolve().parents[2]
CLI_TIMEOUT = 120


@pytest.fixture
def package_file(tmp_path: Path) -> Path:
    data = os.urandom(1 << 16)
    path = tmp_path / hashlib.sha256(data).hexdigest()
    path.write_bytes(data)
    return path


@pytest.fixture
async def node_peer(tmp_path: Path, package_file: Path, node_modules: Path | None):
    workdir = tmp_path / "node-peer"
    workdir.mkdir()
    server = await procs.start_node(
        workdir, TOKEN, ADMIN, package_file, node_modules=node_modules
    )
    yield server
    await server.stop()


@pytest.fixture
async def bare_peer(package_file: Path):
    peer = BarePeer(TOKEN, ADMIN, package_file)
    runner, url = await serve(peer)
    peer.url = url
    yield peer
    await runner.cleanup()


async def test_node_peer_collects_its_garbage_on_request(node_peer):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            node_peer.url + "/bench/gc",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response:
            body = await response.json()
        rss = await node_peer.collected_rss_bytes(http)

    assert response.status == 200
    assert body["ok"] is True and body["heap_used"] > 0
    assert rss > 0


async def test_node_peer_refuses_a_collection_without_the_admin_token(node_peer):
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            node_peer.url + "/bench/gc",
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as response,
    ):
        await response.read()

    assert response.status == 401


async def test_bare_peer_collects_its_garbage_on_request(bare_peer):
    async with aiohttp.ClientSession() as http:
        async with http.post(
            bare_peer.url + "/bench/gc",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as response:
            body = await response.json()
        async with http.post(bare_peer.url + "/bench/gc") as anonymous:
            await anonymous.read()

    assert response.status == 200
    assert body["ok"] is True and body["collected"] >= 0
    assert anonymous.status == 401


async def test_server_without_a_gc_route_reads_plain_rss(bare_peer):
    server = as_server(bare_peer)  # no gc_path: our server's case
    server.process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import sys; sys.stdin.read()",
        stdin=asyncio.subprocess.PIPE,
    )
    try:
        async with aiohttp.ClientSession() as http:
            rss = await server.collected_rss_bytes(http)
    finally:
        server.process.stdin.close()
        await server.process.wait()

    assert rss > 0


@pytest.mark.parametrize("client", ["python", "node"])
async def test_fleet_command_line_registers_agents_with_either_client(
    bare_peer, client, request
):
    env = dict(os.environ)
    if client == "node":
        modules = request.getfixturevalue("node_modules")
        if modules is not None:
            env["NODE_PATH"] = str(modules)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fleet",
        "--server",
        bare_peer.url,
        "--token",
        TOKEN,
        "--agents",
        "3",
        "--processes",
        "1",
        "--duration",
        "0",
        "--client",
        client,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)

    assert proc.returncode == 0, err.decode()[-2000:]
    assert "3/3 agents registered" in out.decode()
    assert f"1 {client} processes" in out.decode()
    assert len(bare_peer.devices) == 3


def test_auto_client_is_node_exactly_when_its_worker_can_run():
    expected = "python" if node_client_missing() else "node"

    assert pick_client("auto") == expected
    assert pick_client("python") == "python"
    with pytest.raises(ValueError):
        pick_client("ruby")


def test_table_heading_names_the_fleet_client():
    result = {
        "mode": "full",
        "settings": {"agents": 1000, "processes": 4},
        "fleet": {"client": "node", "node": "v20.1.0", "socket_io_client": "4.8.4"},
    }

    line = report.heading(result)

    assert "1000 agents" in line
    assert "node v20.1.0 socket.io-client 4.8.4" in line


def test_ingestion_window_without_samples_is_unmeasured_not_steady():
    rate = suite.window_rate([], 0.0, 10.0)

    assert rate["measured"] is False


def test_ingestion_window_rate_from_first_and_last_sample():
    counters = [
        (1.0, {"reports_sent": 0, "reports_acked": 0}),
        (3.0, {"reports_sent": 1000, "reports_acked": 900}),
    ]

    rate = suite.window_rate(counters, 0.0, 10.0)

    assert rate == {
        "sent_per_s": 500.0,
        "events_per_s": 450.0,
        "backlog_growth": 100.0,
        "measured": True,
    }


def test_ingestion_backlog_growth_is_the_trend_not_the_last_swing():
    # A server keeping up: the backlog swings between 0 and 400 and ends on a
    # swing; the difference of the end samples would read as 400 more behind.
    backlogs = [0, 400] * 7
    counters = [
        (float(i), {"reports_sent": 1000 * i + b, "reports_acked": 1000 * i})
        for i, b in enumerate(backlogs)
    ]

    rate = suite.window_rate(counters, 0.0, 10.0)

    assert abs(rate["backlog_growth"]) < 100


def test_ingestion_backlog_growth_of_a_server_falling_behind():
    counters = [
        (float(i), {"reports_sent": 1000 * i, "reports_acked": 900 * i})
        for i in range(8)
    ]

    rate = suite.window_rate(counters, 0.0, 10.0)

    assert rate["backlog_growth"] == pytest.approx(700.0)
