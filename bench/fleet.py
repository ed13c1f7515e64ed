"""Fleet simulator: many simulated agents, each a real Socket.IO client of the contract.

Command line (bounded: stops by itself after ``--duration`` seconds or on Ctrl-C)::

    python -m bench.fleet --server http://127.0.0.1:8765 --token T --agents 2000 \
        --processes 4 --install-seconds 5 --report-hz 2 [--skip-download] \
        [--prefix ID] [--client python|node|auto]

As a library (the benchmarks)::

    options = FleetOptions(server=url, token=t)
    async with Fleet(options, processes=2, client="node") as fleet:
        results = await fleet.connect(500)       # one dict per agent
        await fleet.configure(install_seconds=0, skip_download=True)
        stats = await fleet.stats()              # jobs, counters, errors

Each worker process runs one event loop with its share of the agents and takes
JSON-line commands on stdin, answering one JSON line each on stdout. A worker is
either this module (`--worker`: python-socketio clients) or its Node.js twin
`bench/peers/node/fleet_worker.js` (socket.io-client; `client="node"`), which takes
the same commands and gives the same answers. Both offer 5,000 reports/s from 1,000
agents on two cores, but every CPU second a client spends is taken from the server
under test, and Node's spend about half as much per report (`fleet_cpu_ms_per_report`
in the ingestion figures); registering costs both about the same.
Times are ``time.monotonic()`` readings; on Linux that is CLOCK_MONOTONIC, one clock
for every process on the machine, so the controller can compare them with its own
(checked when the workers start).

The agents speak only the contract in DESIGN.md (via ``protocol``): they register,
take ``install_software`` jobs, download each package for real (Bearer token, resume
with Range after a broken transfer, sha256 checked) unless told to skip it, pretend to
install for a set time while reporting progress at a set rate, then report completed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import platform
import random
import resource
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urljoin

import aiohttp
import socketio

from protocol import (
    AGENT_REGISTER,
    CANCEL_DEPLOYMENT,
    INSTALL_SOFTWARE,
    SOFTWARE_DOWNLOAD_PROGRESS,
    SOFTWARE_INSTALLATION_STATUS,
    AgentStatus,
    InstallSoftware,
    PayloadError,
    parse_payload,
)

logger = logging.getLogger(__name__)

AGENT_VERSION = "bench-fleet/1"
NODE_DIR = Path(__file__).resolve().parent / "peers" / "node"
NODE_WORKER = NODE_DIR / "fleet_worker.js"
CLIENTS = ("python", "node")
Client = Literal["python", "node"]
DOWNLOAD_CHUNK = 1 << 20
DOWNLOAD_ATTEMPTS = 3
HASH_INLINE_LIMIT = 64 << 10
"""Chunks larger than this are hashed in a thread so the agents' loop stays free."""


@dataclass
class FleetOptions:
    """How the simulated agents behave; changeable between benchmarks (`configure`)."""

    server: str
    token: str
    install_seconds: float = 1.0
    report_hz: float = 2.0
    skip_download: bool = False
    transports: tuple[str, ...] = ("websocket",)
    """websocket only by default: what a long-lived agent ends up on anyway."""
    connect_timeout: float = 60.0
    connect_concurrency: int = 250
    """Handshakes in flight per worker process; the rest queue (all start at once)."""
    report_acks: bool = True
    """Ask for an acknowledgement on every progress report (to count persisted ones)."""


def raise_fd_limit() -> int:
    """Lift the soft open-files limit to the hard one; a fleet needs a socket each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class SimAgent:
    """One simulated device: a Socket.IO client plus the jobs it is running."""

    def __init__(
        self,
        agent_id: str,
        options: FleetOptions,
        http: aiohttp.ClientSession,
        counters: dict[str, int],
        jobs: list[dict[str, Any]],
    ) -> None:
        self.agent_id = agent_id
        self.device_id: int | None = None
        self._options = options
        self._http = http
        self._counters = counters
        self._jobs = jobs
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.sio = socketio.AsyncClient(
            reconnection=False,
            handle_sigint=False,
            http_session=http,
            request_timeout=options.connect_timeout,
        )
        self.sio.on(INSTALL_SOFTWARE, self.on_install_software)
        self.sio.on(CANCEL_DEPLOYMENT, self.on_cancel_deployment)

    def register_payload(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "hostname": f"sim-{self.agent_id}",
            "platform": "windows",
            "os_version": "10.0.19045",
            "agent_version": AGENT_VERSION,
            "ip": "127.0.0.1",
        }

    async def connect_and_register(self) -> dict[str, Any]:
        """Connect, register and wait for the acknowledgement; never raises."""
        result: dict[str, Any] = {"agent_id": self.agent_id, "ok": False}
        result["t_start"] = time.monotonic()
        try:
            await self.sio.connect(
                self._options.server,
                auth={"role": "agent", "token": self._options.token},
                transports=list(self._options.transports),
                wait_timeout=self._options.connect_timeout,
            )
            result["t_connected"] = time.monotonic()
            ack = await self.sio.call(
                AGENT_REGISTER,
                self.register_payload(),
                timeout=self._options.connect_timeout,
            )
        except (socketio.exceptions.SocketIOError, aiohttp.ClientError, OSError) as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
            return result
        result["t_registered"] = time.monotonic()
        if not isinstance(ack, dict) or not ack.get("ok"):
            result["error"] = f"registration refused: {ack!r}"[:300]
            return result
        self.device_id = ack.get("device_id")
        result.update(ok=True, device_id=self.device_id, room=ack.get("room"))
        return result

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        with contextlib.suppress(Exception):  # already gone is fine at shutdown
            await self.sio.disconnect()

    async def on_install_software(self, data: Any) -> None:
        received = time.monotonic()
        try:
            job = parse_payload(InstallSoftware, data)
        except PayloadError as exc:
            self._counters["bad_jobs"] += 1
            logger.warning("bad install_software for %s: %s", self.agent_id, exc)
            return
        record = {
            "agent_id": self.agent_id,
            "deployment_id": job.deployment_id,
            "device_id": job.device_id,
            "t_received": received,
            "urls": [item.url for item in job.software_list],
        }
        self._jobs.append(record)
        self._counters["jobs"] += 1
        if job.deployment_id in self._tasks:
            return
        task = asyncio.create_task(self._run_job(job, record))
        self._tasks[job.deployment_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job.deployment_id, None))

    async def on_cancel_deployment(self, data: Any) -> None:
        if isinstance(data, dict):
            task = self._tasks.get(data.get("deployment_id"))  # type: ignore[arg-type]
            if task is not None:
                task.cancel()

    async def _run_job(self, job: InstallSoftware, record: dict[str, Any]) -> None:
        options = self._options
        base = {"deployment_id": job.deployment_id, "device_id": job.device_id}
        try:
            await self._report(base, AgentStatus.IN_PROGRESS, 0)
            if not options.skip_download:
                for index, item in enumerate(job.software_list):
                    await self._download(base, item, index, len(job.software_list))
            record["t_downloaded"] = time.monotonic()
            await self._pretend_install(base)
            ack = await self.sio.call(
                SOFTWARE_INSTALLATION_STATUS,
                {
                    **base,
                    "status": AgentStatus.COMPLETED.value,
                    "progress": 100,
                    "completed": len(job.software_list),
                    "failed": 0,
                    "exit_code": 0,
                    "reboot_required": False,
                    "message": "installed (simulated)",
                },
                timeout=options.connect_timeout,
            )
            self._count_ack(ack)
            record["t_completed"] = time.monotonic()
            record["completed_ack"] = ack
        except asyncio.CancelledError:
            record["cancelled"] = True
            raise
        except (
            _DownloadError,
            aiohttp.ClientError,
            socketio.exceptions.SocketIOError,
            TimeoutError,
        ) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            self._counters["job_errors"] += 1
            with contextlib.suppress(socketio.exceptions.SocketIOError):
                await self.sio.emit(
                    SOFTWARE_INSTALLATION_STATUS,
                    {
                        **base,
                        "status": AgentStatus.FAILED.value,
                        "progress": 0,
                        "message": record["error"],
                    },
                )

    async def _report(
        self,
        base: dict[str, Any],
        status: AgentStatus,
        progress: float,
        event: str = SOFTWARE_INSTALLATION_STATUS,
        **extra: Any,
    ) -> None:
        payload = {**base, **extra, "progress": round(progress, 2)}
        if event == SOFTWARE_INSTALLATION_STATUS:
            payload["status"] = status.value
        self._counters["reports_sent"] += 1
        callback = self._count_ack if self._options.report_acks else None
        await self.sio.emit(event, payload, callback=callback)

    def _count_ack(self, ack: Any = None, *_: Any) -> None:
        if isinstance(ack, dict) and ack.get("ok") is False:
            self._counters["reports_refused"] += 1
            if self._counters["reports_refused"] <= 3:
                logger.warning("report refused for %s: %s", self.agent_id, ack)
        else:
            self._counters["reports_acked"] += 1

    async def _pretend_install(self, base: dict[str, Any]) -> None:
        """Report `installing` from 50 to 99 % at report_hz for install_seconds.

        Each agent starts its ticks at a random phase within the first interval:
        agents that took their jobs in the same instant would otherwise report in
        lockstep, offering the server bursts of N reports and silences instead of
        the steady rate a benchmark step means to offer.
        """
        seconds, hz = self._options.install_seconds, self._options.report_hz
        if seconds <= 0:
            return
        ticks = max(1, int(seconds * hz)) if hz > 0 else 1
        interval = seconds / ticks
        start = time.monotonic() + random.random() * interval - interval
        for tick in range(1, ticks + 1):
            delay = start + tick * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if hz > 0:
                progress = 50 + 49 * tick / ticks
                await self._report(base, AgentStatus.INSTALLING, progress)

    async def _download(
        self, base: dict[str, Any], item: Any, index: int, count: int
    ) -> None:
        """Fetch one package, resuming with Range after a broken transfer."""
        url = urljoin(self._options.server, item.url)
        digest = hashlib.sha256()
        received = 0
        last_report = 0.0
        interval = 1 / self._options.report_hz if self._options.report_hz > 0 else 1.0
        for _attempt in range(DOWNLOAD_ATTEMPTS):
            headers = {"Authorization": f"Bearer {self._options.token}"}
            if received:
                headers["Range"] = f"bytes={received}-"
            try:
                async with self._http.get(url, headers=headers) as response:
                    if response.status not in (200, 206):
                        raise _DownloadError(f"HTTP {response.status} for {item.url}")
                    if received and response.status == 200:
                        digest, received = hashlib.sha256(), 0  # Range ignored
                    async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                        if len(chunk) > HASH_INLINE_LIMIT:
                            await asyncio.to_thread(digest.update, chunk)
                        else:
                            digest.update(chunk)
                        received += len(chunk)
                        now = time.monotonic()
                        if now - last_report >= interval:
                            last_report = now
                            await self._report_download(
                                base, item, received, index, count
                            )
                break
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                self._counters["download_resumes"] += 1
                logger.debug("download of %s broke at %d: %s", url, received, exc)
        else:
            raise _DownloadError(f"download of {item.url} failed {DOWNLOAD_ATTEMPTS}x")
        if received != item.size or digest.hexdigest() != item.sha256:
            raise _DownloadError(f"{item.file_name}: size or sha256 mismatch")
        self._counters["bytes_downloaded"] += received

    async def _report_download(
        self, base: dict[str, Any], item: Any, received: int, index: int, count: int
    ) -> None:
        fraction = received / item.size if item.size else 1.0
        await self._report(
            base,
            AgentStatus.DOWNLOADING,
            50 * (index + fraction) / count,
            software_name=item.name,
        )
        await self._report(
            base,
            AgentStatus.DOWNLOADING,
            100 * fraction,
            event=SOFTWARE_DOWNLOAD_PROGRESS,
            software_name=item.name,
        )


class _DownloadError(Exception):
    """A package could not be fetched or did not match its sha256."""


# --- worker process ------------------------------------------------------------


class _Worker:
    """The agents of one process and the commands the controller sends it."""

    def __init__(self) -> None:
        self.options: FleetOptions | None = None
        self.agents: list[SimAgent] = []
        self.jobs: list[dict[str, Any]] = []
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.http: aiohttp.ClientSession | None = None

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        name = command.get("cmd")
        if name == "configure":
            fields = {f.name for f in dataclasses.fields(FleetOptions)}
            changes = {k: v for k, v in command["options"].items() if k in fields}
            if "transports" in changes:
                changes["transports"] = tuple(changes["transports"])
            if self.options is None:
                self.options = FleetOptions(**changes)
            else:
                for key, value in changes.items():
                    setattr(self.options, key, value)
            return {"ok": True}
        if name == "connect":
            return {"ok": True, "results": await self._connect(command["agent_ids"])}
        if name == "stats":
            reply = {
                "ok": True,
                "t": time.monotonic(),
                "counters": dict(self.counters),
                "connected": sum(a.sio.connected for a in self.agents),
            }
            if command.get("jobs", True):
                reply["jobs"] = self.jobs
            if command.get("reset"):
                self.jobs = []
                for agent in self.agents:
                    agent._jobs = self.jobs
            return reply
        if name == "stop":
            await self.close()
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {name!r}"}

    async def _connect(self, agent_ids: list[str]) -> list[dict[str, Any]]:
        assert self.options is not None, "configure before connect"
        if self.http is None:
            connector = aiohttp.TCPConnector(limit=0, force_close=False)
            self.http = aiohttp.ClientSession(connector=connector)
        gate = asyncio.Semaphore(self.options.connect_concurrency)

        async def one(agent_id: str) -> dict[str, Any]:
            agent = SimAgent(
                agent_id, self.options, self.http, self.counters, self.jobs
            )
            self.agents.append(agent)
            async with gate:
                return await agent.connect_and_register()

        return await asyncio.gather(*(one(a) for a in agent_ids))

    async def close(self) -> None:
        await asyncio.gather(*(a.close() for a in self.agents), return_exceptions=True)
        self.agents.clear()
        if self.http is not None:
            await self.http.close()
            self.http = None


COUNTERS = (
    "jobs",
    "bad_jobs",
    "job_errors",
    "reports_sent",
    "reports_acked",
    "reports_refused",
    "download_resumes",
    "bytes_downloaded",
)


async def _worker_main() -> None:
    """Serve JSON-line commands from stdin until `stop` or end of input."""
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 26, loop=loop)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), sys.stdin
    )
    out = sys.stdout
    worker = _Worker()
    try:
        while line := await reader.readline():
            command = json.loads(line)
            try:
                reply = await worker.handle(command)
            except Exception as exc:  # a bad command must not kill the agents
                logger.exception("fleet worker command %s failed", command.get("cmd"))
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply) + "\n")
            out.flush()
            if command.get("cmd") == "stop":
                return
    finally:
        await worker.close()


# --- controller ----------------------------------------------------------------


class FleetError(RuntimeError):
    """A worker process died or refused a command."""


def node_client_missing(node_modules: Path | None = None) -> str | None:
    """Why the Node.js fleet worker cannot run here, or None when it can.

    socket.io-client must be in `node_modules`, or when that is not given, where
    node will look for it: bench/peers/node/node_modules or a NODE_PATH folder.
    """
    if shutil.which("node") is None:
        return "node not installed"
    if node_modules is not None:
        places = [node_modules]
    else:
        extra = os.environ.get("NODE_PATH", "").split(os.pathsep)
        places = [NODE_DIR / "node_modules", *(Path(p) for p in extra if p)]
    if not any((place / "socket.io-client").is_dir() for place in places):
        where = ", ".join(str(place) for place in places)
        return f"no socket.io-client in {where}: run bench/peers/node/setup.sh"
    return None


def pick_client(choice: str) -> Client:
    """`auto` is node when its worker can run here, else python."""
    if choice == "auto":
        return "python" if node_client_missing() else "node"
    if choice not in CLIENTS:
        raise ValueError(f"unknown fleet client {choice!r}")
    return choice  # type: ignore[return-value]


def client_versions(client: Client) -> dict[str, str | None]:
    """What the simulated agents ran on, for the JSON beside the figures."""
    if client == "python":
        return {
            "client": "python",
            "python_socketio": _version("python-socketio"),
            "aiohttp": _version("aiohttp"),
        }
    return {"client": "node", **_node_versions()}


class Fleet:
    """Simulated agents spread over `processes` worker subprocesses.

    Args:
        options: how the agents behave (sent to every worker, changeable later).
        processes: worker subprocesses; the agents are dealt out evenly.
        client: "python" (`python -m bench.fleet --worker`) or "node"
            (`bench/peers/node/fleet_worker.js`); the same commands and answers.
        node_modules: where socket.io-client is installed for the Node worker
            (default: `bench/peers/node/node_modules`, made by its setup.sh).
    """

    def __init__(
        self,
        options: FleetOptions,
        processes: int = 2,
        *,
        client: Client = "python",
        node_modules: Path | None = None,
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"unknown fleet client {client!r}")
        self.options = options
        self.processes = max(1, processes)
        self.client = client
        self.node_modules = node_modules
        self._workers: list[asyncio.subprocess.Process] = []
        self._locks: list[asyncio.Lock] = []
        self.agent_count = 0

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start the workers, send them the options, check they share our clock.

        On any failure the workers already started are ended before it raises.
        """
        argv, env = self._worker_command()
        try:
            for _ in range(self.processes):
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=1 << 26,
                    env=env,
                )
                self._workers.append(proc)
                self._locks.append(asyncio.Lock())
            await self.configure(**dataclasses.asdict(self.options))
            await self._check_clock()
        except BaseException:
            await self.close()
            raise

    def _worker_command(self) -> tuple[list[str], dict[str, str]]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if self.client == "python":
            return [sys.executable, "-m", "bench.fleet", "--worker"], env
        reason = node_client_missing(self.node_modules)
        if reason:
            raise FleetError(f"the Node fleet worker cannot run: {reason}")
        if self.node_modules is not None:
            env["NODE_PATH"] = str(self.node_modules)
        # Node cannot lift its own open-files limit as the Python worker does; the
        # shell lifts the soft limit to the hard one, then becomes node (same pid).
        lift = 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@"'
        node = shutil.which("node") or "node"
        return ["/bin/sh", "-c", lift, node, str(NODE_WORKER)], env

    async def _check_clock(self) -> None:
        """Every worker's `t` lies between two readings of ours (CLOCK_MONOTONIC).

        The figures subtract worker times from controller times; a worker on another
        clock would make every latency nonsense, so refuse to run instead.
        """
        before = time.monotonic()
        replies = await self._ask_all({"cmd": "stats", "jobs": False})
        after = time.monotonic()
        for reply in replies:
            if not before <= reply["t"] <= after:
                raise FleetError(
                    f"{self.client} fleet worker's clock reads {reply['t']:.6f}, "
                    f"outside [{before:.6f}, {after:.6f}] of time.monotonic()"
                )

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the worker processes have used so far.

        What the simulated agents cost: on a machine shared with the server under
        test, every second of it is taken from the server.
        """
        import psutil

        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = psutil.Process(pid).cpu_times()
                total += times.user + times.system
        return total

    async def _ask(self, index: int, command: dict[str, Any]) -> dict[str, Any]:
        proc = self._workers[index]
        assert proc.stdin is not None and proc.stdout is not None
        async with self._locks[index]:
            proc.stdin.write((json.dumps(command) + "\n").encode())
            await proc.stdin.drain()
            line = await proc.stdout.readline()
        if not line:
            raise FleetError(f"fleet worker {proc.pid} exited ({proc.returncode})")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise FleetError(f"fleet worker {proc.pid}: {reply.get('error')}")
        return reply

    async def _ask_all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return await asyncio.gather(
            *(self._ask(i, command) for i in range(len(self._workers)))
        )

    async def configure(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.options, key, value)
        await self._ask_all({"cmd": "configure", "options": changes})

    async def connect(self, count: int, prefix: str = "sim") -> list[dict[str, Any]]:
        """Start `count` more agents at once; one result per agent (ok, t_*, error)."""
        ids = [f"{prefix}-{self.agent_count + i:06d}" for i in range(count)]
        self.agent_count += count
        shares = [ids[i :: len(self._workers)] for i in range(len(self._workers))]
        replies = await asyncio.gather(
            *(
                self._ask(i, {"cmd": "connect", "agent_ids": share})
                for i, share in enumerate(shares)
                if share
            )
        )
        return [result for reply in replies for result in reply["results"]]

    async def stats(self, *, jobs: bool = True, reset: bool = False) -> dict[str, Any]:
        """Counters summed over the workers, plus every job record if `jobs`."""
        replies = await self._ask_all({"cmd": "stats", "jobs": jobs, "reset": reset})
        counters = dict.fromkeys(COUNTERS, 0)
        for reply in replies:
            for key, value in reply["counters"].items():
                counters[key] += value
        merged: dict[str, Any] = {
            "t": max(r["t"] for r in replies),
            "counters": counters,
            "connected": sum(r["connected"] for r in replies),
        }
        if jobs:
            merged["jobs"] = [job for r in replies for job in r.get("jobs", [])]
        return merged

    async def close(self) -> None:
        """Disconnect every agent and end the workers (bounded wait, then kill)."""
        for index, proc in enumerate(self._workers):
            if proc.returncode is None:
                with contextlib.suppress(FleetError, OSError, ConnectionError):
                    await asyncio.wait_for(self._ask(index, {"cmd": "stop"}), 30)
        for proc in self._workers:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                logger.warning("fleet worker %s did not stop; killing it", proc.pid)
                proc.kill()
                await proc.wait()
        self._workers.clear()


# --- command line --------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fleet",
        description="Start N simulated agents against a Deploy Console server.",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--server", help="server URL, e.g. http://127.0.0.1:8765")
    parser.add_argument("--token", help="enrollment token")
    parser.add_argument("--agents", type=int, default=100)
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--install-seconds", type=float, default=5.0)
    parser.add_argument("--report-hz", type=float, default=1.0)
    parser.add_argument("--skip-download", action="store_true")
    parser.add_argument("--prefix", default=socket.gethostname().split(".")[0])
    parser.add_argument(
        "--duration",
        type=float,
        default=600.0,
        help="stop after this many seconds (default 600)",
    )
    parser.add_argument(
        "--transports", default="websocket", help="websocket | polling,websocket"
    )
    parser.add_argument(
        "--client",
        choices=["auto", *CLIENTS],
        default="python",
        help="the agents' Socket.IO client: python-socketio, or Node's "
        "socket.io-client (bench/peers/node/fleet_worker.js); auto = node when "
        "bench/peers/node/setup.sh has run",
    )
    args = parser.parse_args(argv)
    if not args.worker and not (args.server and args.token):
        parser.error("--server and --token are required")
    return args


async def _run_cli(args: argparse.Namespace) -> int:
    options = FleetOptions(
        server=args.server,
        token=args.token,
        install_seconds=args.install_seconds,
        report_hz=args.report_hz,
        skip_download=args.skip_download,
        transports=tuple(args.transports.split(",")),
    )
    client = pick_client(args.client)
    async with Fleet(options, processes=args.processes, client=client) as fleet:
        start = time.monotonic()
        results = await fleet.connect(args.agents, prefix=args.prefix)
        failed = [r for r in results if not r["ok"]]
        print(
            f"{len(results) - len(failed)}/{len(results)} agents registered in "
            f"{time.monotonic() - start:.2f} s across {fleet.processes} "
            f"{client} processes",
            flush=True,
        )
        for result in failed[:5]:
            print(f"  {result['agent_id']}: {result.get('error')}", flush=True)
        deadline = start + args.duration
        while time.monotonic() < deadline:
            await asyncio.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
            stats = await fleet.stats(jobs=False)
            c = stats["counters"]
            print(
                f"connected={stats['connected']} jobs={c['jobs']} "
                f"reports={c['reports_acked']}/{c['reports_sent']} "
                f"refused={c['reports_refused']} job_errors={c['job_errors']}",
                flush=True,
            )
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    if args.worker:
        asyncio.run(_worker_main())
        return 0
    raise_fd_limit()
    try:
        return asyncio.run(_run_cli(args))
    except KeyboardInterrupt:
        return 130


def machine_description() -> dict[str, Any]:
    """What the figures were measured on (for the JSON and the README)."""
    import psutil

    model = platform.processor() or platform.machine()
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8") as cpuinfo,
    ):
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "logical_cores": psutil.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_socketio": _version("python-socketio"),
        "aiohttp": _version("aiohttp"),
    }


def _node_versions() -> dict[str, str | None]:
    """Node's and socket.io-client's versions (runs node once; blocking, ~50 ms)."""
    import subprocess

    script = (
        "let c = null; try { c = require('socket.io-client/package.json').version }"
        " catch {} console.log(JSON.stringify({node: process.version, c}))"
    )
    try:
        done = subprocess.run(
            [shutil.which("node") or "node", "-e", script],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        found = json.loads(done.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        return {"node": None, "socket_io_client": None}
    return {"node": found["node"], "socket_io_client": found["c"]}


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
