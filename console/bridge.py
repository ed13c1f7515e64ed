"""`ServerBridge`: the embedded server's listener events as Qt signals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from protocol import DEPLOYMENT_UPDATE, DEVICE_UPDATE, SOFTWARE_DEPLOYMENT_UPDATE

log = logging.getLogger(__name__)


class ServerBridge(QObject):
    """Turns `server.add_listener` callbacks into Qt signals for the window.

    The server calls the listener on the asyncio loop, which is the Qt loop, so the
    signals are emitted directly (no thread hop). Payload shapes: DESIGN.md.

    Signals:
        device_changed(dict): a `device_update` payload.
        target_changed(dict): a `software_deployment_update` payload.
        deployment_changed(dict): a `deployment_update` payload.
    """

    device_changed = Signal(object)
    target_changed = Signal(object)
    deployment_changed = Signal(object)

    def __init__(self, server: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._signals = {
            DEVICE_UPDATE: self.device_changed,
            SOFTWARE_DEPLOYMENT_UPDATE: self.target_changed,
            DEPLOYMENT_UPDATE: self.deployment_changed,
        }
        self._unsubscribe: Callable[[], Any] | None = server.add_listener(
            self._on_server_event
        )

    def _on_server_event(self, event: str, payload: dict[str, Any]) -> None:
        signal = self._signals.get(event)
        if signal is None:
            log.debug("ignoring server event %s", event)
            return
        signal.emit(dict(payload))

    def detach(self) -> None:
        """Stop listening; call before the server is stopped or replaced."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
