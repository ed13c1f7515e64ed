"""Between python-socketio and the gateway: client packets checked, library logs short.

A client can send anything. `CheckedPacket` turns an event the library could not
dispatch (bad JSON, `[]`, a name that is not text) into the event `MALFORMED`
carrying the reason, with the sender's acknowledgement id kept, so the gateway
answers `{"ok": false, ...}` instead of the library raising. `LibraryLog` is the
logger given to python-socketio and python-engineio: their chatter stays below DEBUG,
and an error they hit on a client's garbage is one WARNING line, not a traceback.
`WireJson` is the JSON codec both libraries use for every packet (orjson).
`IndexedRooms` and `LocalManager` keep python-socketio's room bookkeeping and
sending cheap with thousands of agents, each in a room of its own.

Every inbound and outbound packet passes through here, thousands a second under a
fleet's reports, so each step is kept cheap: the libraries' per-packet log calls
return at once unless their detail level is on, packets skip the search for binary
attachments we never send, and JSON is encoded and decoded by orjson.

TODO(server): a frame that is not even Engine.IO (first character not a packet type)
escapes python-engineio's websocket loop and reaches the HTTP error middleware, which
logs it with a traceback and writes an HTTP answer onto the upgraded connection.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import engineio
import orjson
import socketio
from engineio import packet as eio_packet
from socketio import packet

log = logging.getLogger(__name__)

MALFORMED = "\x00malformed"
"""The event a malformed inbound event becomes; its one argument is the reason."""

LIBRARY_DETAIL = 5
"""The level of the libraries' own info and debug lines (below DEBUG: off unless
someone asks for them; they include whole payloads)."""

MAX_REASON = 200

_EVENTS = (packet.EVENT, packet.BINARY_EVENT)


class WireJson:
    """JSON for python-socketio and python-engineio, by orjson (passed as their
    `json` option, which takes any object with `dumps` and `loads`).

    Stricter than the standard library where it matters for a server: NaN,
    Infinity and lone surrogates are not JSON and are refused as malformed; an
    integer beyond 64 bits is read as a float, which the strict payload models
    refuse where an id or a count is expected.
    """

    @staticmethod
    def dumps(obj: Any, **_options: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(text: str | bytes, **_options: Any) -> Any:
        return orjson.loads(text)


class CheckedPacket(packet.Packet):
    """The default JSON packet; inbound events the library cannot dispatch are
    rewritten to `MALFORMED` (see the module docstring).

    The server sends only JSON (never bytes), so an outbound packet is not
    searched for binary attachments; an inbound binary event is still decoded as
    the library does."""

    uses_binary_events = False

    def decode(self, encoded_packet: Any) -> int:
        try:
            attachments = super().decode(encoded_packet)
        except (ValueError, TypeError):
            if self.packet_type not in _EVENTS:
                raise
            self._malformed("the message is not valid JSON")
            return 0
        if self.packet_type in _EVENTS and not _dispatchable(self.data):
            self._malformed(
                "an event must be a JSON array starting with the event name"
            )
            return 0
        return attachments or 0

    def _malformed(self, reason: str) -> None:
        self.packet_type = packet.EVENT
        self.data = [MALFORMED, reason]


def _dispatchable(data: Any) -> bool:
    return isinstance(data, list) and bool(data) and isinstance(data[0], str)


class LibraryLog(logging.LoggerAdapter):
    """What python-socketio and python-engineio log, through this module's logger."""

    def __init__(self) -> None:
        super().__init__(log, {})

    # The libraries log a line per packet at info/debug; most of the time nobody
    # listens, so those return before any work.
    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if log.isEnabledFor(LIBRARY_DETAIL) or kwargs.get("exc_info"):
            self.log(logging.DEBUG, msg, *args, **kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if log.isEnabledFor(LIBRARY_DETAIL) or kwargs.get("exc_info"):
            self.log(logging.INFO, msg, *args, **kwargs)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        exc_info = kwargs.pop("exc_info", None)
        if exc_info:
            exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
            if not args:
                msg = str(msg).replace("%", "%%")
            msg = f"{msg}: %s"
            reason = f"{type(exc).__name__}: {exc}" if exc else "error"
            args = (*args, reason[:MAX_REASON])
        if level >= logging.ERROR or exc_info:
            level = logging.WARNING
        elif level < logging.WARNING:
            level = LIBRARY_DETAIL
        if self.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)


class IndexedRooms:
    """For python-socketio's client managers: the rooms of each sid, kept as it
    enters and leaves them.

    The library finds a leaving client's rooms by testing every room of the
    namespace; every agent has two rooms of its own (its sid's and its agent id's),
    so with N agents each disconnect costs 2N tests and a fleet that drops at once
    costs N squared: 4,000 agents going away kept the server busy for about nine
    seconds. Here a disconnect visits the client's own rooms only.

    Mixed in before the library's manager class (`LocalManager`, and the Redis
    manager in scale-out mode). It overrides the manager's `basic_*` room methods,
    which every manager uses for its local rooms, and reads the manager's
    `callbacks`, `pending_connect` and `pending_disconnect` as the library's own
    `basic_disconnect` does (tests/server/test_sockets.py checks the outcome).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[str, dict[str, set[str | None]]] = {}
        """namespace -> sid -> the rooms it is in (None: the namespace's own)."""

    def basic_enter_room(
        self, sid: str, namespace: str, room: str | None, eio_sid: str | None = None
    ) -> None:
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault(namespace, {}).setdefault(sid, set()).add(room)

    def basic_leave_room(self, sid: str, namespace: str, room: str | None) -> None:
        super().basic_leave_room(sid, namespace, room)
        of_namespace = self._rooms_of.get(namespace, {})
        rooms = of_namespace.get(sid)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del of_namespace[sid]
                if not of_namespace:
                    del self._rooms_of[namespace]

    def basic_disconnect(self, sid: str, namespace: str, **_kwargs: Any) -> None:
        rooms = self._rooms_of.get(namespace, {}).get(sid, set())
        for room in list(rooms):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: str) -> list[str]:
        rooms = self._rooms_of.get(namespace, {}).get(sid, ())
        return [room for room in rooms if room is not None]


class LocalManager(IndexedRooms, socketio.AsyncManager):
    """The client manager of one server process (embedded and headless modes).

    Its `emit` without a callback encodes the packet once and queues it for each
    recipient in turn. The library's starts a task per recipient and waits for
    them all, though queueing a packet for a websocket never waits: for the
    agent's room or the consoles' room, each holding one or two clients, those
    tasks cost more than the sending.
    """

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: str,
        room: str | None = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: str | None = None,
        **kwargs: Any,
    ) -> None:
        room = to or room
        if callback is not None or not isinstance(room, str):
            await super().emit(
                event,
                data,
                namespace,
                room=room,
                skip_sid=skip_sid,
                callback=callback,
                **kwargs,
            )
            return
        if data is None:
            args = []
        elif isinstance(data, tuple):
            args = list(data)
        else:
            args = [data]
        skipped = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        recipients = [
            eio_sid
            for sid, eio_sid in self.get_participants(namespace, room)
            if sid not in skipped
        ]
        if not recipients:
            return
        pkt = self.server.packet_class(
            packet.EVENT, namespace=namespace, data=[event, *args]
        )
        encoded = pkt.encode()
        frames = [
            eio_packet.Packet(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]
        for eio_sid in recipients:
            try:
                for frame in frames:
                    await self.server._send_eio_packet(eio_sid, frame)
            except engineio.exceptions.SocketIsClosedError:
                # Closing as we send: its disconnect is on its way; the others
                # still get theirs.
                log.debug("%s not sent to %s: connection closing", event, eio_sid)


class IndexedRedisManager(IndexedRooms, socketio.AsyncRedisManager):
    """The Redis client manager (scale-out mode), with `IndexedRooms`."""
