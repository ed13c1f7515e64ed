"""Start, stop and restart: database schema, tokens, and environment faults."""

import asyncio
import functools
import gc
import json
import sqlite3
import stat
import warnings

import pytest
import socketio

from server.app import DeployServer
from server.config import ServerConfig
from server.errors import DatabaseTooNewError, DataDirError, PortInUseError
from tests.helpers import FakeAgent, write_installer

DESIGN_COLUMNS = {
    "devices": {
        "id", "agent_id", "hostname", "platform", "os_version", "agent_version",
        "ip", "mac", "online", "last_seen",
    },
    "software": {
        "id", "name", "version", "file_name", "sha256", "size", "installer_type",
        "install_args", "timeout_s", "added_at",
    },
    "deployments": {
        "id", "deployment_name", "status", "created_at", "started_at", "completed_at",
    },
    "deployment_targets": {
        "id", "deployment_id", "device_id", "status", "progress_percent", "message",
        "exit_code", "reboot_required", "started_at", "completed_at",
    },
    "deployment_software": {"id", "deployment_id", "software_id", "position"},
}  # fmt: skip


def _query(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_migration_creates_the_design_tables(server):
    path = server.config.sqlite_path

    for table, columns in DESIGN_COLUMNS.items():
        found = {row[1] for row in _query(path, f"PRAGMA table_info({table})")}
        assert columns <= found, table


async def test_sqlite_runs_in_wal_mode(server):
    assert _query(server.config.sqlite_path, "PRAGMA journal_mode") == [("wal",)]


async def test_restart_keeps_devices_packages_and_tokens(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    first = await server_factory(data_dir=data_dir)
    agent = FakeAgent(first.url, first.enrollment_token, "agent-a")
    await agent.connect()
    await agent.register()
    await agent.close()
    await first.add_software(
        write_installer(tmp_path / "a.sh"), name="A", installer_type="script"
    )
    tokens = (first.enrollment_token, first.admin_token)
    await first.stop()

    second = await server_factory(data_dir=data_dir)

    assert [d["agent_id"] for d in await second.list_devices()] == ["agent-a"]
    assert [s["name"] for s in await second.list_software()] == ["A"]
    assert (second.enrollment_token, second.admin_token) == tokens
    assert second.tokens_generated is False


async def test_restart_shows_every_device_offline(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    first = await server_factory(data_dir=data_dir)
    agent = FakeAgent(first.url, first.enrollment_token, "agent-a")
    await agent.connect()
    await agent.register()
    await agent.close()
    await first.stop()
    with sqlite3.connect(data_dir / "deploy.db") as conn:
        conn.execute("UPDATE devices SET online = 1")  # as after a crash

    second = await server_factory(data_dir=data_dir)

    assert [d["online"] for d in await second.list_devices()] == [False]


async def test_database_from_newer_version_is_refused(server_factory, tmp_path):
    data_dir = tmp_path / "data"
    first = await server_factory(data_dir=data_dir)
    await first.stop()
    with sqlite3.connect(data_dir / "deploy.db") as conn:
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")

    with pytest.raises(DatabaseTooNewError, match="newer Deploy Console"):
        await server_factory(data_dir=data_dir)

    assert _query(
        data_dir / "deploy.db", "SELECT version_num FROM alembic_version"
    ) == [("9999_future",)]


async def test_port_in_use_is_a_clear_error(server_factory, server):
    with pytest.raises(PortInUseError, match=str(server.port)):
        await server_factory(port=server.port)


async def test_unusable_data_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    server = DeployServer(
        ServerConfig(host="127.0.0.1", port=0, data_dir=blocker / "x")
    )

    with pytest.raises(DataDirError, match="cannot be used"):
        await server.start()


async def test_generated_tokens_are_kept_private(server):
    path = server.config.data_dir / "tokens.json"

    stored = json.loads(path.read_text())

    assert server.tokens_generated is True
    assert stored == {
        "enrollment": server.enrollment_token,
        "admin": server.admin_token,
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_configured_tokens_are_used_and_not_stored(server_factory):
    server = await server_factory(enrollment_token="enroll-me", admin_token="boss")

    assert (server.enrollment_token, server.admin_token) == ("enroll-me", "boss")
    assert not (server.config.data_dir / "tokens.json").exists()


async def test_regenerated_token_replaces_the_old_one(server):
    old = server.enrollment_token

    new = await server.regenerate_enrollment_token()

    refused = FakeAgent(server.url, old, "agent-a")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect()
    await refused.close()
    accepted = FakeAgent(server.url, new, "agent-a")
    await accepted.connect()
    await accepted.close()
    stored = json.loads((server.config.data_dir / "tokens.json").read_text())
    assert stored["enrollment"] == new


async def test_broken_listener_does_not_stop_updates(server, package, agent_factory):
    heard = []

    def broken(event, payload):
        raise RuntimeError("listener bug")

    server.add_listener(broken)
    server.add_listener(lambda event, payload: heard.append(event))
    agent = await agent_factory()

    await server.create_deployment([package["id"]], [agent.device_id])

    assert "deployment_update" in heard


async def test_stop_while_agents_report_keeps_every_acknowledged_final(
    server_factory, tmp_path, package_file
):
    data_dir = tmp_path / "data"
    server = await server_factory(data_dir=data_dir, enrollment_token="e")
    software = await server.add_software(
        package_file, name="Hello", installer_type="script"
    )
    agents = []
    for number in range(16):
        agent = FakeAgent(server.url, "e", f"agent-{number}")
        await agent.connect()
        await agent.register()
        agents.append(agent)
    deployment = await server.create_deployment(
        [software["id"]], [a.device_id for a in agents]
    )
    for agent in agents:
        await agent.next("install_software")
    acknowledged: list[int] = []
    half_done = asyncio.Event()

    def on_final_ack(device_id, ack):
        if ack.get("ok"):
            acknowledged.append(device_id)
        if len(acknowledged) >= len(agents) // 2:
            half_done.set()

    async def keep_reporting(agent, reports_before_final):
        payload = {"deployment_id": deployment["id"], "device_id": agent.device_id}
        try:
            for step in range(reports_before_final):
                await agent.sio.emit(
                    "software_installation_status",
                    {**payload, "status": "installing", "progress": step},
                )
            await agent.sio.emit(
                "software_installation_status",
                {**payload, "status": "completed", "progress": 100},
                callback=functools.partial(on_final_ack, agent.device_id),
            )
            for step in range(50):  # still reporting when the server stops
                await agent.sio.emit(
                    "software_download_progress",
                    {**payload, "software_name": "Hello", "progress": step},
                )
        except socketio.exceptions.SocketIOError:
            pass  # disconnected by the stopping server

    reporting = [
        asyncio.create_task(keep_reporting(agent, 4 * number))
        for number, agent in enumerate(agents)
    ]
    await asyncio.wait_for(half_done.wait(), 30)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await asyncio.wait_for(server.stop(), 30)  # guard: it once hung for 60 s
        gc.collect()
    await asyncio.gather(*reporting)
    for agent in agents:
        await agent.close()

    restarted = await server_factory(data_dir=data_dir, enrollment_token="e")
    targets = (await restarted.get_deployment(deployment["id"]))["targets"]
    assert [str(w.message) for w in caught] == []
    final = {t["device_id"]: t["status"] for t in targets}
    assert {final[device_id] for device_id in acknowledged} == {"success"}
    assert not any(d["online"] for d in await restarted.list_devices())
