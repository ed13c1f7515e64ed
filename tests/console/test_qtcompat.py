"""The signal-emit workaround keeps Python's `True` alive however often we emit."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

from console.qtcompat import emit


class _Sender(QObject):
    changed = Signal(object)


def test_many_emits_leave_the_refcount_of_true_unchanged(qapp):
    sender = _Sender()
    received = []
    sender.changed.connect(received.append)
    before = sys.getrefcount(True)

    for _ in range(5000):
        emit(sender.changed, {"online": True})

    assert len(received) == 5000
    assert abs(sys.getrefcount(True) - before) < 100
