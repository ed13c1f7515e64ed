"""Between python-socketio and the gateway: client packets checked, library logs short.

A client can send anything. `CheckedPacket` turns an event the library could not
dispatch (bad JSON, `[]`, a name that is not text) into the event `MALFORMED`
carrying the reason, with the sender's acknowledgement id kept, so the gateway
answers `{"ok": false, ...}` instead of the library raising. `LibraryLog` is the
logger given to python-socketio and python-engineio: their chatter stays below DEBUG,
and an error they hit on a client's garbage is one WARNING line, not a traceback.
`WireJson` is the JSON codec both libraries use for every packet (orjson).

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

import orjson
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
