"""Workarounds for bugs in the Qt binding, in one place.

WORKAROUND for PySide6 6.12.0 on Python 3.11: `SignalInstance.emit()` returns
`True` without taking a reference, so every emit from Python lowers the
refcount of `True` by one; after enough emits the interpreter aborts with
"bool_dealloc: deallocating True or False". `emit()` below measures the leak
once and, only if it is there, gives a reference back after each emit (where a
particular emit does not leak, the extra reference to `True` is harmless: it is
never freed anyway).
TODO(console): drop this once the binding is fixed (check with `LEAKS_TRUE`).
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from PySide6.QtCore import QObject, Signal, SignalInstance


class _Probe(QObject):
    fired = Signal()


def _emit_leaks_true() -> bool:
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(10):
        probe.fired.emit()
    leaked = before - sys.getrefcount(True)
    for _ in range(max(leaked, 0)):
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))  # undo the probe's loss
    return leaked >= 10


LEAKS_TRUE = _emit_leaks_true()

# qasync emits from Python too (every call_soon_threadsafe: executor and database
# results), which `emit()` cannot reach; give True a reserve of references that
# no process lifetime can use up. Harmless: True is never freed. Python 3.12+
# makes True immortal and the probe finds no leak, so nothing happens there.
if LEAKS_TRUE:
    ctypes.c_ssize_t.from_address(id(True)).value += 1 << 40


def emit(signal: SignalInstance, *args: Any) -> None:
    """`signal.emit(*args)`, minus the binding's reference leak (see above)."""
    signal.emit(*args)
    if LEAKS_TRUE:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
