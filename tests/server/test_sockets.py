"""The server's room bookkeeping and sending (`server.sockets`), on real sockets.

`IndexedRooms` replaces python-socketio's search of every room at a disconnect;
these tests check that what a departed client leaves behind is what the library's
own bookkeeping would leave (nothing), and that `LocalManager.emit` reaches every
member of a room once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server.sockets import LocalManager
from tests.helpers import TIMEOUT, ConsoleClient


async def until(condition: Callable[[], bool], within: float = TIMEOUT) -> None:
    """Wait, a loop turn at a time, until `condition()` holds (TimeoutError).

    Polled: nothing signals the end of python-socketio's own bookkeeping after a
    disconnect, which is what these tests look at.
    """
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 -- no event to wait on (above)
            await asyncio.sleep(0)


def manager_of(server) -> LocalManager:
    manager = server.gateway.sio.manager
    assert isinstance(manager, LocalManager)
    return manager


async def test_a_departed_agent_leaves_every_room_and_nothing_of_it_is_kept(
    server, agent_factory
):
    first = await agent_factory("agent-1")
    leaving = await agent_factory("agent-2")
    manager = manager_of(server)
    sid = leaving.sid

    await leaving.close()
    await until(lambda: not manager.is_connected(sid, "/"))
    await until(lambda: sid not in manager.rooms["/"][None])

    rooms = manager.rooms["/"]
    assert "agent-2" not in rooms
    assert sid not in rooms
    assert all(sid not in members for members in rooms.values())
    assert manager.get_rooms(sid, "/") == []
    assert sid not in manager.callbacks
    assert sid not in manager.pending_connect.get("/", [])
    assert sid not in manager.pending_disconnect.get("/", [])
    assert sorted(manager.get_rooms(first.sid, "/")) == sorted(["agent-1", first.sid])


async def test_rooms_of_a_connection_are_its_own_and_its_agents(server, agent_factory):
    agent = await agent_factory("agent-7")

    rooms = server.gateway.sio.rooms(agent.sid)

    assert sorted(rooms) == sorted(["agent-7", agent.sid])


async def test_an_emit_to_a_room_reaches_each_member_once(server):
    consoles = [ConsoleClient(server.url, server.admin_token) for _ in range(3)]
    for console in consoles:
        await console.connect()
    try:
        await server.gateway.sio.emit(
            "bench_note", {"n": 1}, room="consoles", skip_sid=consoles[2].sid
        )
        await server.gateway.sio.emit("bench_note", {"n": 2}, room="consoles")

        for console in consoles[:2]:
            assert await console.next("bench_note") == {"n": 1}
            assert await console.next("bench_note") == {"n": 2}
        assert await consoles[2].next("bench_note") == {"n": 2}
        for console in consoles:
            assert console.pending("bench_note") == 0
    finally:
        for console in consoles:
            await console.close()


async def test_an_emit_to_a_room_nobody_is_in_sends_nothing_and_raises_nothing(
    server,
):
    await server.gateway.sio.emit("bench_note", {"n": 1}, room="agent-nobody")


async def test_an_emit_with_a_callback_still_gets_the_clients_answer(
    server, agent_factory
):
    agent = await agent_factory("agent-3")
    answered = asyncio.Event()

    await server.gateway.sio.emit(
        "bench_note", {"n": 1}, to=agent.sid, callback=lambda *_: answered.set()
    )

    async with asyncio.timeout(TIMEOUT):
        await answered.wait()
