"""Helpers for the agent's tests: a real package file server, report recorder, orders.

`PackageServer` is a real aiohttp handler on loopback that serves package files the
way DESIGN.md says the Deploy Console server does (`/packages/<sha256>`, Bearer token,
Range requests); it can also drop a connection halfway, like a flaky network.
`StandInServer` adds a real Socket.IO server whose answers a test chooses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import socketio
from aiohttp import web

from agent.config import AgentConfig
from agent.jobs import JobRunner
from protocol import (
    AGENT_REGISTER,
    INSTALL_SOFTWARE,
    SOFTWARE_DOWNLOAD_PROGRESS,
    SOFTWARE_INSTALLATION_STATUS,
    InstallSoftware,
)

TOKEN = "test-enrollment-token"
TERMINAL = ("success", "failed", "cancelled")


@dataclass
class PackageServer:
    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)
    ranges_seen: list[str | None] = field(default_factory=list)

    def add(self, data: bytes, *, cut_halfway: bool = False) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.files[sha] = data
        if cut_halfway:
            self.cut_once.add(sha)
        return sha

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            raise web.HTTPUnauthorized()
        sha = request.match_info["sha"]
        data = self.files.get(sha)
        if data is None:
            raise web.HTTPNotFound()
        self.ranges_seen.append(request.headers.get("Range"))
        start = 0
        if request.http_range.start is not None:
            start = request.http_range.start
        if start and start >= len(data):
            # What aiohttp's FileResponse (the real server's) answers here.
            raise web.HTTPRequestRangeNotSatisfiable(
                headers={"Content-Range": f"bytes */{len(data)}"}
            )
        body = data[start:]
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(body)
        await resp.prepare(request)
        if sha in self.cut_once:
            self.cut_once.discard(sha)
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp


class Reports:
    """What the runner reported, with waits for a job's final status."""

    def __init__(self) -> None:
        self.statuses: list[dict[str, Any]] = []
        self.progress: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    def on_status(self, payload: dict[str, Any], final: bool) -> None:
        self.statuses.append({**payload, "_final": final})
        asyncio.get_running_loop().create_task(self._notify())

    def on_progress(self, payload: dict[str, Any]) -> None:
        self.progress.append(payload)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def finals(self, deployment_id: int) -> list[dict[str, Any]]:
        return [
            s
            for s in self.statuses
            if s["_final"] and s["deployment_id"] == deployment_id
        ]

    async def wait_for(self, predicate, within: float = 30) -> None:
        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: predicate(self))

        await asyncio.wait_for(wait(), within)

    async def final(self, deployment_id: int, within: float = 30) -> dict[str, Any]:
        await self.wait_for(lambda r: r.finals(deployment_id), within)
        return self.finals(deployment_id)[-1]

    def of(self, deployment_id: int) -> list[dict[str, Any]]:
        return [s for s in self.statuses if s["deployment_id"] == deployment_id]


@dataclass
class RunningAgent:
    runner: JobRunner
    reports: Reports
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def start_runner(config: AgentConfig) -> RunningAgent:
    reports = Reports()
    runner = JobRunner(
        config, on_status=reports.on_status, on_download_progress=reports.on_progress
    )
    runner.recover()
    task = asyncio.create_task(runner.run())
    return RunningAgent(runner, reports, task)


def package(
    server: PackageServer,
    data: bytes,
    *,
    name: str = "Test package",
    file_name: str = "install.sh",
    installer_type: str = "script",
    install_args: str = "",
    timeout_s: int = 60,
    software_id: int = 1,
    sha256: str | None = None,
    size: int | None = None,
    cut_halfway: bool = False,
) -> dict[str, Any]:
    """A `software_list` item for `data`, served by `server`; `sha256` and `size`
    override what the job claims (the server still serves `data`)."""
    sha = server.add(data, cut_halfway=cut_halfway)
    return {
        "software_id": software_id,
        "name": name,
        "version": "1.0",
        "file_name": file_name,
        "url": f"/packages/{sha}",
        "sha256": sha256 or sha,
        "size": len(data) if size is None else size,
        "installer_type": installer_type,
        "install_args": install_args,
        "timeout_s": timeout_s,
    }


def order(deployment_id: int, *items: dict[str, Any], device_id: int = 1):
    return InstallSoftware.model_validate(
        {
            "deployment_id": deployment_id,
            "device_id": device_id,
            "software_list": list(items),
        }
    )


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX shell scripts")


class AgentProcess:
    """The real `deploy-agent` (`python -m agent ...`) as a child process; its
    stderr lines are collected so a test can wait for one."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            async with self._changed:
                self.lines.append(line.decode("utf-8", errors="replace"))
                self._changed.notify_all()

    async def wait_for_line(self, text: str, within: float = 30) -> str:
        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        return found() or ""

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader


async def wait_for_target(
    server: Any,
    deployment_id: int,
    within: float = 60,
    until: Callable[[dict], bool] | None = None,
) -> dict:
    """Wait until the deployment's first target is terminal (or satisfies `until`);
    return that target."""
    changed = asyncio.Event()

    def on_event(event: str, payload: dict) -> None:
        if payload.get("deployment_id") == deployment_id:
            changed.set()

    unsubscribe = server.add_listener(on_event)
    try:
        async with asyncio.timeout(within):
            while True:
                changed.clear()
                deployment = await server.get_deployment(deployment_id)
                target = deployment["targets"][0]
                if until is not None and until(target):
                    return target
                if until is None and target["status"] in TERMINAL:
                    return target
                await changed.wait()
    finally:
        unsubscribe()


async def wait_for_device(server: Any, agent_id: str, within: float = 60) -> dict:
    """Wait until the agent's device is online on `server`; return the device."""
    changed = asyncio.Event()

    def on_event(event: str, payload: dict) -> None:
        changed.set()

    unsubscribe = server.add_listener(on_event)
    try:
        async with asyncio.timeout(within):
            while True:
                changed.clear()
                for device in await server.list_devices():
                    if device["agent_id"] == agent_id and device["online"]:
                        return device
                await changed.wait()
    finally:
        unsubscribe()


class StandInServer:
    """A real python-socketio server on aiohttp that stands in for the Deploy Console
    server's gateway where a test must choose its answers: it accepts an agent,
    answers `agent_register` with `register_ack` (plus the agent's id and room),
    answers each final status with `final_ack`, records every status report, and
    serves package files through a `PackageServer` on the same port."""

    def __init__(self, packages: PackageServer) -> None:
        self.packages = packages
        self.url = ""
        self.register_ack: dict[str, Any] = {"ok": True, "device_id": 1}
        self.final_ack: dict[str, Any] = {"ok": True}
        self.reports: list[dict[str, Any]] = []
        self.registered = asyncio.Event()
        self.agent_sid: str | None = None
        self._changed = asyncio.Condition()
        self.sio = socketio.AsyncServer(async_mode="aiohttp", logger=False)
        self.sio.on("connect", self._on_connect)
        self.sio.on(AGENT_REGISTER, self._on_agent_register)
        self.sio.on(SOFTWARE_INSTALLATION_STATUS, self._on_status)
        self.sio.on(SOFTWARE_DOWNLOAD_PROGRESS, self._on_progress)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        self.sio.attach(app)
        app.router.add_get("/packages/{sha}", self.packages.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self.sio.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _on_connect(self, sid: str, environ: dict, auth: Any = None) -> bool:
        return isinstance(auth, dict) and auth.get("token") == TOKEN

    async def _on_agent_register(self, sid: str, data: dict) -> dict[str, Any]:
        self.agent_sid = sid
        await self.sio.enter_room(sid, data["agent_id"])
        self.registered.set()
        agent_id = data["agent_id"]
        return {**self.register_ack, "agent_id": agent_id, "room": agent_id}

    async def _on_status(self, sid: str, data: dict) -> dict[str, Any]:
        async with self._changed:
            self.reports.append(data)
            self._changed.notify_all()
        return self.final_ack

    async def _on_progress(self, sid: str, data: dict) -> None:
        pass

    async def install(self, job: InstallSoftware) -> Any:
        """Send `install_software` to the registered agent; returns its answer."""
        payload = job.model_dump(mode="json")
        return await self.sio.call(INSTALL_SOFTWARE, payload, to=self.agent_sid)

    def of(self, deployment_id: int) -> list[dict[str, Any]]:
        return [r for r in self.reports if r["deployment_id"] == deployment_id]

    async def final(self, deployment_id: int, within: float = 30) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            done = ("completed", "failed")
            return next(
                (r for r in self.of(deployment_id) if r["status"] in done), None
            )

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: final() is not None)
        return final() or {}
