"""The demo: sample packages in the library and a fleet of real agents on this machine.

`deploy-console --demo` calls `add_sample_packages` and starts a `DemoFleet`;
`deploy-server --demo` calls `run_headless_demo`, which also deploys every sample to
every demo agent, prints one line per target and returns the exit status.

Everything here runs on the server's event loop (in the console, also the Qt loop):
building the samples, removing folders and waiting for processes go to executors or
asyncio's subprocess API, never block the loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.util
import logging
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import psutil

from protocol import DEVICE_UPDATE, TargetStatus
from server.errors import ServerError

logger = logging.getLogger(__name__)

DEFAULT_AGENT_COUNT = 3
DEFAULT_DEMO_TIMEOUT_S = 180.0
STOP_GRACE_S = 5.0
SAMPLES_CACHE = "demo-samples"
WINE_MSIEXEC = "wine msiexec"

# Wine without its Mono/Gecko download prompts and without its debug chatter.
_WINE_ENV = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


class DemoError(Exception):
    """The demo could not go on (agents did not register, samples missing, ...)."""


# --- sample packages ---------------------------------------------------------


def samples_dir() -> Path:
    """Where the sample sources and their builder live (repository or bundle)."""
    bundle_root = getattr(sys, "_MEIPASS", None)
    if bundle_root:
        # build_installer.py puts resources/samples into the console bundle.
        return Path(bundle_root) / "resources" / "samples"
    return Path(__file__).resolve().parents[1] / "resources" / "samples"


def load_sample_builder() -> ModuleType:
    """Import `resources/samples/build.py` by path (resources/ is not a package)."""
    name = "deploy_console_samples_build"
    if name in sys.modules:
        return sys.modules[name]
    path = samples_dir() / "build.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise DemoError(f"sample package sources not found at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while building
    spec.loader.exec_module(module)
    return module


def msi_skip_reason() -> str | None:
    """Why the MSI sample cannot be installed by demo agents here, or None if it can."""
    if os.name == "nt":
        return None
    if shutil.which("wixl") is None:
        return "wixl (msitools) not installed"
    if shutil.which("wine") is None:
        return "Wine not installed"
    return None


def demo_msiexec() -> str | None:
    """The `msiexec` to give a `DemoFleet` on this machine: Wine's, the native one
    (None: the agent's default) on Windows, or None where Wine is missing."""
    if os.name == "nt" or msi_skip_reason() is not None:
        return None
    return WINE_MSIEXEC


def _build_samples(out_dir: Path) -> list[Any]:
    """Build every sample; an MSI that fails to build is left out (worker thread)."""
    builder = load_sample_builder()
    samples = builder.build_samples(out_dir, msi=False)
    if builder.wixl_available():
        try:
            samples.append(builder.build_msi(out_dir))
        except builder.SampleBuildError as exc:
            logger.warning("MSI sample left out: %s", exc)
    return samples


async def add_sample_packages(server) -> list[dict]:
    """Build the sample installers and put them in the server's library.

    Built into `<data_dir>/demo-samples` in a worker thread. Idempotent: a sample
    already in the library (same sha256, or same name and version) is not added
    again. Returns the library rows of every sample, in build order.
    """
    out_dir = Path(server.config.data_dir) / SAMPLES_CACHE
    loop = asyncio.get_running_loop()
    samples = await loop.run_in_executor(None, _build_samples, out_dir)

    library = await server.list_software()
    by_sha = {row["sha256"]: row for row in library}
    by_name = {(row["name"], row["version"]): row for row in library}

    rows = []
    for sample in samples:
        existing = by_sha.get(sample.sha256) or by_name.get(
            (sample.name, sample.version)
        )
        if existing is not None:
            logger.debug(
                "sample already in the library: %s %s", sample.name, sample.version
            )
            rows.append(existing)
            continue
        row = await server.add_software(
            sample.path,
            name=sample.name,
            version=sample.version,
            installer_type=sample.installer_type,
            install_args=sample.install_args,
            timeout_s=sample.timeout_s,
        )
        logger.info(
            "sample package added: %s %s [%s]", sample.name, sample.version, row["id"]
        )
        rows.append(row)
    return rows


# --- the demo fleet ----------------------------------------------------------


@dataclass(frozen=True)
class AgentDirs:
    """One demo agent's folders: its state (id, jobs, logs) and its install root."""

    state_dir: Path
    install_root: Path

    @property
    def console_log(self) -> Path:
        """The agent process's stdout and stderr."""
        return self.state_dir / "agent-console.log"


class DemoFleet:
    """A few real `deploy-agent` processes on this machine that act as devices.

    TODO(demo): the agents outlive a console killed with SIGKILL (they are not
    told when their parent dies), and their token is on their command line.

    Each agent is its own process with its own state folder and install root under
    `base_dir` (a temporary folder by default, removed by `stop`). Agent ids are
    `demo-agent-1` .. `demo-agent-N`. With `msiexec` (e.g. "wine msiexec") the
    agents install MSI packages through it; they then share ONE Wine prefix,
    `<base_dir>/wineprefix`, created once by `start` in the background, because a
    prefix takes tens of seconds and ~700 MB to create.

    Each reports a host name of its own (`DEMO-PC-1` ..), so the device list
    shows separate machines.
    TODO(demo): the Wine prefix is made anew for each demo (~15 s, ~700 MB); it
    could be kept in the data folder between demos.

    Use as `async with DemoFleet(url, token) as fleet:`, or call `start`/`stop`.
    All methods run on the event loop. If the program ends without `stop`, an
    atexit hook kills the agents and removes the temporary folder.

    Args:
        server_url: the server the agents connect to, e.g. `server.url`.
        token: the enrollment token.
        count: how many agents.
        base_dir: where their folders go; kept after `stop` if given.
        msiexec: the MSI launcher passed to the agents (`--msiexec`).
        agent_command: how to start an agent; default `python -m agent` (a frozen
            console answers `-m agent` by running the agent it carries).
    """

    def __init__(
        self,
        server_url: str,
        token: str,
        count: int = DEFAULT_AGENT_COUNT,
        base_dir: Path | None = None,
        msiexec: str | None = None,
        *,
        agent_command: Sequence[str] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("a demo fleet needs at least one agent")
        self.server_url = server_url
        self._token = token
        self.msiexec = msiexec
        self._agent_command = list(agent_command or [sys.executable, "-m", "agent"])
        self._owns_base_dir = base_dir is None
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix="deploy-demo-"))
            if base_dir is None
            else Path(base_dir)
        )
        self.agent_ids = [f"demo-agent-{n}" for n in range(1, count + 1)]
        self.agent_dirs = {
            agent_id: AgentDirs(
                self.base_dir / agent_id / "state", self.base_dir / agent_id / "install"
            )
            for agent_id in self.agent_ids
        }
        self.wine_prefix: Path | None = None
        self._agent_msiexec = msiexec
        words = shlex.split(msiexec) if msiexec else []
        if words and words[0] == "wine" and os.name != "nt":
            # One shared prefix is one Windows machine: installs there must take
            # turns (Wine's msiexec fails with 1627 when two run at once), so the
            # agents get a `wine` wrapper that holds a lock while it runs.
            self.wine_prefix = self.base_dir / "wineprefix"
            wrapper = self.base_dir / "bin" / "wine-one-at-a-time"
            self._agent_msiexec = shlex.join([str(wrapper), *words[1:]])
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self._watchers: set[asyncio.Task] = set()
        self._wine_ready: asyncio.Task | None = None
        self._agent_exited = asyncio.Event()
        self._stopped = False
        self._atexit_armed = False
        if self._owns_base_dir:
            self._arm_atexit()  # the temporary folder exists from here on

    async def __aenter__(self) -> DemoFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def pids(self) -> dict[str, int]:
        """Process ids of the agents that are running now."""
        return {
            agent_id: process.pid
            for agent_id, process in self._processes.items()
            if process.returncode is None
        }

    async def start(self) -> None:
        """Create the folders and start every agent (and the Wine prefix, if any)."""
        self._arm_atexit()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._make_folders)
        if self.wine_prefix is not None and self._wine_ready is None:
            self._wine_ready = asyncio.create_task(
                self._prepare_wine_prefix(), name="demo-wine-prefix"
            )
        for agent_id in self.agent_ids:
            await self.start_agent(agent_id)
        logger.info(
            "demo fleet started: %d agents in %s", len(self.agent_ids), self.base_dir
        )

    async def start_agent(self, agent_id: str) -> None:
        """Start (or restart, with the same state folder) one demo agent."""
        running = self._processes.get(agent_id)
        if running is not None and running.returncode is None:
            return
        dirs = self.agent_dirs[agent_id]
        argv = [
            *self._agent_command,
            "--server",
            self.server_url,
            f"--token={self._token}",  # a token may start with "-"
            "--state-dir",
            str(dirs.state_dir),
            "--agent-id",
            agent_id,
            "--install-root",
            str(dirs.install_root),
            "--hostname",
            "DEMO-PC-" + agent_id.rsplit("-", 1)[-1],
        ]
        if self._agent_msiexec:
            argv += ["--msiexec", self._agent_msiexec]

        log = self._logs.get(agent_id)
        if log is None or log.closed:
            loop = asyncio.get_running_loop()
            log = await loop.run_in_executor(None, open, dirs.console_log, "ab")
            self._logs[agent_id] = log
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            env=self._agent_env(),
        )
        self._processes[agent_id] = process
        watcher = asyncio.create_task(
            self._watch(agent_id, process), name=f"demo-watch-{agent_id}"
        )
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        logger.debug("demo agent started: pid %s [%s]", process.pid, agent_id)

    async def kill_agent(self, agent_id: str) -> None:
        """Kill one agent and everything it started, at once (a pulled power cord)."""
        process = self._processes.get(agent_id)
        if process is None or process.returncode is not None:
            return
        await _kill_trees([process.pid])
        await process.wait()
        logger.info("demo agent killed: pid %s [%s]", process.pid, agent_id)

    async def wait_registered(
        self,
        server,
        timeout: float = 90.0,  # noqa: ASYNC109 (the agreed interface)
    ) -> list[dict]:
        """Wait until every demo agent is registered and online; return their devices.

        Also waits for the shared Wine prefix, so an MSI sent right after cannot race
        its creation. Raises `DemoError` naming the missing agents on timeout or
        when an agent process ends.
        """
        changed = asyncio.Event()

        def on_event(event: str, payload: dict) -> None:
            if event == DEVICE_UPDATE:
                changed.set()

        unsubscribe = server.add_listener(on_event)
        missing: list[str] = list(self.agent_ids)
        try:
            async with asyncio.timeout(timeout):
                if self._wine_ready is not None:
                    await self._wine_ready
                while True:
                    changed.clear()
                    online = {
                        device["agent_id"]: device
                        for device in await server.list_devices()
                        if device.get("online")
                    }
                    missing = [a for a in self.agent_ids if a not in online]
                    if not missing:
                        return [online[a] for a in self.agent_ids]
                    self._raise_if_agent_ended()
                    await self._wait_any(changed, self._agent_exited)
        except TimeoutError:
            raise DemoError(
                f"demo agents not registered after {timeout:.0f} s: "
                f"{', '.join(missing)}; their output is in {self.base_dir}"
            ) from None
        finally:
            unsubscribe()

    async def stop(self) -> None:
        """Stop every agent (terminate, then kill the tree), remove temporary folders.

        Safe to call twice and while the demo is being cancelled (Ctrl-C).
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            await self._stop_agents()
            if self._wine_ready is not None:
                self._wine_ready.cancel()
                await asyncio.gather(self._wine_ready, return_exceptions=True)
            await self._stop_wineserver()
        finally:
            for log in self._logs.values():
                log.close()
            if self._atexit_armed:
                atexit.unregister(self._cleanup_at_exit)
                self._atexit_armed = False
            if self._owns_base_dir:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, _remove_tree, self.base_dir)
            logger.info("demo fleet stopped")

    # -- internals --

    def _arm_atexit(self) -> None:
        if not self._atexit_armed:
            atexit.register(self._cleanup_at_exit)
            self._atexit_armed = True

    def _make_folders(self) -> None:
        """Create every agent's folders and the Wine wrapper (worker thread)."""
        for dirs in self.agent_dirs.values():
            dirs.state_dir.mkdir(parents=True, exist_ok=True)
            dirs.install_root.mkdir(parents=True, exist_ok=True)
        if self.wine_prefix is not None:
            wrapper = self.base_dir / "bin" / "wine-one-at-a-time"
            wrapper.parent.mkdir(parents=True, exist_ok=True)
            wrapper.write_text(_wine_wrapper_source(self.base_dir / "wine.lock"))
            wrapper.chmod(0o755)

    def _agent_env(self) -> dict[str, str]:
        env = dict(os.environ)
        repo_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (repo_root, env.get("PYTHONPATH")) if p
        )
        env["PYTHONUNBUFFERED"] = "1"
        if self.wine_prefix is not None:
            env.update(_WINE_ENV, WINEPREFIX=str(self.wine_prefix))
        return env

    async def _watch(self, agent_id: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if not self._stopped:
            logger.warning(
                "demo agent ended with exit status %s [%s]; see %s",
                code,
                agent_id,
                self.agent_dirs[agent_id].console_log,
            )
        self._agent_exited.set()

    def _raise_if_agent_ended(self) -> None:
        for agent_id, process in self._processes.items():
            if process.returncode is not None:
                log = self.agent_dirs[agent_id].console_log
                raise DemoError(
                    f"demo agent {agent_id} ended with exit status "
                    f"{process.returncode}; its output: {log}\n{_tail(log)}"
                )

    @staticmethod
    async def _wait_any(*events: asyncio.Event) -> None:
        waiters = [asyncio.create_task(event.wait()) for event in events]
        # A fallback re-check each second, in case a registration is not announced.
        try:
            await asyncio.wait(waiters, timeout=1.0, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _prepare_wine_prefix(self) -> None:
        """Create the shared Wine prefix once (`wineboot --init`), before any MSI."""
        assert self.wine_prefix is not None
        logger.info("preparing the demo's Wine prefix in %s", self.wine_prefix)
        process = await asyncio.create_subprocess_exec(
            "wine",
            "wineboot",
            "--init",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self._agent_env(),
        )
        try:
            _, stderr = await process.communicate()
        except asyncio.CancelledError:
            await _kill_trees([process.pid])
            await process.wait()
            raise
        if process.returncode != 0:
            logger.warning(
                "Wine prefix not prepared (wineboot exit %s): %s",
                process.returncode,
                stderr.decode(errors="replace").strip()[-500:],
            )

    async def _stop_agents(self) -> None:
        running = [p for p in self._processes.values() if p.returncode is None]
        if not running:
            return
        family = {p.pid: _descendant_pids(p.pid) for p in running}
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        waits = [asyncio.ensure_future(p.wait()) for p in running]
        _, late = await asyncio.wait(waits, timeout=STOP_GRACE_S)
        if late:
            logger.warning(
                "%d demo agents did not stop in time; killing them", len(late)
            )
        leftovers = [pid for p in running for pid in (p.pid, *family[p.pid])]
        await _kill_trees(leftovers)
        await asyncio.gather(*waits)

    async def _stop_wineserver(self) -> None:
        """End the shared prefix's wineserver, so its folder can be removed."""
        if self.wine_prefix is None or not self.wine_prefix.exists():
            return
        if shutil.which("wineserver") is None:
            return
        process = await asyncio.create_subprocess_exec(
            "wineserver",
            "-k",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=self._agent_env(),
        )
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()

    def _cleanup_at_exit(self) -> None:
        """Last resort when the program ends without `stop` (no event loop here)."""
        pids = [p.pid for p in self._processes.values() if p.returncode is None]
        for pid in pids:
            for child in (*_descendant_pids(pid), pid):
                with contextlib.suppress(psutil.Error):
                    psutil.Process(child).kill()
        for log in self._logs.values():
            log.close()
        if self._owns_base_dir:
            _remove_tree(self.base_dir)


def _wine_wrapper_source(lock: Path) -> str:
    """A `wine` stand-in that runs Wine only while it holds `lock` (POSIX)."""
    interpreter = sys.executable
    shebang = f"#!{interpreter}" if " " not in interpreter else "#!/usr/bin/env python3"
    return f"""{shebang}
# Written by the Deploy Console demo: runs `wine ARGS...` while holding a lock, so
# demo agents sharing one Wine prefix install one MSI at a time, as Windows does.
import fcntl
import subprocess
import sys

with open({str(lock)!r}, "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    sys.exit(subprocess.run(["wine", *sys.argv[1:]]).returncode)
"""


def _descendant_pids(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


async def _kill_trees(pids: Sequence[int]) -> None:
    """Kill the given processes and all their descendants; wait for them off-loop."""
    victims: dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for member in (*process.children(recursive=True), process):
                victims[member.pid] = member
        except psutil.Error:
            continue
    for victim in victims.values():
        with contextlib.suppress(psutil.Error):
            victim.kill()
    if victims:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: psutil.wait_procs(list(victims.values()), timeout=5)
        )


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_bytes()[-limit:].decode(errors="replace")
    except OSError:
        return ""


# --- deploying and reporting -------------------------------------------------


async def wait_for_deployment(server, deployment_id: int) -> dict:
    """Wait until every target of the deployment is terminal; return the deployment.

    Woken by the server's listener events for this deployment; re-reads the
    deployment after each, so no update can be missed. Bound it with
    `asyncio.timeout`.
    """
    changed = asyncio.Event()

    def on_event(event: str, payload: dict) -> None:
        if payload.get("deployment_id") == deployment_id:
            changed.set()

    unsubscribe = server.add_listener(on_event)
    try:
        while True:
            changed.clear()
            deployment = await server.get_deployment(deployment_id)
            if all(_is_terminal(t["status"]) for t in deployment["targets"]):
                return deployment
            await changed.wait()
    finally:
        unsubscribe()


def _is_terminal(status: str) -> bool:
    try:
        return TargetStatus(status).terminal
    except ValueError:
        return False


def _seconds_between(start: Any, end: Any) -> float | None:
    def parse(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        if isinstance(value, str) and value:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(value.replace("Z", "+00:00"))
        return None

    started, ended = parse(start), parse(end)
    if started is None or ended is None:
        return None
    if (started.tzinfo is None) != (ended.tzinfo is None):
        started, ended = started.replace(tzinfo=None), ended.replace(tzinfo=None)
    return max(0.0, (ended - started).total_seconds())


def format_target_line(target: dict, device: dict | None, packages: str) -> str:
    """One line of the headless report: device, packages, status, exit code, time."""
    name = device["agent_id"] if device else f"device {target['device_id']}"
    if device and device.get("hostname") and device["hostname"] != name:
        name = f"{name} ({device['hostname']})"
    exit_code = target.get("exit_code")
    seconds = _seconds_between(target.get("started_at"), target.get("completed_at"))
    line = (
        f"  {name:<28} {packages}  {target['status']:<9} "
        f"exit {'-' if exit_code is None else exit_code:<5} "
        f"{'-' if seconds is None else f'{seconds:.1f} s'}"
    )
    if target["status"] != TargetStatus.SUCCESS and target.get("message"):
        line += f"  ({target['message']})"
    return line


async def run_headless_demo(server, args) -> int:
    """`deploy-server --demo`: deploy every sample to every demo agent and report.

    Uses `args.demo_agents` (default 3), `args.demo_timeout` (seconds, default
    180) and `args.demo_dir` (keep the agents' folders there instead of a temporary
    folder) when the CLI defines them. Prints one line per target and a summary;
    returns 0 only if every target succeeded. The agents, and their folders unless
    `demo_dir` was given, are removed before returning, also on Ctrl-C or SIGTERM
    (then the demo says it was interrupted and returns 130).
    """
    demo = asyncio.ensure_future(_run_demo(server, args))
    loop = asyncio.get_running_loop()
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            before = signal.getsignal(signum)
            loop.add_signal_handler(signum, demo.cancel)
            previous[signum] = before
    try:
        return await demo
    except asyncio.CancelledError:
        outer = asyncio.current_task()
        if outer is not None and outer.cancelling():
            raise
        _say("demo: interrupted; the demo agents and their folders are gone")
        return 130
    finally:
        for signum, before in previous.items():
            loop.remove_signal_handler(signum)
            # Give the handler back (asyncio.run's own Ctrl-C handling, say).
            if before is not None:
                signal.signal(signum, before)


async def _run_demo(server, args) -> int:
    count = getattr(args, "demo_agents", None) or DEFAULT_AGENT_COUNT
    timeout = float(getattr(args, "demo_timeout", None) or DEFAULT_DEMO_TIMEOUT_S)
    began = time.monotonic()

    _say("demo: building the sample packages and adding them to the library")
    try:
        software = await add_sample_packages(server)
    except (DemoError, OSError) as exc:
        _say(f"demo failed: sample packages could not be prepared: {exc}")
        return 1
    skip_reason = msi_skip_reason()
    deployable = [
        s for s in software if s["installer_type"] != "msi" or skip_reason is None
    ]
    has_msi = any(s["installer_type"] == "msi" for s in deployable)
    msiexec = demo_msiexec() if has_msi else None

    fleet = DemoFleet(
        server.url,
        server.enrollment_token,
        count,
        base_dir=getattr(args, "demo_dir", None),
        msiexec=msiexec,
    )
    try:
        _say(f"demo: starting {count} agents in {fleet.base_dir}")
        await fleet.start()
        _say(f"demo: {count} agents started; waiting for them to register")
        if fleet.wine_prefix is not None:
            _say("demo: preparing a Wine prefix for the MSI sample (about 15 s)")
        devices = await fleet.wait_registered(server, timeout=timeout)
        _say(
            f"demo: {len(devices)} agents registered; deploying {len(deployable)} "
            "packages to each"
        )
        deployment = await server.create_deployment(
            [s["id"] for s in deployable],
            [d["id"] for d in devices],
            deployment_name="Demo: every sample to every demo agent",
        )
        try:
            async with asyncio.timeout(timeout):
                deployment = await wait_for_deployment(server, deployment["id"])
        except TimeoutError:
            deployment = await server.get_deployment(deployment["id"])
            _say(f"demo: gave up waiting after {timeout:.0f} s")
    except (DemoError, ServerError) as exc:
        _say(f"demo failed: {exc}")
        return 1
    finally:
        await fleet.stop()

    return _report(deployment, devices, deployable, software, skip_reason, began)


def _report(
    deployment: dict,
    devices: list[dict],
    deployable: list[dict],
    software: list[dict],
    skip_reason: str | None,
    began: float,
) -> int:
    packages = " + ".join(f"{s['name']} {s['version']}" for s in deployable)
    by_id = {d["id"]: d for d in devices}
    order = {d["id"]: position for position, d in enumerate(devices)}
    targets = sorted(
        deployment["targets"], key=lambda t: order.get(t["device_id"], len(order))
    )

    _say(f"demo: deployment {deployment['id']} finished as {deployment['status']}")
    for target in targets:
        _say(format_target_line(target, by_id.get(target["device_id"]), packages))
    for skipped in software:
        if skipped not in deployable:
            _say(
                f"  {'every demo agent':<28} {skipped['name']} {skipped['version']}"
                f"  skipped: {skip_reason}"
            )
    if skip_reason and not any(s["installer_type"] == "msi" for s in software):
        _say(f"  {'every demo agent':<28} the MSI sample  skipped: {skip_reason}")

    succeeded = sum(t["status"] == TargetStatus.SUCCESS for t in targets)
    _say(
        f"demo: {succeeded} of {len(targets)} targets succeeded "
        f"in {time.monotonic() - began:.1f} s"
    )
    return 0 if targets and succeeded == len(targets) else 1


def _say(line: str) -> None:
    print(line, flush=True)
