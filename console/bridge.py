"""`ServerBridge`: the embedded server's listener events as batched Qt signals."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal

from protocol import DEPLOYMENT_UPDATE, DEVICE_UPDATE, SOFTWARE_DEPLOYMENT_UPDATE

log = logging.getLogger(__name__)

BATCH_MS = 100
"""How long events are gathered before the window hears of them."""
SLICE = 200
"""At most this many payloads per signal: a bigger batch goes out in slices, one
per turn of the loop, so that the window repaints and the loop's timers run in
between (4,000 devices finishing at once took one slot call 200 ms)."""

_KEYS: dict[str, Callable[[dict[str, Any]], tuple]] = {
    DEVICE_UPDATE: lambda p: (p["device_id"],),
    SOFTWARE_DEPLOYMENT_UPDATE: lambda p: (p["deployment_id"], p["device_id"]),
    DEPLOYMENT_UPDATE: lambda p: (p["deployment_id"],),
}


def _newer(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`new`, keeping what `old` said about fields `new` leaves empty (a message,
    an agent status), as the models would have kept it had both been applied."""
    merged = dict(old)
    merged.update((k, v) for k, v in new.items() if v is not None and v != "")
    return merged


class ServerBridge(QObject):
    """Turns `server.add_listener` callbacks into a few Qt signals per tick.

    The server calls the listener on the asyncio loop, which is the Qt loop. With
    thousands of devices reporting twice a second, one signal per event would
    keep the loop busy with Python slot calls; so events are gathered for
    `BATCH_MS` and delivered as one list per kind, holding the latest payload per
    device, target and deployment (earlier ones are superseded). Lists go out in
    the order devices, targets, deployments, so a target's device row exists
    first. A list longer than `SLICE` is delivered in slices, one per turn of
    the loop, in order. Payload shapes: DESIGN.md.

    Signals:
        devices_changed(list): `device_update` payloads, one per device.
        targets_changed(list): `software_deployment_update` payloads, one per
            (deployment, device).
        deployments_changed(list): `deployment_update` payloads, one per deployment.
    """

    devices_changed = Signal(list)
    targets_changed = Signal(list)
    deployments_changed = Signal(list)

    def __init__(self, server: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._signals = {
            DEVICE_UPDATE: self.devices_changed,
            SOFTWARE_DEPLOYMENT_UPDATE: self.targets_changed,
            DEPLOYMENT_UPDATE: self.deployments_changed,
        }
        self._pending: dict[str, dict[tuple, dict[str, Any]]] = {
            event: {} for event in self._signals
        }
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(BATCH_MS)
        self._timer.timeout.connect(self._tick)
        # Slices gathered but not delivered yet, oldest first.
        self._slices: collections.deque[tuple[Any, list[dict[str, Any]]]] = (
            collections.deque()
        )
        self._slice_timer = QTimer(self)
        self._slice_timer.setInterval(0)
        self._slice_timer.timeout.connect(self._deliver_slice)
        self._unsubscribe: Callable[[], Any] | None = server.add_listener(
            self._on_server_event
        )

    def _on_server_event(self, event: str, payload: dict[str, Any]) -> None:
        pending = self._pending.get(event)
        if pending is None:
            log.debug("ignoring server event %s", event)
            return
        key = _KEYS[event](payload)
        old = pending.get(key)
        pending[key] = _newer(old, payload) if old else dict(payload)
        if not self._timer.isActive():
            self._timer.start()

    def flush(self) -> None:
        """Deliver everything gathered so far, now (the self-test, tests)."""
        self._gather()
        while self._slices:
            self._deliver_slice()

    def _tick(self) -> None:
        """The batch timer: slice what was gathered and deliver the first slice."""
        self._gather()
        self._deliver_slice()

    def _gather(self) -> None:
        self._timer.stop()
        for event, signal in self._signals.items():
            pending = self._pending[event]
            if pending:
                self._pending[event] = {}
                payloads = list(pending.values())
                for start in range(0, len(payloads), SLICE):
                    self._slices.append((signal, payloads[start : start + SLICE]))

    def _deliver_slice(self) -> None:
        if self._slices:
            signal, payloads = self._slices.popleft()
            signal.emit(payloads)
        if self._slices:
            self._slice_timer.start()
        else:
            self._slice_timer.stop()

    def detach(self) -> None:
        """Stop listening; call before the server is stopped or replaced.

        Events not delivered yet are dropped: they belong to that server."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._timer.stop()
        self._slice_timer.stop()
        self._slices.clear()
        for pending in self._pending.values():
            pending.clear()
