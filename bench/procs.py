"""The processes under measurement: our server, the Node and bare peers, nginx.

Each runs as its own subprocess on 127.0.0.1 so psutil can read its CPU time and
resident memory without counting the load generators'. Logs go to a file in the
run's temporary folder (named in the error when a process fails to come up).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

logger = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
NODE_DIR = BENCH_DIR / "peers" / "node"
NGINX_RUN = BENCH_DIR / "peers" / "nginx" / "run.sh"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
"""A server gets this long after SIGTERM (ours drains its backlog first)."""


class ProcessStartError(RuntimeError):
    """A server under test did not come up; the message names its log file."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_peer_missing() -> str | None:
    """Why the Node peer cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node not installed"
    if not (NODE_DIR / "node_modules" / "socket.io").is_dir():
        return "bench/peers/node/node_modules missing: run bench/peers/node/setup.sh"
    return None


def nginx_missing() -> str | None:
    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        return "nginx not installed: run bench/peers/nginx/setup.sh"
    return None


def ours_missing() -> str | None:
    """Why our server cannot be started here, or None."""
    if not (REPO_DIR / "server" / "app.py").exists():
        return "server/app.py missing (the server has not landed)"
    return None


def ours_module() -> str:
    """`server.cli` (what `deploy-server` runs) once it exists, else our launcher."""
    if (REPO_DIR / "server" / "cli.py").exists():
        return "server.cli"
    return "bench.serve_ours"


@dataclass
class ServerProcess:
    """One server under test, started by `start_*` below; stop it with `stop()`."""

    name: str
    url: str
    enrollment_token: str
    admin_token: str
    process: asyncio.subprocess.Process
    log_path: Path
    serves_packages: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def _tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the server and its children so far."""
        total = 0.0
        for proc in self._tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of the server and its children now (no collection)."""
        total = 0
        for proc in self._tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    async def collected_rss_bytes(self, http: aiohttp.ClientSession) -> int:
        """Resident memory after a full garbage collection, where the server has a
        route for it (`extra["gc_path"]`: the Node and bare python-socketio peers);
        otherwise the same as `rss_bytes()`."""
        path = self.extra.get("gc_path")
        if path:
            headers = {"Authorization": f"Bearer {self.admin_token}"}
            async with http.post(self.url + path, headers=headers) as response:
                if response.status != 200:
                    body = await response.text()
                    raise RuntimeError(
                        f"{self.name} {path}: {response.status} {body[:300]}"
                    )
                await response.read()
        return self.rss_bytes()

    async def wait_quiet(
        self, busy_share: float = 0.1, step: float = 0.25, within: float = 30.0
    ) -> float:
        """Wait until the server uses under `busy_share` of one core over a
        `step`, at most `within` seconds; return the seconds waited.

        After a fleet hangs up, a server still has thousands of disconnects to
        record; a benchmark started then measures that work, not its own.
        """
        start = time.monotonic()
        before = self.cpu_seconds()
        while time.monotonic() - start < within:
            await asyncio.sleep(step)  # a CPU reading needs time to pass
            now = self.cpu_seconds()
            if now - before < busy_share * step:
                break
            before = now
        return time.monotonic() - start

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                logger.warning(
                    "%s [%s] still running %s s after SIGTERM; killing",
                    self.name,
                    self.pid,
                    STOP_TIMEOUT,
                )
                self.process.kill()
                await self.process.wait()

    @property
    def pid(self) -> int:
        return self.process.pid


async def _spawn(
    name: str,
    argv: list[str],
    workdir: Path,
    env: dict[str, str],
    cwd: Path = REPO_DIR,
) -> tuple[asyncio.subprocess.Process, Path]:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    return proc, log_path


async def wait_until_serving(server: ServerProcess, path: str) -> None:
    """Poll `path` until the server answers at all (any HTTP status), bounded."""
    deadline = time.monotonic() + READY_TIMEOUT
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if server.process.returncode is not None:
                raise ProcessStartError(
                    f"{server.name} exited with {server.process.returncode}; "
                    f"see {server.log_path}"
                )
            try:
                async with http.get(server.url + path) as response:
                    await response.read()
                    return
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
    await server.stop()
    raise ProcessStartError(
        f"{server.name} did not answer in time; see {server.log_path}"
    )


async def start_ours(
    workdir: Path, enrollment: str, admin: str, profile: Path | None = None
) -> ServerProcess:
    """`python -m server.cli` with a fresh data folder and fixed tokens (env).

    With `profile`, the server runs under pyinstrument (through `bench.serve_ours`,
    which stops cleanly on SIGTERM) and its text report is written there.
    """
    module = ours_module()
    runner = [sys.executable, "-m"]
    if profile is not None:
        module = "bench.serve_ours"
        runner = [sys.executable, "-m", "pyinstrument", "-r", "text"]
        runner += ["--show-all", "-o", str(profile), "-m"]
    port = free_port()
    data_dir = workdir / "ours-data"
    data_dir.mkdir()
    proc, log_path = await _spawn(
        "ours",
        [
            *runner,
            module,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
        ],
        workdir,
        {"DEPLOY_ENROLLMENT_TOKEN": enrollment, "DEPLOY_ADMIN_TOKEN": admin},
    )
    server = ServerProcess(
        "ours", f"http://127.0.0.1:{port}", enrollment, admin, proc, log_path
    )
    server.extra["launcher"] = module
    await wait_until_serving(server, "/api/devices")
    return server


async def start_bare_python(
    workdir: Path, enrollment: str, admin: str, package: Path
) -> ServerProcess:
    port = free_port()
    proc, log_path = await _spawn(
        "bare_python",
        [
            sys.executable,
            "-m",
            "bench.peers.bare_python",
            "--port",
            str(port),
            "--package",
            str(package),
        ],
        workdir,
        {"DEPLOY_ENROLLMENT_TOKEN": enrollment, "DEPLOY_ADMIN_TOKEN": admin},
    )
    server = ServerProcess(
        "bare_python", f"http://127.0.0.1:{port}", enrollment, admin, proc, log_path
    )
    server.extra["gc_path"] = "/bench/gc"
    await wait_until_serving(server, "/api/devices")
    return server


async def start_node(
    workdir: Path,
    enrollment: str,
    admin: str,
    package: Path,
    node_modules: Path | None = None,
) -> ServerProcess:
    """`node --expose-gc server.js`; socket.io from `node_modules` if given, else
    from bench/peers/node/node_modules (its setup.sh)."""
    port = free_port()
    env = {
        "PORT": str(port),
        "ENROLLMENT_TOKEN": enrollment,
        "ADMIN_TOKEN": admin,
        "PACKAGE_FILE": str(package),
    }
    if node_modules is not None:
        env["NODE_PATH"] = str(node_modules)
    proc, log_path = await _spawn(
        "node",
        [shutil.which("node") or "node", "--expose-gc", "server.js"],
        workdir,
        env,
        cwd=NODE_DIR,
    )
    server = ServerProcess(
        "node", f"http://127.0.0.1:{port}", enrollment, admin, proc, log_path
    )
    server.extra["gc_path"] = "/bench/gc"
    await wait_until_serving(server, "/api/devices")
    return server


async def start_nginx(workdir: Path, enrollment: str, package: Path) -> ServerProcess:
    """nginx serving `package` at /packages/<sha256> behind the same Bearer check."""
    port = free_port()
    root = workdir / "nginx-root"
    (root / "packages").mkdir(parents=True)
    sha256 = package.name
    os.link(package, root / "packages" / sha256)
    nginx_dir = workdir / "nginx"
    proc, log_path = await _spawn(
        "nginx",
        ["bash", str(NGINX_RUN), str(port), str(root), enrollment, str(nginx_dir)],
        workdir,
        {},
    )
    server = ServerProcess(
        "nginx", f"http://127.0.0.1:{port}", enrollment, "", proc, log_path
    )
    await wait_until_serving(server, "/packages/")
    server.extra["package_url"] = f"/packages/{sha256}"
    return server
