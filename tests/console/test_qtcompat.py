"""The signal-emit workaround keeps Python's `True` alive however often we emit."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

from console.qtcompat import emit


class _Sender(QObject):
    changed = Signal(object)


def test_many_emits_never_lower_the_refcount_of_true(qapp):
    sender = _Sender()
    received = []
    sender.changed.connect(received.append)
    before = sys.getrefcount(True)

    for _ in range(5000):
        emit(sender.changed, {"online": True})

    assert len(received) == 5000
    # Giving back too many references is harmless (True is never freed);
    # too few aborts the interpreter.
    assert sys.getrefcount(True) >= before
