"""Console tests: real Qt widgets offscreen on a qasync loop, a real embedded server.

Async tests and fixtures in this folder run on the console's own loop
(`console.loop`, a `qasync.QEventLoop`, through pytest-asyncio's loop-factory
hook), so awaiting in a test also runs Qt's event processing: widgets paint,
timers fire, signals arrive. Wait with `until()`, never with sleeps or
`qtbot.wait*` (a nested Qt loop inside a coroutine).
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # before any Qt import

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import SignalInstance
from PySide6.QtWidgets import QApplication

from console.loop import ConsoleEventLoop, new_event_loop
from console.session import ConsoleSession
from server.config import ServerConfig
from tests.console.fake_agent import FakeAgent

WAIT_S = 15


def pytest_asyncio_loop_factories(config: Any, item: Any) -> dict[str, Callable]:
    def qt_loop() -> ConsoleEventLoop:
        app = QApplication.instance() or QApplication([])
        return new_event_loop(app)

    return {"qasync": qt_loop}


async def until(
    predicate: Callable[[], Any],
    *signals: SignalInstance,
    timeout_s: float = WAIT_S,
) -> None:
    """Return once `predicate()` is true, re-checking whenever a signal fires."""
    if predicate():
        return
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def check(*_args: object) -> None:
        if not done.done() and predicate():
            done.set_result(None)

    for signal in signals:
        signal.connect(check)
    try:
        await asyncio.wait_for(done, timeout_s)
    finally:
        for signal in signals:
            with contextlib.suppress(RuntimeError):  # the sender is already gone
                signal.disconnect(check)


async def next_emission(signal: SignalInstance, timeout_s: float = WAIT_S) -> tuple:
    """The arguments of the next emission of `signal`."""
    got: asyncio.Future[tuple] = asyncio.get_running_loop().create_future()

    def on_signal(*args: object) -> None:
        if not got.done():
            got.set_result(args)

    signal.connect(on_signal)
    try:
        return await asyncio.wait_for(got, timeout_s)
    finally:
        with contextlib.suppress(RuntimeError):  # the sender is already gone
            signal.disconnect(on_signal)


@pytest.fixture
async def session(qapp: QApplication, tmp_path: Path) -> AsyncIterator[ConsoleSession]:
    """The console as `deploy-console` runs it: window plus embedded server."""
    console = ConsoleSession(
        ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data")
    )
    await console.start()
    console.window.show()
    yield console
    await console.stop()


@pytest.fixture
async def agents(session: ConsoleSession) -> AsyncIterator[Callable]:
    """Connect real Socket.IO agent clients to the session's server."""
    started: list[FakeAgent] = []

    async def connect(agent_id: str, hostname: str | None = None) -> FakeAgent:
        server = session.server
        agent = FakeAgent(
            server.url, server.enrollment_token, agent_id, hostname or agent_id
        )
        started.append(agent)
        return await agent.connect()

    yield connect
    # Let the server record each disconnect before the session stops it.
    model = session.window.devices
    for agent in started:
        await agent.close()
    if session.server is not None:
        await until(lambda: model.online_count == 0, model.online_count_changed)
