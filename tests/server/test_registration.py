"""Agents connect with the enrollment token, register, and land in their own room."""

import asyncio
import logging

import pytest
import socketio

import protocol
from tests.helpers import TIMEOUT, ConsoleClient, FakeAgent


async def test_register_answers_with_agent_device_and_room(server):
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()

    ack = await agent.register()

    assert ack == {
        "ok": True,
        "agent_id": "agent-a",
        "device_id": ack["device_id"],
        "room": "agent-a",
        "open_deployments": [],
    }
    await agent.close()


async def test_registration_answer_lists_only_the_deployments_still_open(
    server, package, agent_factory
):
    agent = await agent_factory("agent-a")
    ids = []
    for _ in range(4):
        deployment = await server.create_deployment([package["id"]], [agent.device_id])
        await agent.next(protocol.INSTALL_SOFTWARE)
        ids.append(deployment["id"])
    finished, cancelled, running, waiting = ids
    assert (await agent.report(finished, "completed", 100))["ok"] is True
    assert (await agent.report(running, "installing", 50))["ok"] is True
    await server.cancel_deployment(cancelled)
    await agent.close()
    await server.wait_idle()

    again = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await again.connect()
    ack = await again.register()

    assert ack["open_deployments"] == [running, waiting]
    await again.close()


async def test_registration_success_follows_the_answer(agent_factory):
    agent = await agent_factory("agent-a")

    event = await agent.next(protocol.REGISTRATION_SUCCESS)

    assert event["ok"] is True
    assert event["room"] == "agent-a"
    assert event["device_id"] == agent.device_id


async def test_registered_device_is_listed_online(server, agent_factory):
    agent = await agent_factory("agent-a", hostname="pc-accounting")

    [device] = await server.list_devices()

    assert device["id"] == agent.device_id
    assert device["hostname"] == "pc-accounting"
    assert device["online"] is True
    assert device["last_seen"] is not None


async def test_deploy_right_after_registration_reaches_agent_every_time(
    server, package
):
    for round_ in range(20):
        agent = FakeAgent(server.url, server.enrollment_token, f"agent-{round_}")
        await agent.connect()
        ack = await agent.register()

        deployment = await server.create_deployment([package["id"]], [ack["device_id"]])

        job = await agent.next(protocol.INSTALL_SOFTWARE)
        assert job["deployment_id"] == deployment["id"]
        await agent.close()


async def test_reconnect_with_new_sid_gets_room_and_pending_jobs(
    server, package, agent_factory
):
    first = await agent_factory("agent-a")
    device_id = first.device_id
    await first.close()
    deployment = await server.create_deployment([package["id"]], [device_id])

    second = await agent_factory("agent-a")

    assert second.sid != first.sid
    job = await second.next(protocol.INSTALL_SOFTWARE)
    assert job["deployment_id"] == deployment["id"]
    again = await server.create_deployment([package["id"]], [device_id])
    assert (await second.next(protocol.INSTALL_SOFTWARE))["deployment_id"] == again[
        "id"
    ]


async def test_second_connection_of_an_agent_id_closes_the_first(agent_factory):
    old = await agent_factory("agent-a")

    await agent_factory("agent-a")

    async with asyncio.timeout(TIMEOUT):
        await old.disconnected.wait()


async def test_device_stays_online_when_its_older_connection_is_closed(
    server, agent_factory
):
    old = await agent_factory("agent-a")
    await agent_factory("agent-a")
    async with asyncio.timeout(TIMEOUT):
        await old.disconnected.wait()

    await server.wait_idle()

    [device] = await server.list_devices()
    assert device["online"] is True


async def test_newest_connection_of_an_agent_id_gets_its_jobs(
    server, package, agent_factory
):
    await agent_factory("agent-a")
    new = await agent_factory("agent-a")

    deployment = await server.create_deployment([package["id"]], [new.device_id])

    job = await new.next(protocol.INSTALL_SOFTWARE)
    assert job["deployment_id"] == deployment["id"]


async def test_agent_id_takeover_is_logged_once_as_a_warning(agent_factory, caplog):
    old_sid = (await agent_factory("agent-a")).sid
    caplog.clear()

    await agent_factory("agent-a")

    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "agent-a" in r.getMessage()
    ]
    assert warnings == [
        f"agent agent-a registered from a second connection; the older connection "
        f"[{old_sid}] was closed (two devices sharing one agent id?)"
    ]


async def test_agent_may_join_its_own_room(agent_factory):
    agent = await agent_factory("agent-a")

    ack = await agent.call(protocol.JOIN_ROOM, {"room": "agent-a"})

    assert ack == {"ok": True, "room": "agent-a"}


async def test_agent_may_not_join_a_foreign_room(server, package, agent_factory):
    intruder = await agent_factory("agent-a")
    victim = await agent_factory("agent-b")

    ack = await intruder.call(protocol.JOIN_ROOM, {"room": "agent-b"})
    await server.create_deployment([package["id"]], [victim.device_id])
    await victim.next(protocol.INSTALL_SOFTWARE)
    await server.wait_idle()
    await intruder.sync()

    assert ack["ok"] is False
    assert intruder.pending(protocol.INSTALL_SOFTWARE) == 0


async def test_agent_may_not_join_consoles_room(agent_factory):
    agent = await agent_factory("agent-a")

    ack = await agent.call(protocol.JOIN_ROOM, {"room": "consoles"})

    assert ack["ok"] is False


async def test_join_room_before_registering_is_refused(server):
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()

    ack = await agent.call(protocol.JOIN_ROOM, {"room": "agent-a"})

    assert ack["ok"] is False
    await agent.close()


async def test_connection_cannot_register_as_a_second_agent(server, agent_factory):
    agent = await agent_factory("agent-a")

    ack = await agent.register(agent_id="agent-b")

    assert ack["ok"] is False
    assert [d["agent_id"] for d in await server.list_devices()] == ["agent-a"]


@pytest.mark.parametrize(
    "auth",
    [
        None,
        {},
        {"role": "agent"},
        {"role": "agent", "token": "wrong"},
        {"role": "agent", "token": 12345},
        {"role": "console", "token": "wrong"},
        {"role": "admin", "token": "x"},
        "a string",
    ],
    ids=[
        "none",
        "empty",
        "no-token",
        "wrong-token",
        "token-not-text",
        "console-wrong-token",
        "unknown-role",
        "not-an-object",
    ],
)
async def test_connection_with_bad_auth_is_refused(server, auth):
    client = FakeAgent(server.url, server.enrollment_token)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect(auth=auth)

    await client.close()


async def test_refused_connection_names_the_reason(server):
    client = FakeAgent(server.url, "wrong")

    with pytest.raises(socketio.exceptions.ConnectionError):
        await client.connect()

    assert client.refusals == [{"message": "wrong agent token"}]
    await client.close()


async def test_enrollment_token_does_not_open_consoles_room(server):
    console = ConsoleClient(server.url, server.enrollment_token)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await console.connect()

    await console.close()


async def test_console_cannot_register_as_agent(server):
    console = ConsoleClient(server.url, server.admin_token)
    await console.connect()

    ack = await console.call(
        protocol.AGENT_REGISTER,
        {"agent_id": "x", "hostname": "h", "platform": "linux"},
    )

    assert ack["ok"] is False
    assert await server.list_devices() == []
    await console.close()


BAD_REGISTRATIONS = {
    "not-an-object": ["agent-a"],
    "missing-agent-id": {"hostname": "h", "platform": "linux"},
    "missing-hostname": {"agent_id": "a", "platform": "linux"},
    "agent-id-wrong-type": {"agent_id": 5, "hostname": "h", "platform": "linux"},
    "agent-id-with-slash": {"agent_id": "../x", "hostname": "h", "platform": "linux"},
    "agent-id-too-long": {"agent_id": "a" * 500, "hostname": "h", "platform": "linux"},
    "unknown-platform": {"agent_id": "a", "hostname": "h", "platform": "amiga"},
    "hostname-huge": {"agent_id": "a", "hostname": "h" * 100_000, "platform": "linux"},
    "too-many-fields": {
        "agent_id": "a",
        "hostname": "h",
        "platform": "linux",
        **{f"x{i}": i for i in range(100)},
    },
}


@pytest.mark.parametrize("payload", BAD_REGISTRATIONS.values(), ids=BAD_REGISTRATIONS)
async def test_malformed_registration_is_refused_and_changes_nothing(server, payload):
    agent = FakeAgent(server.url, server.enrollment_token)
    await agent.connect()

    ack = await agent.call(protocol.AGENT_REGISTER, payload)

    assert ack["ok"] is False
    assert ack["error"]
    assert await server.list_devices() == []
    await agent.close()


async def test_server_keeps_serving_after_a_malformed_registration(server):
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    await agent.call(protocol.AGENT_REGISTER, "garbage")

    ack = await agent.register()

    assert ack["ok"] is True
    await agent.close()


async def test_disconnect_marks_device_offline_and_tells_consoles(
    server, agent_factory
):
    console = ConsoleClient(server.url, server.admin_token)
    await console.connect()
    agent = await agent_factory("agent-a")
    online = await console.next(protocol.DEVICE_UPDATE)

    await agent.close()

    update = await console.next(protocol.DEVICE_UPDATE)
    assert online["online"] is True
    assert update["device_id"] == agent.device_id
    assert update["online"] is False
    assert update["last_seen"] >= online["last_seen"]
    [device] = await server.list_devices()
    assert device["online"] is False
    await console.close()


async def test_stop_disconnects_agents_cleanly(server_factory):
    server = await server_factory()
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    await agent.register()

    await server.stop()

    await agent.disconnected.wait()
    await agent.close()


async def test_oversized_message_is_dropped_and_others_are_served(server):
    hostile = FakeAgent(server.url, server.enrollment_token, "hostile")
    await hostile.connect()

    await hostile.sio.emit(
        protocol.AGENT_REGISTER,
        {"agent_id": "hostile", "hostname": "x" * 2_000_000, "platform": "linux"},
    )
    await hostile.disconnected.wait()

    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    assert (await agent.register())["ok"] is True
    assert [d["agent_id"] for d in await server.list_devices()] == ["agent-a"]
    await agent.close()
    await hostile.close()


async def test_registration_storm_gives_every_agent_its_device_room_and_jobs(
    server, package
):
    # A device that was here before and has a job waiting, then a storm of new
    # agents registering at once with it (written in shared transactions).
    veteran = FakeAgent(server.url, server.enrollment_token, "veteran")
    await veteran.connect()
    veteran_device = (await veteran.register())["device_id"]
    await veteran.close()
    waiting = await server.create_deployment([package["id"]], [veteran_device])

    agents = [FakeAgent(server.url, server.enrollment_token, "veteran")]
    agents += [
        FakeAgent(server.url, server.enrollment_token, f"storm-{n}") for n in range(30)
    ]
    await asyncio.gather(*(agent.connect() for agent in agents))
    acks = await asyncio.gather(*(agent.register() for agent in agents))

    assert all(ack["ok"] for ack in acks)
    assert acks[0]["device_id"] == veteran_device
    assert acks[0]["open_deployments"] == [waiting["id"]]
    assert len({ack["device_id"] for ack in acks}) == len(agents)
    job = await agents[0].next(protocol.INSTALL_SOFTWARE)
    assert job["deployment_id"] == waiting["id"]
    devices = await server.list_devices()
    assert len(devices) == len(agents)
    assert all(device["online"] for device in devices)
    # Every agent is in its room: a deployment to all reaches each one.
    everyone = await server.create_deployment(
        [package["id"]], [ack["device_id"] for ack in acks]
    )
    for agent in agents:
        job = await agent.next(protocol.INSTALL_SOFTWARE)
        assert job["deployment_id"] == everyone["id"]
    await asyncio.gather(*(agent.close() for agent in agents))


async def test_disconnect_storm_marks_every_device_offline(server, agent_factory):
    agents = [await agent_factory() for _ in range(12)]
    offline = asyncio.Event()
    seen: set[int] = set()

    def listener(event, payload):
        if event == protocol.DEVICE_UPDATE and payload["online"] is False:
            seen.add(payload["id"])
            if len(seen) == len(agents):
                offline.set()

    server.add_listener(listener)
    await asyncio.gather(*(agent.close() for agent in agents))

    async with asyncio.timeout(TIMEOUT):
        await offline.wait()
    assert not any(device["online"] for device in await server.list_devices())


async def test_one_agent_twice_in_one_batch_is_one_device_with_the_later_fields(
    server,
):
    first, second = (
        protocol.AgentRegister.model_validate(
            FakeAgent(server.url, server.enrollment_token, "twice").registration(
                hostname=name
            )
        )
        for name in ("old-name", "new-name")
    )

    (one, _), (two, _) = await server.repository.register_devices([first, second])

    assert one["id"] == two["id"]
    assert two["hostname"] == "new-name"
    [device] = await server.list_devices()
    assert device["hostname"] == "new-name"
