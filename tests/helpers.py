"""Real Socket.IO clients for tests: a fake agent and a console, on loopback.

Both are python-socketio `AsyncClient`s speaking the DESIGN.md contract; every
received event lands in a per-event `asyncio.Queue` (and in `history`, in order), so a
test waits on what it expects with a timeout instead of sleeping::

    agent = FakeAgent(server.url, server.enrollment_token, "agent-1")
    await agent.connect()
    ack = await agent.register()
    job = await agent.next("install_software")
    await agent.report(job["deployment_id"], "completed", 100)
    await agent.close()
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from typing import Any

import aiohttp
import socketio

import protocol

TIMEOUT = 10.0
_hosts = itertools.count(1)


class SocketClient:
    """A connected Socket.IO client that records every event it receives."""

    def __init__(self, url: str, role: str, token: str | None) -> None:
        self.url = url
        self.role = role
        self.token = token
        self.sio = socketio.AsyncClient(reconnection=False)
        self.queues: defaultdict[str, asyncio.Queue] = defaultdict(asyncio.Queue)
        self.history: list[tuple[str, Any]] = []
        self.disconnected = asyncio.Event()
        self.refusals: list[Any] = []
        """What the server said when it refused a connection (`connect_error`)."""
        self.sio.on("*", self._on_any)
        self.sio.on("disconnect", self._on_disconnect)
        self.sio.on("connect_error", self._on_connect_error)

    async def _on_any(self, event: str, data: Any = None) -> None:
        self.history.append((event, data))
        self.queues[event].put_nowait(data)

    async def _on_connect_error(self, data: Any = None) -> None:
        self.refusals.append(data)

    async def _on_disconnect(self, reason: Any = None) -> None:
        self.disconnected.set()

    async def connect(self, auth: Any = ...) -> None:
        """Connect over websocket; raises socketio.exceptions.ConnectionError."""
        if auth is ...:
            auth = {"role": self.role, "token": self.token}
        await self.sio.connect(
            self.url, auth=auth, transports=["websocket"], wait_timeout=TIMEOUT
        )

    @property
    def sid(self) -> str | None:
        return self.sio.get_sid()

    async def call(self, event: str, data: Any = None) -> Any:
        """Emit `event` and return the server's acknowledgement."""
        return await self.sio.call(event, data, timeout=TIMEOUT)

    async def next(self, event: str, wait: float = TIMEOUT) -> Any:
        """The next `event` received, waiting at most `wait` seconds."""
        async with asyncio.timeout(wait):
            return await self.queues[event].get()

    def pending(self, event: str) -> int:
        """How many `event`s arrived and were not taken with `next` yet."""
        return self.queues[event].qsize()

    async def close(self) -> None:
        """Disconnect (if connected) and stop any reconnection attempts."""
        await self.sio.shutdown()


class FakeAgent(SocketClient):
    """An agent that registers and reports as told; it installs nothing."""

    def __init__(
        self,
        url: str,
        token: str | None,
        agent_id: str = "agent-1",
        hostname: str | None = None,
        platform: str = "linux",
    ) -> None:
        super().__init__(url, "agent", token)
        self.agent_id = agent_id
        self.hostname = hostname or f"pc-{next(_hosts)}"
        self.platform = platform
        self.device_id: int | None = None

    def registration(self, **overrides: Any) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "hostname": self.hostname,
            "platform": self.platform,
            "os_version": "test",
            "agent_version": "0.0-test",
            **overrides,
        }

    async def register(self, **overrides: Any) -> dict[str, Any]:
        """Send `agent_register`; return the ack (and keep the device id)."""
        ack = await self.call(protocol.AGENT_REGISTER, self.registration(**overrides))
        if ack.get("ok"):
            self.device_id = ack["device_id"]
        return ack

    async def report(
        self,
        deployment_id: int,
        status: str,
        progress: float,
        device_id: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Send `software_installation_status`; return the ack."""
        payload = {
            "deployment_id": deployment_id,
            "device_id": device_id if device_id is not None else self.device_id,
            "status": status,
            "progress": progress,
            **extra,
        }
        return await self.call(protocol.SOFTWARE_INSTALLATION_STATUS, payload)

    async def sync(self) -> None:
        """Round trip to the server: events it sent before this call have arrived."""
        await self.call(protocol.JOIN_ROOM, {"room": self.agent_id})


class ConsoleClient(SocketClient):
    """A remote console: joins room `consoles` with the admin token."""

    def __init__(self, url: str, token: str | None) -> None:
        super().__init__(url, "console", token)


async def connected_agent(
    server: Any, agent_id: str = "agent-1", **kw: Any
) -> FakeAgent:
    """A FakeAgent connected and registered to `server` (a started DeployServer)."""
    agent = FakeAgent(server.url, server.enrollment_token, agent_id, **kw)
    await agent.connect()
    ack = await agent.register()
    assert ack["ok"], ack
    return agent


def write_installer(path, content: bytes = b"#!/bin/sh\necho installed\n"):
    """A small installer file on disk; returns its path."""
    path.write_bytes(content)
    return path


class RawSocket:
    """A client speaking Engine.IO over a websocket by hand, to send what no
    well-behaved Socket.IO client would (broken JSON, `42[]`, reserved names)::

        raw = RawSocket(server.url)
        await raw.open()
        await raw.join({"role": "agent", "token": token})   # "40{...}"
        await raw.send('421["agent_register"]')
        assert (await raw.ack(1)) == [{"ok": False, "error": ...}]
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sid: str | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        self._ws = await self._http.ws_connect(
            f"{self.url}/socket.io/?EIO=4&transport=websocket"
        )
        opening = await self.receive()
        assert opening.startswith("0"), opening

    async def join(self, auth: Any) -> None:
        """Connect to namespace "/" (Socket.IO CONNECT) and wait for the answer."""
        await self.send("40" + json.dumps(auth))
        answer = await self.receive()
        assert answer.startswith("40"), answer
        self.sid = json.loads(answer[2:])["sid"]

    async def send(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def receive(self) -> str:
        """The next Engine.IO text message (pings are answered on the way)."""
        assert self._ws is not None
        async with asyncio.timeout(TIMEOUT):
            while True:
                message = await self._ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"websocket ended: {message.type!r}")
                if message.data == "2":
                    await self.send("3")
                    continue
                return message.data

    async def ack(self, ack_id: int) -> Any:
        """The arguments of the acknowledgement with `ack_id` (Socket.IO ACK)."""
        prefix = f"43{ack_id}"
        while True:
            text = await self.receive()
            if text.startswith(prefix) and text[len(prefix) : len(prefix) + 1] == "[":
                return json.loads(text[len(prefix) :])

    async def event(self, name: str) -> Any:
        """The first argument of the next Socket.IO EVENT called `name`."""
        while True:
            text = await self.receive()
            if text.startswith("42["):
                event, *args = json.loads(text[2:])
                if event == name:
                    return args[0] if args else None

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
