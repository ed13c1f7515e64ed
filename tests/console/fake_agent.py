"""A real Socket.IO agent client for console tests: registers, records jobs, reports.

It stands in for the agent program only in what it does on the wire; the socket,
the server and the events are real.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio

from protocol import (
    AGENT_REGISTER,
    INSTALL_SOFTWARE,
    SOFTWARE_INSTALLATION_STATUS,
)


class FakeAgent:
    """Connects as `agent_id`, collects `install_software` jobs in `jobs`."""

    def __init__(self, url: str, token: str, agent_id: str, hostname: str) -> None:
        self.url = url
        self.token = token
        self.agent_id = agent_id
        self.hostname = hostname
        self.device_id: int | None = None
        self.jobs: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.disconnected = asyncio.Event()
        self.client = socketio.AsyncClient(reconnection=False)
        self.client.on(INSTALL_SOFTWARE, self._on_install)
        self.client.on("disconnect", self._on_disconnect)

    async def _on_install(self, data: dict[str, Any]) -> None:
        await self.jobs.put(data)

    async def _on_disconnect(self, *_reason: Any) -> None:
        self.disconnected.set()

    async def connect(self) -> FakeAgent:
        await self.client.connect(
            self.url,
            auth={"role": "agent", "token": self.token},
            transports=["websocket"],
            wait_timeout=10,
        )
        ack = await self.client.call(
            AGENT_REGISTER,
            {
                "agent_id": self.agent_id,
                "hostname": self.hostname,
                "platform": "windows",
                "os_version": "10.0.19045",
                "agent_version": "0.1.0",
                "ip": f"10.0.0.{sum(self.agent_id.encode()) % 200 + 2}",
            },
            timeout=10,
        )
        assert ack["ok"], ack
        self.device_id = int(ack["device_id"])
        return self

    async def report(self, deployment_id: int, status: str, progress: float, **extra):
        ack = await self.client.call(
            SOFTWARE_INSTALLATION_STATUS,
            {
                "deployment_id": deployment_id,
                "device_id": self.device_id,
                "status": status,
                "progress": progress,
                **extra,
            },
            timeout=10,
        )
        assert ack["ok"], ack
        return ack

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()
        await self.client.shutdown()
