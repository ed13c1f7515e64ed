"""Status ingestion: reports are checked in memory and written in batches.

What an agent sees acknowledged is in the database; consoles hear of it only after
it is written; a database that refuses a write (locked by another program) delays
the acknowledgement but loses nothing.
"""

import asyncio
import logging
import sqlite3

import pytest

import protocol
from tests.helpers import ConsoleClient, FakeAgent


async def _deploy(server, package, agents):
    deployment = await server.create_deployment(
        [package["id"]], [a.device_id for a in agents]
    )
    for agent in agents:
        await agent.next(protocol.INSTALL_SOFTWARE)
    return deployment


def _target_rows(server, deployment_id):
    with sqlite3.connect(server.config.sqlite_path) as conn:
        return conn.execute(
            "SELECT device_id, status, progress_percent FROM deployment_targets"
            " WHERE deployment_id = ? ORDER BY device_id",
            (deployment_id,),
        ).fetchall()


async def _emit_status(agent, deployment_id, status, progress) -> asyncio.Future:
    """Send a status report now; the future gets the server's answer."""
    answered = asyncio.get_running_loop().create_future()
    await agent.sio.emit(
        protocol.SOFTWARE_INSTALLATION_STATUS,
        {
            "deployment_id": deployment_id,
            "device_id": agent.device_id,
            "status": status,
            "progress": progress,
        },
        callback=answered.set_result,
    )
    return answered


class _LogWaiter(logging.Handler):
    """Sets an asyncio.Event when a record containing `text` is logged."""

    def __init__(self, text: str) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.seen = asyncio.Event()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.records.append(record)
            self.seen.set()


async def test_concurrent_reports_of_many_agents_are_all_written(
    server, package, agent_factory
):
    agents = [await agent_factory(f"agent-{i}") for i in range(12)]
    deployment = await _deploy(server, package, agents)

    acks = await asyncio.gather(
        *(a.report(deployment["id"], "installing", 60) for a in agents)
    )
    acks += await asyncio.gather(
        *(a.report(deployment["id"], "completed", 100) for a in agents)
    )

    assert all(ack == {"ok": True} for ack in acks)
    rows = _target_rows(server, deployment["id"])
    assert [(status, progress) for _, status, progress in rows] == [
        ("success", 100.0)
    ] * 12
    final = await server.get_deployment(deployment["id"])
    assert (final["status"], final["counts"]["success"]) == ("completed", 12)


async def test_acknowledged_progress_is_already_in_the_database(
    server, package, agent_factory
):
    agent = await agent_factory()
    deployment = await _deploy(server, package, [agent])

    await agent.report(deployment["id"], "installing", 42)

    assert _target_rows(server, deployment["id"]) == [
        (agent.device_id, "in_progress", 42.0)
    ]


async def test_console_update_carries_agent_status_and_hostname(
    server, package, agent_factory
):
    console = ConsoleClient(server.url, server.admin_token)
    await console.connect()
    agent = await agent_factory(hostname="WS-HR-01")
    deployment = await _deploy(server, package, [agent])

    await agent.report(deployment["id"], "downloading", 20)

    update = await console.next(protocol.SOFTWARE_DEPLOYMENT_UPDATE)
    while update.get("agent_status") is None:
        update = await console.next(protocol.SOFTWARE_DEPLOYMENT_UPDATE)
    assert update["agent_status"] == "downloading"
    assert update["status"] == "in_progress"
    assert update["hostname"] == "WS-HR-01"
    await console.close()


async def test_deployment_running_before_a_restart_takes_reports_after_it(
    server_factory, tmp_path, package_file
):
    data_dir = tmp_path / "data"
    first = await server_factory(data_dir=data_dir, enrollment_token="e")
    software = await first.add_software(
        package_file, name="Hello", installer_type="script"
    )
    agents = []
    for name in ("agent-a", "agent-b"):
        agent = FakeAgent(first.url, "e", name)
        await agent.connect()
        await agent.register()
        agents.append(agent)
    deployment = await _deploy(first, software, agents)
    await agents[0].report(deployment["id"], "completed", 100)
    for agent in agents:
        await agent.close()
    await first.stop()

    second = await server_factory(data_dir=data_dir, enrollment_token="e")
    late = FakeAgent(second.url, "e", "agent-b")
    await late.connect()
    await late.register()
    ack = await late.report(deployment["id"], "completed", 100)

    assert ack == {"ok": True}
    final = await second.get_deployment(deployment["id"])
    assert (final["status"], final["counts"]["success"]) == ("completed", 2)
    await late.close()


class _Locked:
    """A server whose SQLite file another program holds locked, an agent, and one
    deployment to it; `retried` is set when the server logs that it will retry."""

    def __init__(self, server, agent, deployment, waiter, other_program):
        self.server, self.agent, self.deployment = server, agent, deployment
        self.retried = waiter.seen
        self.retry_lines = waiter.records
        self._other_program = other_program

    def unlock(self) -> None:
        self._other_program.execute("ROLLBACK")


@pytest.fixture
async def locked_database(server_factory, tmp_path, package_file):
    server = await server_factory(data_dir=tmp_path / "data", sqlite_busy_timeout_ms=50)
    software = await server.add_software(
        package_file, name="Hello", installer_type="script"
    )
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    await agent.register()
    deployment = await _deploy(server, software, [agent])
    waiter = _LogWaiter("will retry")
    logging.getLogger("server.ingest").addHandler(waiter)
    other_program = sqlite3.connect(server.config.sqlite_path, isolation_level=None)
    other_program.execute("BEGIN EXCLUSIVE")
    try:
        yield _Locked(server, agent, deployment, waiter, other_program)
    finally:
        other_program.close()
        logging.getLogger("server.ingest").removeHandler(waiter)
        await agent.close()


async def test_final_status_waits_for_a_locked_database_and_is_kept(locked_database):
    db = locked_database
    deployment_id = db.deployment["id"]

    report = asyncio.create_task(
        db.agent.report(deployment_id, "failed", 50, exit_code=1603)
    )
    await asyncio.wait_for(db.retried.wait(), 10)
    unanswered = not report.done()
    db.unlock()
    ack = await report

    assert unanswered
    assert ack == {"ok": True}
    assert len(db.retry_lines) == 1
    assert _target_rows(db.server, deployment_id) == [
        (db.agent.device_id, "failed", 50.0)
    ]


async def test_final_resent_while_the_first_is_written_is_answered_as_finished(
    locked_database,
):
    # One connection's events are handled one at a time: the re-sent final is
    # read only once the first is written and answered, and is then refused as
    # already finished (which agents take as delivered), not written twice.
    db = locked_database
    deployment_id = db.deployment["id"]

    first = asyncio.create_task(db.agent.report(deployment_id, "completed", 100))
    await asyncio.wait_for(db.retried.wait(), 10)
    again = await _emit_status(db.agent, deployment_id, "completed", 100)
    db.unlock()
    acks = await asyncio.wait_for(asyncio.gather(first, again), 10)

    assert acks[0] == {"ok": True}
    assert acks[1]["ok"] is False
    assert acks[1]["code"] == protocol.TARGET_FINISHED
    assert _target_rows(db.server, deployment_id) == [
        (db.agent.device_id, "success", 100.0)
    ]


async def test_failed_target_is_logged_with_hostname_and_device_id(
    server, package, agent_factory, caplog
):
    agent = await agent_factory(hostname="WS-HR-01")
    deployment = await _deploy(server, package, [agent])
    caplog.set_level(logging.INFO, logger="server")

    await agent.report(deployment["id"], "failed", 80, exit_code=1603)

    assert (
        f"deployment {deployment['id']}: WS-HR-01 (device {agent.device_id}) "
        "failed with exit code 1603"
    ) in caplog.text


async def test_deployment_heard_finished_is_finished_on_disk(
    server_factory, tmp_path, package_file
):
    # The last report arrives while the batch before it is being written (held
    # up by another program's lock): consoles may hear "completed" only once
    # that last report is on disk too.
    server = await server_factory(
        data_dir=tmp_path / "data", sqlite_busy_timeout_ms=30_000
    )
    software = await server.add_software(
        package_file, name="Hello", installer_type="script"
    )
    agents = [FakeAgent(server.url, server.enrollment_token, n) for n in "ab"]
    for agent in agents:
        await agent.connect()
        await agent.register()
    deployment = await _deploy(server, software, agents)
    on_disk_when_heard: list = []
    finished = asyncio.Event()

    def listener(event, payload):
        if event == protocol.DEPLOYMENT_UPDATE and payload["status"] == "completed":
            on_disk_when_heard.extend(_target_rows(server, deployment["id"]))
            finished.set()

    server.add_listener(listener)
    other_program = sqlite3.connect(server.config.sqlite_path, isolation_level=None)
    other_program.execute("BEGIN EXCLUSIVE")
    first = asyncio.create_task(agents[0].report(deployment["id"], "completed", 100))
    await agents[0].sync()  # its batch is being written, waiting for the lock
    second = asyncio.create_task(agents[1].report(deployment["id"], "completed", 100))
    await agents[1].sync()  # applied in memory, for the next batch
    other_program.execute("ROLLBACK")
    other_program.close()

    assert await asyncio.gather(first, second) == [{"ok": True}] * 2
    async with asyncio.timeout(10):
        await finished.wait()
    assert [status for _, status, _ in on_disk_when_heard] == ["success"] * 2
    for agent in agents:
        await agent.close()
