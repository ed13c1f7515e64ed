"""The console's event loop: qasync's Qt-driven asyncio loop, cheaper per callback.

qasync runs every `call_soon` as its own Qt timer (start, fire, kill). The
embedded server makes thousands of such calls a second under a big fleet (each
socket read, each future), and profiling the console with 500 devices reporting
put a fifth of the loop's time into starting and killing those timers. Here
ready callbacks go into a queue that one zero-interval timer drains, a batch at a
time, as asyncio's own loop does; Qt still gets its turn between two batches.
Delayed callbacks stay with qasync.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import sys
import time
from typing import Any

import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

log = logging.getLogger(__name__)

GC_THRESHOLD = (50_000, 20, 100)
"""Collect the young generation every 50,000 allocations instead of 700, and
the older ones far less often: with the server's many long-lived objects, a
full collection took 0.3-0.5 s of the loop (measured at 500 devices)."""


class ConsoleEventLoop(qasync.QEventLoop):
    """`qasync.QEventLoop` whose ready callbacks share one Qt timer."""

    def __init__(self, app: QApplication | None = None) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        super().__init__(app)
        self._drain_timer = QTimer()
        self._drain_timer.setInterval(0)
        self._drain_timer.timeout.connect(self._run_ready)

    def call_soon(
        self, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.Handle:
        self._check_closed()
        handle = asyncio.Handle(callback, args, self, context=context)
        self._ready.append(handle)
        if not self._drain_timer.isActive():
            self._drain_timer.start()
        return handle

    def call_later(
        self, delay: float, callback: Any, *args: Any, context: Any = None
    ) -> asyncio.Handle:
        if delay <= 0:
            return self.call_soon(callback, *args, context=context)
        return super().call_later(delay, callback, *args, context=context)

    def run_forever(self) -> None:
        if self._ready:
            self._drain_timer.start()
        super().run_forever()

    def _run_ready(self) -> None:
        """Run the callbacks ready now; those they schedule wait for the next turn.

        Only while this loop runs: Qt may process events outside it (qasync's
        last pass after a run, a test's processEvents), and a task stepped there
        would find no running loop.
        """
        if asyncio.events._get_running_loop() is not self:
            self._drain_timer.stop()  # run_forever starts it again
            return
        for _ in range(len(self._ready)):
            handle = self._ready.popleft()
            if not handle._cancelled:
                handle._run()
        if not self._ready:
            self._drain_timer.stop()

    def close(self) -> None:
        if not self.is_running():
            self._drain_timer.stop()
            self._ready.clear()
        super().close()


class GuiThreadCollector:
    """Garbage is collected on the GUI thread only, on a Qt timer.

    CPython collects on whichever thread allocates past the threshold: an executor
    thread (hashing a package, removing a folder) or the embedded server's thread.
    A collection there that frees a Qt object of the window (a dialog, a model, a
    timer left in a reference cycle) destroys it on the wrong thread: its timers
    stay registered with the GUI thread's dispatcher and the next one crashes the
    process (seen in the console tests: SIGSEGV in QTimerInfoList::activateTimers).
    So while a console runs, automatic collection is off and the timer applies
    CPython's own rule (`gc.get_threshold()`) every `COLLECT_MS`.

    Reference-counted: `acquire()` on the GUI thread, `release()` when done; the
    last release puts automatic collection back.
    """

    COLLECT_MS = 50
    """How often the counts are looked at; a look that finds nothing due costs
    a few microseconds."""
    FULL_EVERY_S = 30.0
    """At most one full (oldest generation) collection per this many seconds.
    CPython also holds full collections back until the long-lived objects have
    grown by a quarter, a count Python code cannot read; a time floor bounds
    their cost instead (0.3-0.5 s each with a big fleet in memory)."""

    def __init__(self) -> None:
        self._users = 0
        self._timer: QTimer | None = None
        self._was_enabled = True
        self._last_full = time.monotonic()

    def acquire(self) -> None:
        if self._users == 0:
            self._was_enabled = gc.isenabled()
            gc.disable()
            self._timer = QTimer()
            self._timer.setInterval(self.COLLECT_MS)
            self._timer.timeout.connect(self.collect_due)
            self._timer.start()
        self._users += 1

    def release(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        self.collect_due()
        if self._was_enabled:
            gc.enable()

    def collect_due(self) -> int | None:
        """Collect the oldest generation whose count is past its threshold, as
        CPython's allocator would have; returns it, or None if nothing was due."""
        counts, thresholds = gc.get_count(), gc.get_threshold()
        if counts[0] < thresholds[0]:
            return None
        generation = 1 if counts[1] >= thresholds[1] else 0
        now = time.monotonic()
        if (
            generation == 1
            and counts[2] >= thresholds[2]
            and now - self._last_full >= self.FULL_EVERY_S
        ):
            generation = 2
            self._last_full = now
        gc.collect(generation)
        return generation


gui_collector = GuiThreadCollector()
"""The process's one collector policy (see `GuiThreadCollector`)."""


class SharedInterpreter:
    """How the GUI thread shares Python with an embedded server's thread
    (`console.server_thread`): one interpreter lock serves both. While a server
    thread runs:

    - garbage is collected on the GUI thread only (`gui_collector`);
    - the switch interval is `SWITCH_INTERVAL_S` instead of CPython's 5 ms: each
      time Qt calls into Python (a timer, a socket, an event) the GUI thread waits
      for the lock, up to one interval while the server thread computes.

    Reference-counted: `acquire()` on the GUI thread when a server thread starts,
    `release()` when it has ended; the last release puts both settings back.
    """

    SWITCH_INTERVAL_S = 0.001
    """Measured with a thread that never idles: Qt's calls into Python ran at 5k/s
    with 1 ms against 3.7k/s with 5 ms, and paint calls made from inside Python
    (`console.ui.tables.TableView`) at 25k/s against 10k/s, about what they run
    at alone (28k/s)."""

    def __init__(self, collector: GuiThreadCollector) -> None:
        self._users = 0
        self._collector = collector
        self._switch_interval = sys.getswitchinterval()

    def acquire(self) -> None:
        self._collector.acquire()
        if self._users == 0:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_interval, self.SWITCH_INTERVAL_S))
        self._users += 1

    def release(self) -> None:
        if self._users == 0:
            return
        self._users -= 1
        if self._users == 0:
            sys.setswitchinterval(self._switch_interval)
        self._collector.release()

    def collect_due(self) -> int | None:
        return self._collector.collect_due()


shared_interpreter = SharedInterpreter(gui_collector)
"""The process's one policy (see `SharedInterpreter`)."""


def new_event_loop(app: QApplication | None = None) -> ConsoleEventLoop:
    """The loop `deploy-console` runs on (also for tests and the benchmark)."""
    return ConsoleEventLoop(app)


def settle_memory() -> None:
    """After startup: keep the startup objects out of every later collection
    (`gc.freeze`) and collect less often, so collections stay short pauses."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    log.debug("gc: %d startup objects frozen", gc.get_freeze_count())
