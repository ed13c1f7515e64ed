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
