"""Benchmark 4: the real console, offscreen, with many devices reporting.

The console runs in its own process (`python -m bench.console_probe --port P
--data-dir D`, QT_QPA_PLATFORM=offscreen): a `ConsoleSession` -- the main window
on the qasync loop, its embedded server in a child process -- plus a probe task
that sleeps 10 ms at a time and records how late it wakes up (the loop's lag).
The controller (`run`) points a fleet at the embedded server and tells the probe,
one line on stdin at a time, which phase is running:

    mark <phase>   start a new lag segment (storm, reporting, ...); the answer
                   holds the CPU seconds of the console and its server so far
    device_list    open a second main window on the same server and time until
                   its device list holds every device, then close it
    stop           print every segment's p50/p99/max and exit

Every answer is one JSON line on stdout.

The console runs its server as `deploy-console` does, in a process of its own
(`console.server_process.ProcessServer`). Environment variables for experiments:
`BENCH_CONSOLE_SERVER=thread` runs it on a thread of the console's process
(`console.server_thread.ThreadedServer`, as the console did before), and a second
probe then samples the server loop's lag too (`server_segments`);
`BENCH_CONSOLE_SERVER=loop` runs it on the window's own loop, as the console did
before that; `BENCH_SWITCH_INTERVAL=<seconds>` sets
`sys.setswitchinterval` in the console process; `BENCH_CONSOLE_PROFILE=<file>`
writes pyinstrument's text report of the console thread during the reporting
phase there; `BENCH_CONSOLE_STALLS=<file>` writes there the console thread's
stacks seen while its loop was stalled (`_StallWatch`), most frequent first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import REPO_DIR, free_port

logger = logging.getLogger(__name__)

PROBE_INTERVAL = 0.010
READY_TIMEOUT = 120.0
CONSOLE_RATE = 5_000.0
"""Reports per second the fleet offers the console in all (issue 7: the loop's lag
is judged while the server persists 5,000 status events a second)."""
SERVER_MODE_ENV = "BENCH_CONSOLE_SERVER"
SWITCH_INTERVAL_ENV = "BENCH_SWITCH_INTERVAL"
PROFILE_ENV = "BENCH_CONSOLE_PROFILE"
STALLS_ENV = "BENCH_CONSOLE_STALLS"
STALL_S = 0.040
"""A loop that has not woken the probe for this long is stalled (`_StallWatch`)."""


def missing() -> str | None:
    """Why the console benchmark cannot run here, or None when it can."""
    if not (REPO_DIR / "console" / "session.py").exists():
        return "console/session.py not there yet (the console has not landed)"
    try:
        import PySide6  # noqa: F401
        import qasync  # noqa: F401
    except ImportError as exc:
        return f"console dependencies missing: {exc}"
    return None


# --- controller side -----------------------------------------------------------


async def run(workdir: Path, settings: Any) -> dict[str, Any]:
    """Start the console, drive a fleet against it, return the lag figures."""
    import secrets

    import aiohttp

    from bench.fleet import Fleet, FleetOptions
    from bench.procs import ServerProcess
    from bench.suite import AdminApi, ConsoleListener, window_rate

    folder = workdir / "console"
    folder.mkdir()
    enrollment, admin = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    port = free_port()
    log_path = folder / "console.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.console_probe",
            "--port",
            str(port),
            "--data-dir",
            str(folder / "data"),
            cwd=REPO_DIR,
            env={
                **os.environ,
                "QT_QPA_PLATFORM": "offscreen",
                "DEPLOY_ENROLLMENT_TOKEN": enrollment,
                "DEPLOY_ADMIN_TOKEN": admin,
            },
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    probe = _ProbeChannel(proc, log_path)
    try:
        ready = await asyncio.wait_for(probe.read(), READY_TIMEOUT)
        server = ServerProcess(
            "console", ready["url"], enrollment, admin, proc, log_path
        )
        package = folder / "noop.cmd"
        package.write_bytes(b"@echo off\r\nrem bench no-op installer\r\n")
        devices = settings.console_devices
        hz = report_hz(devices)
        options = FleetOptions(
            server=server.url,
            token=enrollment,
            install_seconds=settings.ingest_seconds,
            report_hz=hz,
            skip_download=True,
        )
        listener = ConsoleListener(server)
        await listener.connect()
        try:
            async with (
                aiohttp.ClientSession() as http,
                Fleet(
                    options, processes=settings.processes, client=settings.client
                ) as fleet,
            ):
                await probe.ask("mark storm")
                results = await probe.guard(fleet.connect(devices, prefix="console"))
                device_ids = [r["device_id"] for r in results if r["ok"]]
                api = AdminApi(server, http)
                software_id = await api.software_id(package)
                await fleet.stats(jobs=False, reset=True)
                cpu_before = await probe.ask("mark reporting")
                fleet_cpu_before = fleet.cpu_seconds()
                start = time.monotonic()
                deployment = await probe.guard(
                    api.create_deployment([software_id], device_ids, "bench console")
                )
                finished = asyncio.ensure_future(
                    listener.wait_finished(
                        deployment["id"], settings.deployment_timeout
                    )
                )
                samples = await probe.guard(
                    _sample_reports(fleet, finished, settings.ingest_seconds)
                )
                await probe.guard(finished)
                cpu_after = await probe.ask("mark idle")
                reporting_s = time.monotonic() - start
                fleet_cpu = fleet.cpu_seconds() - fleet_cpu_before
                shown = await probe.ask("device_list")
        finally:
            await listener.close()
        stopped = await probe.ask("stop")
    finally:
        await probe.close()
    segments = stopped["segments"]
    server_segments = stopped.get("server_segments") or {}
    reporting = segments.get("reporting", {})
    sending = settings.ingest_seconds
    rate = window_rate(samples, start + 0.2 * sending, start + 0.9 * sending)
    return {
        "devices": len(device_ids),
        "report_hz": hz,
        "offered_per_s": len(device_ids) * hz,
        "events_per_s": rate["events_per_s"],
        "server": ready.get("server"),
        "switch_interval_ms": ready.get("switch_interval_ms"),
        "lag_p50_ms": reporting.get("p50_ms"),
        "lag_p99_ms": reporting.get("p99_ms"),
        "lag_max_ms": reporting.get("max_ms"),
        "server_lag_p99_ms": server_segments.get("reporting", {}).get("p99_ms"),
        # Cores busy while reporting (CPU seconds per second): what each part of
        # the run took from the machine's two.
        "reporting_s": reporting_s,
        "cores_console": (cpu_after["console_cpu_s"] - cpu_before["console_cpu_s"])
        / reporting_s,
        "cores_server": (cpu_after["server_cpu_s"] - cpu_before["server_cpu_s"])
        / reporting_s,
        "cores_fleet": fleet_cpu / reporting_s,
        "device_list_s": shown["seconds"],
        "device_list_rows": shown["rows"],
        "segments": segments,
        "server_segments": server_segments,
    }


def report_hz(devices: int) -> float:
    """How often each device reports so that all offer `CONSOLE_RATE` together.

    Never faster than an agent reports (`MAX_REPORT_HZ`), so a small fleet offers
    less than the whole rate.
    """
    from bench.suite import MAX_REPORT_HZ

    return min(MAX_REPORT_HZ, CONSOLE_RATE / max(1, devices))


async def _sample_reports(
    fleet: Any, finished: asyncio.Future[Any], sending: float
) -> list[tuple[float, dict[str, int]]]:
    """The fleet's report counters, sampled while the agents report.

    Twenty samples over the sending time (fewer if the deployment finishes
    first): enough for `bench.suite.window_rate` to tell the acknowledged rate.
    """
    samples = []
    deadline = time.monotonic() + sending
    while time.monotonic() < deadline and not finished.done():
        stats = await fleet.stats(jobs=False)
        samples.append((stats["t"], stats["counters"]))
        await asyncio.wait({finished}, timeout=sending / 20)
    return samples


class _ProbeChannel:
    """JSON lines to and from the console probe process."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self._proc = proc
        self._log_path = log_path

    async def read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"console probe exited; see {self._log_path}")
        return json.loads(line)

    async def guard(self, awaitable: Any) -> Any:
        """Await `awaitable`, or raise at once if the console process dies first."""
        task = asyncio.ensure_future(awaitable)
        died = asyncio.ensure_future(self._proc.wait())
        try:
            await asyncio.wait({task, died}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            died.cancel()
        if task.done() and task.exception() is None:
            return task.result()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            # A dropped connection usually means the console just died: say so.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._proc.wait(), 5)
            if self._proc.returncode is None:
                return task.result()  # re-raises the task's own error
        raise RuntimeError(
            f"console process died (exit {self._proc.returncode}); see {self._log_path}"
        )

    async def ask(self, command: str) -> dict[str, Any]:
        assert self._proc.stdin is not None
        self._proc.stdin.write(command.encode() + b"\n")
        await self._proc.stdin.drain()
        return await asyncio.wait_for(self.read(), READY_TIMEOUT)

    async def close(self) -> None:
        if self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 20)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()


# --- console side ----------------------------------------------------------------


class _LagProbe:
    """Samples how late a 10 ms sleep wakes up on the console's loop."""

    def __init__(self) -> None:
        self.segments: dict[str, list[float]] = {"start": []}
        self._current = self.segments["start"]
        self.phase = "start"
        self.woke = time.monotonic()
        """When the probe last ran (read by `_StallWatch` from its thread)."""

    def mark(self, name: str) -> None:
        self.phase = name
        self._current = self.segments.setdefault(name, [])

    async def sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PROBE_INTERVAL)
            self.woke = time.monotonic()
            self._current.append(max(0.0, loop.time() - before - PROBE_INTERVAL))

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        from bench.suite import percentile

        out = {}
        for name, lags in self.segments.items():
            out[name] = {
                "samples": len(lags),
                "p50_ms": _ms(percentile(lags, 50)),
                "p99_ms": _ms(percentile(lags, 99)),
                "max_ms": _ms(max(lags) if lags else None),
            }
        return out


class _StallWatch:
    """Where the console's thread is while its loop is stalled (`BENCH_CONSOLE_STALLS`).

    A thread looks every 5 ms; when the probe has not run for `STALL_S`, it notes
    the console thread's stack, once per stall at each 10 ms of it. At the end the
    stacks are written, most frequent first: what the profiler's averages hide,
    the code that runs while the window cannot repaint.
    """

    def __init__(self, probe: _LagProbe, path: str) -> None:
        import threading

        self._probe = probe
        self._path = path
        self._target = threading.get_ident()
        self._stacks: dict[tuple[str, ...], int] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch")
        self._thread.start()

    def _watch(self) -> None:
        import traceback

        while not self._done.wait(0.005):
            if time.monotonic() - self._probe.woke < STALL_S:
                continue
            frame = sys._current_frames().get(self._target)
            if frame is None:
                continue
            frames = traceback.extract_stack(frame)[-14:]
            stack = (
                f"phase {self._probe.phase}",
                *(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in frames),
            )
            self._stacks[stack] = self._stacks.get(stack, 0) + 1

    def close(self) -> None:
        self._done.set()
        self._thread.join()
        ranked = sorted(self._stacks.items(), key=lambda item: -item[1])
        with open(self._path, "w") as out:
            for stack, count in ranked[:40]:
                out.write(f"{count * 5} ms\n    " + "\n    ".join(stack) + "\n\n")


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds so far of this process and of its children (the server's)."""
    import psutil

    me = psutil.Process()
    own = me.cpu_times()
    server = 0.0
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            server += times.user + times.system
    return {"console_cpu_s": own.user + own.system, "server_cpu_s": server}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


class _StdinCommands:
    """Command lines from stdin, read on the loop itself (no thread).

    Reading in a thread and handing lines over with `call_soon_threadsafe` made
    the qasync loop crash (a Qt signal emitted from a non-Qt thread), so stdin is
    watched with `add_reader` -- a QSocketNotifier under qasync.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._loop = loop
        self._fd = sys.stdin.fileno()
        self._buffer = b""
        os.set_blocking(self._fd, False)
        loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._fd, 65536)
        except BlockingIOError:
            return
        if not chunk:
            self._loop.remove_reader(self._fd)
            self.queue.put_nowait("stop")
            return
        self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self.queue.put_nowait(line.decode().strip())

    def close(self) -> None:
        self._loop.remove_reader(self._fd)


async def _time_device_list(server: Any, expected: int) -> dict[str, Any]:
    """A fresh main window on `server`: seconds until its list holds `expected`.

    The window's model signals each insertion; nothing here may spin Qt's event
    loop by hand (processEvents would re-enter the qasync loop).
    """
    from console.ui.main_window import MainWindow

    start = time.monotonic()
    window = MainWindow()
    filled = asyncio.Event()

    def on_rows_inserted(*_args: object) -> None:
        if window.devices.rowCount() >= expected:
            filled.set()

    window.devices.rowsInserted.connect(on_rows_inserted)
    on_rows_inserted()
    window.attach(server)
    window.show()
    try:
        await asyncio.wait_for(filled.wait(), READY_TIMEOUT)
        seconds: float | None = time.monotonic() - start
    except TimeoutError:
        seconds = None
    rows = window.devices.rowCount()
    await window.shutdown()
    window.close()
    window.deleteLater()
    return {"seconds": seconds, "rows": rows}


async def _console_main(args: argparse.Namespace) -> None:
    from console.loop import settle_memory
    from console.server_process import ProcessServer
    from console.server_thread import ThreadedServer
    from console.session import ConsoleSession
    from server.app import DeployServer
    from server.config import ServerConfig

    mode = os.environ.get(SERVER_MODE_ENV, "process")
    factories = {"process": ProcessServer, "thread": ThreadedServer}
    if os.environ.get(SWITCH_INTERVAL_ENV):
        sys.setswitchinterval(float(os.environ[SWITCH_INTERVAL_ENV]))

    config = ServerConfig(
        host="127.0.0.1",
        port=args.port,
        data_dir=args.data_dir,
        enrollment_token=os.environ.get("DEPLOY_ENROLLMENT_TOKEN"),
        admin_token=os.environ.get("DEPLOY_ADMIN_TOKEN"),
    )
    session = ConsoleSession(config, server_factory=factories.get(mode, DeployServer))
    await session.start()
    settle_memory()  # as `deploy-console` does after starting (console/app.py)
    session.window.show()
    probe = _LagProbe()
    sampler = asyncio.ensure_future(probe.sample())
    stalls = (
        _StallWatch(probe, os.environ[STALLS_ENV]) if STALLS_ENV in os.environ else None
    )
    server = session.server
    server_probe: _LagProbe | None = None
    server_sampler: Any = None
    if isinstance(server, ThreadedServer):
        server_probe = _LagProbe()
        server_sampler = await server.on_server_loop(
            lambda _server: asyncio.ensure_future(server_probe.sample())
        )
    stdin = _StdinCommands(asyncio.get_running_loop())
    commands = stdin.queue
    profiler: Any = None
    _answer(
        {
            "url": session.server.url,
            "server": mode,
            "switch_interval_ms": sys.getswitchinterval() * 1000,
        }
    )
    try:
        while True:
            command = await commands.get()
            if command.startswith("mark "):
                profiler = _profile_phase(profiler, command.removeprefix("mark "))
                probe.mark(command.removeprefix("mark "))
                if server_probe is not None:
                    server_probe.mark(command.removeprefix("mark "))
                _answer({"ok": True, **_cpu_seconds()})
            elif command == "device_list":
                expected = len(await session.server.list_devices())
                _answer(await _time_device_list(session.server, expected))
            elif command == "stop":
                if stalls is not None:
                    stalls.close()  # before the answer: then the process may end
                    stalls = None
                _answer(
                    {
                        "ok": True,
                        "segments": probe.summary(),
                        "server_segments": server_probe and server_probe.summary(),
                    }
                )
                return
    finally:
        if stalls is not None:
            stalls.close()
        stdin.close()
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        if server_sampler is not None and server.running:
            await server.on_server_loop(lambda _server: server_sampler.cancel())
        await session.stop()


def _profile_phase(profiler: Any, phase: str) -> Any:
    """Profile the console thread while the fleet reports (`BENCH_CONSOLE_PROFILE`).

    pyinstrument samples the thread that starts it: here the console's, not the
    server's. Returns the running profiler, or None.
    """
    path = os.environ.get(PROFILE_ENV)
    if not path:
        return None
    if profiler is not None:
        profiler.stop()
        Path(path).write_text(profiler.output_text(unicode=True, show_all=False))
        return None
    if phase != "reporting":
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    profiler.start()
    return profiler


def _answer(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console_probe")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

    from PySide6.QtWidgets import QApplication

    from bench.fleet import raise_fd_limit
    from console.loop import new_event_loop

    raise_fd_limit()
    app = QApplication(sys.argv[:1])
    app.setQuitOnLastWindowClosed(False)
    # The console's own loop, as `deploy-console` runs (console/app.py).
    with asyncio.Runner(loop_factory=lambda: new_event_loop(app)) as runner:
        runner.run(_console_main(args))


if __name__ == "__main__":
    main()
