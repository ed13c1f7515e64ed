"""Clients sending what the contract does not allow get an answer, not a traceback.

Each odd message is answered `{"ok": false, "error": ...}` when it asks for an
answer, is logged in one line, and the server keeps serving.
"""

import json
import logging

import pytest

import protocol
from tests.helpers import FakeAgent, RawSocket


@pytest.fixture
async def agent(server):
    agent = FakeAgent(server.url, server.enrollment_token, "agent-a")
    await agent.connect()
    yield agent
    await agent.close()


@pytest.fixture
async def raw(server):
    raw = RawSocket(server.url)
    await raw.open()
    yield raw
    await raw.close()


def problems(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_event_without_a_payload_is_answered_with_an_error(agent):
    ack = await agent.call(protocol.AGENT_REGISTER)

    assert ack["ok"] is False
    assert "one payload" in ack["error"]


async def test_event_with_two_arguments_is_answered_with_an_error(agent):
    registration = agent.registration()

    ack = await agent.sio.call(
        protocol.AGENT_REGISTER, (registration, registration), timeout=10
    )

    assert ack["ok"] is False
    assert "one payload" in ack["error"]


async def test_unknown_event_is_answered_with_an_error(agent):
    ack = await agent.call("format_disk", {"drive": "C:"})

    assert ack == {"ok": False, "error": "unknown event"}


async def test_unknown_event_is_logged_in_one_line(agent, caplog):
    await agent.call("format_disk", {"drive": "C:"})

    [record] = problems(caplog)
    assert "'format_disk'" in record.getMessage()
    assert record.exc_info is None


async def test_event_array_without_a_name_is_answered_with_an_error(server, raw):
    await raw.join({"role": "agent", "token": server.enrollment_token})

    await raw.send("427[]")

    [ack] = await raw.ack(7)
    assert ack["ok"] is False
    assert "event name" in ack["error"]


async def test_broken_json_is_answered_with_an_error(server, raw):
    await raw.join({"role": "agent", "token": server.enrollment_token})

    await raw.send('428["agent_register", {')

    [ack] = await raw.ack(8)
    assert ack == {"ok": False, "error": "the message is not valid JSON"}


@pytest.mark.parametrize(
    "payload",
    [
        '{"agent_id": NaN}',  # not JSON, though Python's json module reads it
        '{"agent_id": "\\ud800"}',  # a lone surrogate: no text can hold it
    ],
)
async def test_json_that_only_python_accepts_is_refused(server, raw, payload):
    await raw.join({"role": "agent", "token": server.enrollment_token})

    await raw.send('428["agent_register", ' + payload + "]")

    [ack] = await raw.ack(8)
    assert ack == {"ok": False, "error": "the message is not valid JSON"}
    assert await server.list_devices() == []


async def test_an_id_beyond_64_bits_is_refused_not_stored(server, raw):
    await raw.join({"role": "agent", "token": server.enrollment_token})
    registration = FakeAgent(server.url, None, "agent-a").registration()
    await raw.send("421" + json.dumps([protocol.AGENT_REGISTER, registration]))
    [registered] = await raw.ack(1)
    report = {
        "deployment_id": 1234567890123456789012345678901234567890,
        "device_id": registered["device_id"],
        "status": "installing",
        "progress": 50,
    }

    await raw.send("422" + json.dumps([protocol.SOFTWARE_INSTALLATION_STATUS, report]))

    [ack] = await raw.ack(2)
    assert ack["ok"] is False
    assert "deployment_id" in ack["error"]


async def test_broken_json_before_connecting_is_one_line_without_traceback(
    server, raw, caplog
):
    await raw.send('42["x"')
    await raw.join({"role": "agent", "token": server.enrollment_token})

    [record] = problems(caplog)
    assert record.exc_info is None
    assert record.levelno == logging.WARNING


async def test_server_keeps_serving_after_malformed_messages(server, raw):
    await raw.join({"role": "agent", "token": server.enrollment_token})
    for garbage in ('42["x"', "42[]", "425", '42[7, "a"]'):
        await raw.send(garbage)

    registration = FakeAgent(server.url, None, "agent-a").registration()
    await raw.send("429" + json.dumps([protocol.AGENT_REGISTER, registration]))

    [ack] = await raw.ack(9)
    assert ack["ok"] is True


@pytest.mark.parametrize("event", ["disconnect", "connect"])
async def test_client_sending_a_reserved_event_name_is_refused(server, raw, event):
    await raw.join({"role": "agent", "token": server.enrollment_token})

    await raw.send(f'425["{event}", "spoofed"]')

    [ack] = await raw.ack(5)
    assert ack == {"ok": False, "error": "a reserved event name"}


async def test_device_stays_online_when_its_agent_sends_disconnect(server, raw):
    await raw.join({"role": "agent", "token": server.enrollment_token})
    registration = FakeAgent(server.url, None, "agent-a").registration()
    await raw.send("421" + json.dumps([protocol.AGENT_REGISTER, registration]))
    [registered] = await raw.ack(1)

    await raw.send('422["disconnect"]')
    await raw.ack(2)
    await server.wait_idle()

    [device] = await server.list_devices()
    assert registered["ok"] is True
    assert device["online"] is True


async def test_agent_sending_disconnect_still_gets_its_jobs(server, raw, package):
    await raw.join({"role": "agent", "token": server.enrollment_token})
    registration = FakeAgent(server.url, None, "agent-a").registration()
    await raw.send("421" + json.dumps([protocol.AGENT_REGISTER, registration]))
    [registered] = await raw.ack(1)
    await raw.send('422["disconnect"]')
    await raw.ack(2)

    deployment = await server.create_deployment(
        [package["id"]], [registered["device_id"]]
    )

    job = await raw.event(protocol.INSTALL_SOFTWARE)
    assert job["deployment_id"] == deployment["id"]


async def _register_as(server, agent_id: str) -> dict:
    """The answer to one `agent_register` as `agent_id` from a new connection."""
    intruder = FakeAgent(server.url, server.enrollment_token, agent_id)
    await intruder.connect()
    try:
        return await intruder.call(protocol.AGENT_REGISTER, intruder.registration())
    finally:
        await intruder.close()


async def test_an_agent_named_after_the_consoles_room_is_refused(server):
    ack = await _register_as(server, protocol.CONSOLES_ROOM)

    assert ack["ok"] is False
    assert "reserved" in ack["error"]
    assert await server.list_devices() == []


async def test_an_agent_named_after_another_connection_is_refused(server, agent):
    """Every connection is in a room named after its sid: an agent of that name
    would receive the other connection's jobs."""
    ack = await _register_as(server, agent.sid)

    assert ack["ok"] is False
    assert "reserved" in ack["error"]
    assert await server.list_devices() == []
