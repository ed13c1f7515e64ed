"""The Qt binding in use keeps Python's `True` alive however often we emit.

PySide6 6.12.0 on Python 3.11 returns `True` from `SignalInstance.emit()` without
taking a reference; a busy console (every model update and every qasync callback
emits) then aborts with "bool_dealloc: deallocating True or False". pyproject.toml
keeps the binding below 6.12 for that reason; this test fails if a version with
the leak comes back.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal


class _Sender(QObject):
    changed = Signal(object)


def test_emitting_signals_does_not_leak_references_to_true(qapp):
    sender = _Sender()
    received = []
    sender.changed.connect(received.append)
    before = sys.getrefcount(True)

    for _ in range(200):
        sender.changed.emit({"online": True})

    assert len(received) == 200
    assert sys.getrefcount(True) >= before
