"""Helpers for the agent's tests: a real package file server, report recorder, orders.

`PackageServer` is a real aiohttp handler on loopback that serves package files the
way DESIGN.md says the Deploy Console server does (`/packages/<sha256>`, Bearer token,
Range requests); it can also drop a connection halfway, like a flaky network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from agent.config import AgentConfig
from agent.jobs import JobRunner
from protocol import InstallSoftware

TOKEN = "test-enrollment-token"


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
    cut_halfway: bool = False,
) -> dict[str, Any]:
    sha = server.add(data, cut_halfway=cut_halfway)
    return {
        "software_id": software_id,
        "name": name,
        "version": "1.0",
        "file_name": file_name,
        "url": f"/packages/{sha}",
        "sha256": sha256 or sha,
        "size": len(data),
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
