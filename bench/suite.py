"""The six benchmarks of issue 7, each run against our server and its peers.

`run_socket_suite` drives one Socket.IO server (ours, Node, bare python-socketio)
through registration storm + memory, fan-out and status ingestion with one fleet;
`run_downloads` measures package downloads from one HTTP server (ours, nginx);
`sqlite_ceiling` times raw `executemany` as the ceiling for ingestion.
Every figure is a plain number in a dict; `bench.report` turns them into rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from bench.fleet import Client, Fleet, FleetOptions
from bench.procs import ServerProcess
from protocol import DEPLOYMENT_UPDATE

logger = logging.getLogger(__name__)

TERMINAL_DEPLOYMENT = {"completed", "failed", "cancelled"}


@dataclass
class Settings:
    """Sizes of one run; `quick()` is the CI smoke run, `full()` the README run."""

    agents: int
    processes: int
    package_mb: int
    ingest_hz: list[float]
    ingest_seconds: float
    download_concurrency: list[int] = field(default_factory=lambda: [1, 8, 32])
    download_processes: int = 2
    settle_seconds: float = 2.0
    deployment_timeout: float = 300.0
    console_devices: int = 200
    client: Client = "python"
    """The simulated agents' Socket.IO client: "python" or "node" (bench.fleet)."""

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            agents=20,
            processes=2,
            package_mb=4,
            ingest_hz=[2.0],
            ingest_seconds=1.5,
            settle_seconds=0.5,
            deployment_timeout=60.0,
            console_devices=20,
        )

    @classmethod
    def full(cls, agents: int = 1000) -> Settings:
        return cls(
            agents=agents,
            processes=4,
            package_mb=128,
            ingest_hz=ingest_ladder(agents),
            ingest_seconds=10.0,
            deployment_timeout=900.0,
            console_devices=agents,
        )


INGEST_RATES = (1_000, 2_000, 3_000, 4_000, 5_000, 7_500, 10_000, 15_000, 20_000)
"""Offered reports per second of the full run's ingestion steps."""

MAX_REPORT_HZ = 5.0
"""The fastest an agent reports (issue 7: agents report at 1-5 Hz)."""


def ingest_ladder(agents: int) -> list[float]:
    """Report rates per agent that offer `INGEST_RATES` from `agents` agents.

    Steps of fixed total rates, not of fixed per-agent rates: at 4,000 agents
    1, 2 and 5 Hz would offer 4,000, 8,000 and 20,000 reports/s, too coarse to
    tell where a server stops keeping up. Rates an agent could not offer (above
    `MAX_REPORT_HZ`) are left out; the top step is always `MAX_REPORT_HZ`.
    """
    ladder = [rate / agents for rate in INGEST_RATES if rate / agents < MAX_REPORT_HZ]
    return [*ladder, MAX_REPORT_HZ]


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


class ConsoleListener:
    """A console-role Socket.IO client that notes when each deployment ends.

    TODO(bench): it hears every target update too; a peer that sends them one by
    one at 15,000 reports/s (Node's) can outrun it until the peer drops it.
    """

    def __init__(self, server: ServerProcess) -> None:
        self._server = server
        self.sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self._done: dict[int, asyncio.Event] = {}
        self.finished_at: dict[int, float] = {}
        self.lost = asyncio.Event()
        """Set when the connection dropped: no deployment's end can arrive now."""
        self.sio.on(DEPLOYMENT_UPDATE, self.on_deployment_update)
        self.sio.on("disconnect", lambda *_reason: self.lost.set())

    async def connect(self) -> None:
        await self.sio.connect(
            self._server.url,
            auth={"role": "console", "token": self._server.admin_token},
            transports=["websocket"],
            wait_timeout=30,
        )

    async def on_deployment_update(self, data: Any) -> None:
        if not isinstance(data, dict) or data.get("status") not in TERMINAL_DEPLOYMENT:
            return
        deployment_id = data.get("deployment_id")
        self.finished_at.setdefault(deployment_id, time.monotonic())
        self._event(deployment_id).set()

    def _event(self, deployment_id: int) -> asyncio.Event:
        return self._done.setdefault(deployment_id, asyncio.Event())

    async def wait_finished(self, deployment_id: int, within: float) -> float:
        """When the deployment ended; TimeoutError after `within` seconds, and
        ConnectionError at once if the listener's connection drops (a server too
        busy to answer its pings) instead of waiting out `within` for nothing."""
        done = asyncio.ensure_future(self._event(deployment_id).wait())
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait(
                {done, lost}, timeout=within, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            done.cancel()
            lost.cancel()
        if deployment_id in self.finished_at:
            return self.finished_at[deployment_id]
        if self.lost.is_set():
            raise ConnectionError(
                f"the console listener lost its connection to {self._server.name}"
            )
        raise TimeoutError(f"deployment {deployment_id} not finished in {within} s")

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # already disconnected is fine here
            await self.sio.disconnect()


class AdminApi:
    """The HTTP API calls the benchmarks need, with the admin token."""

    def __init__(self, server: ServerProcess, http: aiohttp.ClientSession) -> None:
        self._server = server
        self._http = http
        self._headers = {"Authorization": f"Bearer {server.admin_token}"}

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self._http.request(
            method, self._server.url + path, headers=self._headers, **kwargs
        ) as response:
            body = await response.text()
            if response.status >= 400:
                raise RuntimeError(
                    f"{self._server.name} {method} {path}: {response.status} "
                    f"{body[:300]}"
                )
            return json.loads(body)

    async def software_id(self, package: Path) -> int:
        """Upload `package` (ours) or take the peer's preloaded one."""
        existing = await self._json("GET", "/api/software")
        if existing:
            return existing[0]["id"]
        form = aiohttp.FormData()
        form.add_field("name", "bench-package")
        form.add_field("version", "1.0")
        form.add_field("installer_type", "script")
        form.add_field("install_args", "")
        form.add_field("timeout_s", "600")
        with package.open("rb") as handle:
            form.add_field(
                "file",
                handle,
                filename="bench-package.cmd",
                content_type="application/octet-stream",
            )
            created = await self._json("POST", "/api/software", data=form)
        return created["id"]

    async def create_deployment(
        self, software_ids: list[int], device_ids: list[int], name: str
    ) -> dict[str, Any]:
        return await self._json(
            "POST",
            "/api/deployments",
            json={
                "deployment_name": name,
                "software_ids": software_ids,
                "device_ids": device_ids,
            },
        )

    async def get_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._json("GET", f"/api/deployments/{deployment_id}")


async def run_socket_suite(
    server: ServerProcess, package: Path, settings: Settings
) -> dict[str, Any]:
    """Registration storm, memory, fan-out and ingestion against one server."""
    figures: dict[str, Any] = {}
    options = FleetOptions(
        server=server.url,
        token=server.enrollment_token,
        install_seconds=0,
        report_hz=0,
        skip_download=True,
    )
    console = ConsoleListener(server)
    await console.connect()
    try:
        async with (
            aiohttp.ClientSession() as http,
            Fleet(
                options,
                processes=settings.processes,
                client=settings.client,
            ) as fleet,
        ):
            api = AdminApi(server, http)
            software_id = await api.software_id(package)
            await asyncio.sleep(settings.settle_seconds)  # let start-up garbage settle
            figures["registration"], figures["memory"], device_ids = await _storm(
                server, fleet, settings, http
            )
            figures["fanout"], package_url = await _fanout(
                api, console, fleet, software_id, device_ids, settings
            )
            figures["ingestion"] = await _ingestion(
                api, console, fleet, software_id, device_ids, settings
            )
            figures["package_url"] = package_url
    finally:
        await console.close()
    return figures


async def _storm(
    server: ServerProcess,
    fleet: Fleet,
    settings: Settings,
    http: aiohttp.ClientSession,
) -> tuple[dict[str, Any], dict[str, Any], list[int]]:
    """Every agent at once: registration times, server CPU, and memory per agent.

    Memory is the resident size after a forced full collection where the server
    offers one (the Node and bare python-socketio peers): V8 collects and compacts
    when it likes, which made Node's difference negative. Our server has no such
    route (server/ is not the benchmark's to change); CPython frees most garbage at
    once by reference counting, and the bare peer's readings before and after its
    collection (`rss_after_uncollected_mb`, `rss_after_mb`) show how little the
    cyclic collector changes.
    """
    rss_before = await server.collected_rss_bytes(http)
    cpu_before = server.cpu_seconds()
    fleet_cpu_before = fleet.cpu_seconds()
    start = time.monotonic()
    results = await fleet.connect(settings.agents)
    elapsed = time.monotonic() - start
    cpu = server.cpu_seconds() - cpu_before
    fleet_cpu = fleet.cpu_seconds() - fleet_cpu_before
    registered = [r for r in results if r["ok"]]
    errors = [r.get("error") for r in results if not r["ok"]]
    for error in errors[:3]:
        logger.warning("%s: registration failed: %s", server.name, error)
    latencies = [r["t_registered"] - start for r in registered]
    await asyncio.sleep(settings.settle_seconds)
    rss_uncollected = server.rss_bytes()
    rss_after = await server.collected_rss_bytes(http)
    count = max(1, len(registered))
    registration = {
        "agents": len(results),
        "all_registered_s": max(latencies) if latencies else None,
        "p50_s": percentile(latencies, 50),
        "elapsed_s": elapsed,
        "errors": len(errors),
        "cpu_s_per_1000": cpu / count * 1000,
        "fleet_cpu_s_per_1000": fleet_cpu / count * 1000,
    }
    memory = {
        "agents": len(registered),
        "rss_before_mb": rss_before / 2**20,
        "rss_after_mb": rss_after / 2**20,
        "rss_after_uncollected_mb": rss_uncollected / 2**20,
        "gc_forced": bool(server.extra.get("gc_path")),
        "kb_per_agent": (rss_after - rss_before) / count / 1024,
    }
    device_ids = sorted({r["device_id"] for r in registered})
    return registration, memory, device_ids


async def _fanout(
    api: AdminApi,
    console: ConsoleListener,
    fleet: Fleet,
    software_id: int,
    device_ids: list[int],
    settings: Settings,
) -> tuple[dict[str, Any], str | None]:
    """One deployment to every agent; no download, a no-op installer.

    TODO(bench): an agent that loses its connection during a run leaves its target
    open, and this wait (like each ingestion step's) then lasts deployment_timeout
    (900 s): once at 4,000 agents a python-socketio client aborted ("packet queue is
    empty, aborting") and the run hung. Stop waiting when `fleet.stats()` counts
    fewer connected agents than targets.
    """
    await fleet.configure(install_seconds=0, report_hz=0, skip_download=True)
    await fleet.stats(reset=True)
    start = time.monotonic()
    deployment = await api.create_deployment([software_id], device_ids, "bench fan-out")
    api_s = time.monotonic() - start
    finished = await console.wait_finished(
        deployment["id"], settings.deployment_timeout
    )
    stats = await fleet.stats(reset=True)
    jobs = [j for j in stats["jobs"] if j["deployment_id"] == deployment["id"]]
    received = [j["t_received"] - start for j in jobs]
    final = await api.get_deployment(deployment["id"])
    succeeded = sum(1 for t in final["targets"] if t["status"] == "success")
    figures = {
        "targets": len(device_ids),
        "api_call_s": api_s,
        "job_p50_s": percentile(received, 50),
        "job_p99_s": percentile(received, 99),
        "job_last_s": max(received) if received else None,
        "all_success_s": finished - start,
        "jobs_missing": len(device_ids) - len(jobs),
        "targets_not_success": len(device_ids) - succeeded,
    }
    url = jobs[0]["urls"][0] if jobs else None
    return figures, url


async def _ingestion(
    api: AdminApi,
    console: ConsoleListener,
    fleet: Fleet,
    software_id: int,
    device_ids: list[int],
    settings: Settings,
) -> dict[str, Any]:
    """Progress reports at rising rates until the server falls behind.

    An event counts when the server acknowledged it. In each step the agents
    report for `ingest_seconds`; the rate is measured over 20-90 % of that
    sending time, where the backlog (sent minus acknowledged) must not grow for
    the step to count as sustained. The first step that falls behind ends the
    search: its acknowledged rate is the server's ceiling.
    """
    steps: list[dict[str, Any]] = []
    for hz in settings.ingest_hz:
        step = await _ingestion_step(
            api, console, fleet, software_id, device_ids, settings, hz
        )
        steps.append(step)
        if not step["steady"]:
            break
    best = max(steps, key=lambda s: (s["steady"], s["events_per_s"]))
    return {
        "events_per_s": best["events_per_s"],
        "offered_per_s": best["offered_per_s"],
        "steady": best["steady"],
        "drain_s": best["drain_s"],
        "refused": sum(s["refused"] for s in steps),
        "steps": steps,
    }


async def _ingestion_step(
    api: AdminApi,
    console: ConsoleListener,
    fleet: Fleet,
    software_id: int,
    device_ids: list[int],
    settings: Settings,
    hz: float,
) -> dict[str, Any]:
    sending = settings.ingest_seconds
    await fleet.configure(install_seconds=sending, report_hz=hz, skip_download=True)
    await fleet.stats(jobs=False, reset=True)
    fleet_cpu_before = fleet.cpu_seconds()
    start = time.monotonic()
    # Sampling starts with the request, not after its answer: a server busy with
    # the reports of the agents it already told may answer after the whole window.
    post = asyncio.ensure_future(
        api.create_deployment([software_id], device_ids, f"bench ingestion {hz} Hz")
    )
    answered: list[float] = []
    post.add_done_callback(lambda _: answered.append(time.monotonic()))
    wait: asyncio.Future[float] | None = None
    samples: list[tuple[float, dict[str, int]]] = []
    finished: float | None = None
    try:
        while time.monotonic() < start + sending:
            stats = await fleet.stats(jobs=False)
            samples.append((stats["t"], stats["counters"]))
            if wait is None and post.done():
                wait = asyncio.ensure_future(
                    console.wait_finished(
                        post.result()["id"], settings.deployment_timeout
                    )
                )
            if wait is not None and wait.done():
                break  # finished (or gave up) early
            await asyncio.wait({wait or post}, timeout=sending / 20)
        deployment = await post
        if wait is None:
            wait = asyncio.ensure_future(
                console.wait_finished(deployment["id"], settings.deployment_timeout)
            )
        with contextlib.suppress(TimeoutError):
            finished = await wait
    finally:
        post.cancel()
        if wait is not None:
            wait.cancel()
    final = await fleet.stats(jobs=False)
    fleet_cpu = fleet.cpu_seconds() - fleet_cpu_before
    sent = final["counters"]["reports_sent"]
    rate = window_rate(samples, start + 0.2 * sending, start + 0.9 * sending)
    status = await api.get_deployment(deployment["id"])
    step = {
        "hz": hz,
        "offered_per_s": len(device_ids) * hz,
        **rate,
        "steady": rate["measured"]
        and rate["backlog_growth"] <= max(10.0, 0.05 * len(device_ids) * hz),
        "api_call_s": answered[0] - start,
        "refused": final["counters"]["reports_refused"],
        "fleet_cpu_s": fleet_cpu,
        "fleet_cpu_ms_per_report": fleet_cpu / sent * 1000 if sent else None,
        "drain_s": None if finished is None else finished - (start + sending),
        "drained": finished is not None,
        "targets_not_success": sum(
            1 for t in status["targets"] if t["status"] != "success"
        ),
    }
    if finished is None:
        logger.warning(
            "ingestion at %s Hz did not drain within %s s",
            hz,
            settings.deployment_timeout,
        )
    return step


def window_rate(
    samples: list[tuple[float, dict[str, int]]], t_from: float, t_to: float
) -> dict[str, float]:
    """Sent and acknowledged events per second between two times, backlog change.

    The rates come from the window's first and last samples. The backlog (sent
    minus acknowledged) swings by up to a batch of reports from one sample to the
    next even at a rate a server keeps up with, so its change is the least-squares
    trend over every sample in the window (its slope times the window's span), not
    the difference of two samples that may each fall on a swing.
    `measured` is False when fewer than two samples fell anywhere in the step:
    then nothing is known, which must not read as "kept up".
    """
    window = [s for s in samples if t_from <= s[0] <= t_to] or samples
    if len(window) < 2:
        return {
            "sent_per_s": 0.0,
            "events_per_s": 0.0,
            "backlog_growth": 0.0,
            "measured": False,
        }
    (t_a, c_a), (t_b, c_b) = window[0], window[-1]
    span = max(t_b - t_a, 1e-6)
    times = [t for t, _ in window]
    backlogs = [c["reports_sent"] - c["reports_acked"] for _, c in window]
    slope = statistics.linear_regression(times, backlogs).slope
    return {
        "sent_per_s": (c_b["reports_sent"] - c_a["reports_sent"]) / span,
        "events_per_s": (c_b["reports_acked"] - c_a["reports_acked"]) / span,
        "backlog_growth": slope * span,
        "measured": True,
    }


async def run_downloads(
    server: ServerProcess,
    url_path: str,
    sha256: str,
    size: int,
    settings: Settings,
) -> dict[str, Any]:
    """MB/s and server CPU per GB at each concurrency, then a Range resume check."""
    url = server.url + url_path
    figures: dict[str, Any] = {"settled_s": await server.wait_quiet()}
    for concurrency in settings.download_concurrency:
        processes = min(settings.download_processes, concurrency)
        shares = [concurrency // processes] * processes
        for i in range(concurrency % processes):
            shares[i] += 1
        cpu_before = server.cpu_seconds()
        results = await asyncio.gather(
            *(_download_process(url, server.enrollment_token, n) for n in shares)
        )
        cpu = server.cpu_seconds() - cpu_before
        total = sum(r["bytes"] for r in results)
        span = max(r["t_end"] for r in results) - min(r["t_start"] for r in results)
        errors = sum(r["errors"] for r in results)
        figures[f"c{concurrency}"] = {
            "mb_per_s": total / 2**20 / span if span > 0 else None,
            "cpu_s_per_gb": cpu / (total / 2**30) if total else None,
            "errors": errors + sum(1 for r in results if r["bytes"] != size * r["n"]),
        }
    figures["resume_ok"] = await _resume_check(
        url, server.enrollment_token, sha256, size
    )
    return figures


async def _download_process(url: str, token: str, count: int) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.download",
        url,
        token,
        str(count),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bench.download exited with {proc.returncode}")
    return {**json.loads(out), "n": count}


async def _resume_check(url: str, token: str, sha256: str, size: int) -> bool:
    """First half, then `Range: bytes=<half>-`; the joined bytes must hash right."""
    half = size // 2
    digest = hashlib.sha256()
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        async with http.get(
            url, headers={**headers, "Range": f"bytes=0-{half - 1}"}
        ) as first:
            head = await first.read()
            if first.status != 206 or len(head) != half:
                return False
        digest.update(head)
        async with http.get(
            url, headers={**headers, "Range": f"bytes={half}-"}
        ) as rest:
            tail = await rest.read()
            if rest.status != 206:
                return False
        digest.update(tail)
    return digest.hexdigest() == sha256


def sqlite_ceiling(path: Path, rows: int, events: int) -> dict[str, Any]:
    """Raw executemany UPDATEs of target progress into SQLite (WAL, synchronous=NORMAL).

    Blocking; run it in a thread. 1,000 events per transaction, the batch size a
    coalescing writer would use.
    """
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(
            "CREATE TABLE deployment_targets (id INTEGER PRIMARY KEY,"
            " deployment_id INTEGER, device_id INTEGER, status TEXT,"
            " progress_percent REAL, message TEXT)"
        )
        connection.executemany(
            "INSERT INTO deployment_targets VALUES (?, 1, ?, 'pending', 0, NULL)",
            ((i, i) for i in range(1, rows + 1)),
        )
        connection.commit()
        batch = 1000
        start = time.perf_counter()
        done = 0
        while done < events:
            size = min(batch, events - done)
            connection.executemany(
                "UPDATE deployment_targets SET status='in_progress',"
                " progress_percent=?, message=? WHERE id=?",
                (
                    ((done + i) % 100, "installing", (done + i) % rows + 1)
                    for i in range(size)
                ),
            )
            connection.commit()
            done += size
        elapsed = time.perf_counter() - start
    finally:
        connection.close()
    return {"events_per_s": events / elapsed, "events": events, "batch": batch}


def mean_or_none(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None
