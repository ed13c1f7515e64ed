"""The embedded server, in its own process or on its own thread: calls, errors,
events, logs and shutdown cross cleanly.

Real `DeployServer` on loopback behind `ProcessServer` (a real child process) and
`ThreadedServer`, real Socket.IO agent clients on the console's qasync loop, real
SQLite files. What both must do is tested on both (`embedded`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import os
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from console.embedded import EmbeddedServer
from console.loop import SharedInterpreter, shared_interpreter
from console.server_process import ProcessServer, ServerProcessError
from console.server_thread import THREAD_NAME, ThreadedServer
from console.session import ConsoleSession
from protocol import DEVICE_UPDATE, SOFTWARE_DEPLOYMENT_UPDATE
from server.config import ServerConfig
from server.errors import DataDirError, NotFoundError, PortInUseError
from tests.console.conftest import WAIT_S, until
from tests.console.fake_agent import FakeAgent

REPO = Path(__file__).resolve().parents[2]


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


def _threads_left_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since `before` that are still alive once they have had
    `WAIT_S` to end (the database driver's worker ends right after its close)."""
    new = [t for t in threading.enumerate() if t not in before]
    for thread in new:
        thread.join(WAIT_S)
    return [t for t in new if t.is_alive()]


@pytest.fixture
def config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data")


@pytest.fixture
async def threaded(config: ServerConfig) -> AsyncIterator[ThreadedServer]:
    server = ThreadedServer(config)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=[ProcessServer, ThreadedServer], ids=["process", "thread"])
async def embedded(request, config: ServerConfig) -> AsyncIterator[EmbeddedServer]:
    server = request.param(config)
    await server.start()
    yield server
    await server.stop()


def _children() -> list[psutil.Process]:
    """Child processes of this one, except multiprocessing's resource tracker
    (started with the first spawned process, it lives until this one ends)."""
    return [
        child
        for child in psutil.Process().children(recursive=True)
        if "resource_tracker" not in " ".join(_cmdline(child))
    ]


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:  # ended meanwhile
        return []


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


class Recorder:
    """A listener that notes each event with the thread it was called on."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], int]] = []
        self.changed = asyncio.Event()

    def __call__(self, event: str, payload: dict[str, Any]) -> None:
        self.calls.append((event, payload, threading.get_ident()))
        self.changed.set()

    async def wait_for(self, predicate) -> None:
        async with asyncio.timeout(WAIT_S):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

    def payloads(self, event: str) -> list[dict[str, Any]]:
        return [p for e, p, _ in self.calls if e == event]


async def _agent(server: EmbeddedServer, agent_id: str) -> FakeAgent:
    return await FakeAgent(
        server.url, server.enrollment_token, agent_id, agent_id
    ).connect()


# --- start and stop ------------------------------------------------------------


async def test_runs_the_server_on_a_thread_of_its_own(threaded):
    server_thread = await threaded.on_server_loop(lambda _s: threading.current_thread())

    assert server_thread.name == THREAD_NAME
    assert server_thread is not threading.current_thread()
    assert threaded.url == f"http://127.0.0.1:{threaded.port}"


async def test_port_in_use_reaches_the_caller_and_leaves_no_thread(config, taken_port):
    before = set(threading.enumerate())
    server = ThreadedServer(dataclasses.replace(config, port=taken_port))

    with pytest.raises(PortInUseError, match=f"Port {taken_port} is already used"):
        await server.start()

    assert _server_threads() == []
    assert _threads_left_since(before) == []
    assert not server.running


async def test_unusable_data_folder_reaches_the_caller_and_leaves_no_thread(
    tmp_path,
):
    blocker = tmp_path / "a-file"
    blocker.write_text("where the data folder should be")
    before = set(threading.enumerate())
    server = ThreadedServer(ServerConfig(port=0, data_dir=blocker / "data"))

    with pytest.raises(DataDirError):
        await server.start()

    assert _server_threads() == []
    assert _threads_left_since(before) == []


async def test_stop_ends_the_server_thread_and_every_thread_it_started(config):
    before = set(threading.enumerate())
    server = ThreadedServer(config)
    await server.start()
    agent = await _agent(server, "agent-1")

    await server.stop()

    assert _server_threads() == []
    await asyncio.wait_for(agent.disconnected.wait(), WAIT_S)
    await agent.close()
    assert _threads_left_since(before) == []
    await server.stop()  # a second stop does nothing


FORGETFUL_CONSOLE = """
import asyncio, logging, sys
from pathlib import Path
from PySide6.QtWidgets import QApplication
from console.loop import new_event_loop
from console.server_thread import ThreadedServer
from server.config import ServerConfig

async def main():
    config = ServerConfig(host="127.0.0.1", port=0, data_dir=Path(sys.argv[1]))
    server = ThreadedServer(config)
    await server.start()
    print("listening", flush=True)  # and returns without stop()

logging.basicConfig(level=logging.WARNING)
app = QApplication([])
with asyncio.Runner(loop_factory=lambda: new_event_loop(app)) as runner:
    runner.run(main())
"""


def test_a_console_that_ends_without_stop_still_lets_the_process_exit(tmp_path):
    """The server thread is not a daemon: had it no watch on the console's
    thread, a console ending by an uncaught error would hang at exit."""
    result = subprocess.run(
        [sys.executable, "-c", FORGETFUL_CONSOLE, str(tmp_path / "data")],
        cwd=REPO,
        env={**os.environ, "QT_QPA_PLATFORM": "offscreen"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "listening"
    assert "the console ended without stopping its server" in result.stderr


async def test_a_stopped_server_can_be_replaced_on_the_same_folder(config):
    first = ThreadedServer(config)
    await first.start()
    software = await first.list_software()
    await first.stop()

    second = ThreadedServer(config)
    await second.start()
    try:
        assert await second.list_software() == software
        assert second.admin_token == first.admin_token
    finally:
        await second.stop()


async def test_collection_runs_on_the_console_thread_while_the_thread_server_runs(
    config,
):
    enabled_before, interval_before = gc.isenabled(), sys.getswitchinterval()
    server = ThreadedServer(config)
    await server.start()
    try:
        assert not gc.isenabled()
        assert sys.getswitchinterval() <= SharedInterpreter.SWITCH_INTERVAL_S
    finally:
        await server.stop()

    assert gc.isenabled() == enabled_before
    assert sys.getswitchinterval() == interval_before


async def test_a_console_collects_garbage_on_its_own_thread_whatever_the_server(
    qapp, config
):
    """Executor threads (hashing, removing folders) must not run a collection that
    could destroy one of the window's Qt objects (see GuiThreadCollector)."""
    enabled_before = gc.isenabled()
    session = ConsoleSession(config)
    await session.start()
    try:
        assert isinstance(session.server, ProcessServer)
        assert not gc.isenabled()
    finally:
        await session.stop()

    assert gc.isenabled() == enabled_before


async def test_garbage_is_collected_on_the_console_thread_while_a_server_process_runs(
    qapp, config
):
    """Its pipe's reader thread allocates: no collection may run there."""
    enabled_before = gc.isenabled()
    server = ProcessServer(config)
    await server.start()
    try:
        assert not gc.isenabled()
    finally:
        await server.stop()

    assert gc.isenabled() == enabled_before


def test_the_collector_collects_what_is_due_and_nothing_else(qapp):
    shared_interpreter.acquire()  # automatic collection off, as with a server
    try:
        gc.collect()
        nothing_due = shared_interpreter.collect_due()
        for _ in range(gc.get_threshold()[0] + 10):
            cycle: list[Any] = []
            cycle.append(cycle)
        counted = gc.get_count()[0]
        collected = shared_interpreter.collect_due()
    finally:
        shared_interpreter.release()

    assert nothing_due is None
    assert counted > gc.get_threshold()[0]
    assert collected in (0, 1, 2)


# --- the server process -----------------------------------------------------------


async def test_runs_the_server_in_a_process_of_its_own(config):
    server = ProcessServer(config)
    await server.start()
    try:
        child = psutil.Process(server.pid)
        assert server.pid != os.getpid()
        assert child in _children()
        agent = await _agent(server, "agent-1")
        await agent.close()
    finally:
        await server.stop()

    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert _children() == []
    await server.stop()  # a second stop does nothing


async def test_port_in_use_reaches_the_caller_and_leaves_no_process(config, taken_port):
    server = ProcessServer(dataclasses.replace(config, port=taken_port))

    with pytest.raises(PortInUseError, match=f"Port {taken_port} is already used"):
        await server.start()

    assert _children() == []
    assert not server.running


async def test_unusable_data_folder_reaches_the_caller_from_the_process(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("where the data folder should be")
    server = ProcessServer(ServerConfig(port=0, data_dir=blocker / "data"))

    with pytest.raises(DataDirError):
        await server.start()

    assert _children() == []


async def test_the_servers_log_lines_reach_the_consoles_logging(config, caplog):
    caplog.set_level("INFO", logger="server")
    server = ProcessServer(config)
    await server.start()
    await server.stop()

    lines = [(r.name, r.getMessage()) for r in caplog.records]
    assert ("server.app", f"server listening on {server.url}") in [
        (name, message.split(" (")[0]) for name, message in lines
    ]
    assert ("server.app", "server stopped") in lines


async def test_a_server_process_that_dies_fails_the_calls_with_a_clear_error(
    config, caplog
):
    server = ProcessServer(config)
    await server.start()
    child = psutil.Process(server.pid)

    child.kill()
    assert await asyncio.wait_for(server.wait_exited(), WAIT_S) == -9

    with pytest.raises(ServerProcessError, match="not running"):
        await server.list_devices()
    assert any(
        "server process ended unexpectedly" in r.getMessage() for r in caplog.records
    )
    caplog.clear()  # the logged error is what this test expects
    await server.stop()
    assert _children() == []


CONSOLE_WITH_A_SERVER = """
import asyncio, os, sys
from pathlib import Path
from console.server_process import ProcessServer
from server.config import ServerConfig

async def main():
    config = ServerConfig(host="127.0.0.1", port=0, data_dir=Path(sys.argv[1]))
    server = ProcessServer(config)
    await server.start()
    print(server.pid, flush=True)
    sys.stdin.readline()
    {ending}

if __name__ == "__main__":
    asyncio.run(main())
"""


async def _console_with_a_server(
    tmp_path: Path, ending: str
) -> tuple[asyncio.subprocess.Process, psutil.Process]:
    """A console process with a started `ProcessServer` that, once told (a line
    on its stdin), ends as `ending` says; the console and its server process."""
    script = tmp_path / "console_with_a_server.py"
    script.write_text(CONSOLE_WITH_A_SERVER.format(ending=ending))
    console = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(tmp_path / "data"),
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert console.stdout is not None
    line = await asyncio.wait_for(console.stdout.readline(), WAIT_S)
    return console, psutil.Process(int(line))


async def _tell_to_end(console: asyncio.subprocess.Process) -> int:
    assert console.stdin is not None
    console.stdin.write(b"end\n")
    await console.stdin.drain()
    return await asyncio.wait_for(console.wait(), WAIT_S)


async def test_a_console_that_ends_without_stop_exits_and_stops_its_server(tmp_path):
    """Nothing may wait at exit for the pipe (the reader thread is a daemon);
    multiprocessing's exit handler then ends the server, which stops cleanly."""
    console, server = await _console_with_a_server(
        tmp_path, "raise SystemExit(5)  # as a broken loop would: no stop()"
    )

    assert await _tell_to_end(console) == 5
    await asyncio.to_thread(server.wait, WAIT_S)  # raises if it is still running


async def test_a_console_that_dies_leaves_no_server_behind(tmp_path):
    """The console's end of the pipe closes with its process, however it ends; the
    server then stops by itself and exits, leaving its data folder free."""
    console, server = await _console_with_a_server(
        tmp_path, "os._exit(3)  # as a crash would: no stop(), no exit handlers"
    )

    assert await _tell_to_end(console) == 3
    # Not our child (the console was its parent): no exit code, only its end.
    await asyncio.to_thread(server.wait, WAIT_S)  # raises if it is still running
    assert not server.is_running()
    again = ProcessServer(ServerConfig(port=0, data_dir=tmp_path / "data"))
    await again.start()  # the folder and its database are free
    await again.stop()


# --- calls ------------------------------------------------------------------------


async def test_calls_return_the_servers_answers(embedded, tmp_path):
    installer = tmp_path / "tool-1.0.sh"
    installer.write_text("#!/bin/sh\necho installed\n")
    fractions: list[tuple[float, int]] = []

    row = await embedded.add_software(
        installer,
        name="Tool",
        version="1.0",
        installer_type="script",
        progress=lambda f: fractions.append((f, threading.get_ident())),
    )

    assert await embedded.list_software() == [row]
    assert fractions[-1][0] == 1.0
    assert {ident for _, ident in fractions} == {threading.get_ident()}


async def test_server_errors_reach_the_caller_unchanged(embedded):
    with pytest.raises(NotFoundError, match="No deployment with id 12345"):
        await embedded.get_deployment(12345)


async def test_a_new_enrollment_token_is_the_one_agents_need(embedded):
    old = embedded.enrollment_token

    new = await embedded.regenerate_enrollment_token()

    assert embedded.enrollment_token == new != old
    agent = await _agent(embedded, "agent-new-token")
    await agent.close()


# --- listeners ----------------------------------------------------------------


async def test_listeners_are_called_on_the_console_thread_in_the_servers_order(
    embedded, tmp_path
):
    recorder = Recorder()
    embedded.add_listener(recorder)
    agents = [await _agent(embedded, f"agent-{n}") for n in range(1, 6)]
    installer = tmp_path / "tool-1.0.sh"
    installer.write_text("#!/bin/sh\necho installed\n")
    software = await embedded.add_software(
        installer, name="Tool", version="1.0", installer_type="script"
    )
    deployment = await embedded.create_deployment(
        [software["id"]], [agents[0].device_id]
    )
    await asyncio.wait_for(agents[0].jobs.get(), WAIT_S)
    steps = [10, 20, 30, 40, 50, 60, 70, 80, 90]
    for progress in steps:
        await agents[0].report(deployment["id"], "downloading", progress)
    try:
        await recorder.wait_for(
            lambda: any(
                p["progress"] == steps[-1]
                for p in recorder.payloads(SOFTWARE_DEPLOYMENT_UPDATE)
            )
        )
    finally:
        for agent in agents:
            await agent.close()

    assert {ident for _, _, ident in recorder.calls} == {threading.get_ident()}
    registered = [p["agent_id"] for p in recorder.payloads(DEVICE_UPDATE)][:5]
    assert registered == [f"agent-{n}" for n in range(1, 6)]
    progress = [
        p["progress"]
        for p in recorder.payloads(SOFTWARE_DEPLOYMENT_UPDATE)
        if p["status"] == "in_progress"
    ]
    assert progress == steps


async def test_no_event_reaches_a_listener_after_it_unsubscribed(embedded):
    leaving, staying = Recorder(), Recorder()
    unsubscribe = embedded.add_listener(leaving)
    embedded.add_listener(staying)
    first = await _agent(embedded, "agent-1")
    await leaving.wait_for(lambda: leaving.payloads(DEVICE_UPDATE))

    unsubscribe()
    seen_before = len(leaving.calls)
    second = await _agent(embedded, "agent-2")
    await staying.wait_for(
        lambda: any(p["agent_id"] == "agent-2" for p in staying.payloads(DEVICE_UPDATE))
    )
    for agent in (first, second):
        await agent.close()

    assert len(leaving.calls) == seen_before


async def test_a_failing_listener_does_not_stop_the_others(embedded, caplog):
    def broken(event: str, payload: dict[str, Any]) -> None:
        raise ValueError("a bug in one listener")

    recorder = Recorder()
    embedded.add_listener(broken)
    embedded.add_listener(recorder)

    agent = await _agent(embedded, "agent-1")
    await recorder.wait_for(lambda: recorder.payloads(DEVICE_UPDATE))
    await agent.close()

    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert failures and failures[0].exc_info[0] is ValueError
    caplog.clear()  # the logged error is what this test expects


# --- the window -----------------------------------------------------------------


async def test_an_agent_of_the_server_process_appears_in_the_device_model(
    session, agents
):
    assert isinstance(session.server, ProcessServer)
    assert session.server.pid in [child.pid for child in _children()]
    model = session.window.devices

    agent = await agents("agent-process", "PC-PROCESS-01")
    await until(lambda: model.row_of(agent.device_id) is not None, model.rowsInserted)

    assert model.device(agent.device_id).online


async def test_a_lost_server_process_is_reported_and_started_again(session, caplog):
    """The technician is told, and the console carries on with a new server on
    the same data folder (here port 0: a new free port)."""
    lost = session.server
    devices_before = await lost.list_devices()
    attached: asyncio.Future = asyncio.get_running_loop().create_future()
    session.window.server_attached.connect(
        lambda server: attached.done() or attached.set_result(server)
    )

    await session.window.tasks.join()  # the window has loaded its lists

    psutil.Process(lost.pid).kill()
    replacement = await asyncio.wait_for(attached, WAIT_S)

    assert replacement is session.server is not lost
    assert replacement.running and replacement.pid != lost.pid
    assert "stopped unexpectedly" in session.window.statusBar().currentMessage()
    assert await replacement.list_devices() == devices_before
    assert lost.pid not in [child.pid for child in _children()]
    caplog.clear()  # the logged loss is what this test expects
