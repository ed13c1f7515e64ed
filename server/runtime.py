"""How a server process runs: its event loop and its garbage collector.

The loop: uvloop where it exists, else asyncio's own. uvloop (libuv) runs the
same asyncio programs with a cheaper loop and transports; for the server that is
a good part of the per-packet cost python-socketio leaves us. It does not exist
for Windows, which keeps asyncio's default loop; nothing else changes.

The collector: with thousands of agents connected the server holds millions of
long-lived objects, and Python's default thresholds (a young collection every 700
allocations) promote every report's short-lived objects -- alive for the ~100 ms
until their batch is written -- into the old generation, whose full collections
then ran every second or two at about 0.5 s each. Measured with 4,000 agents
reporting 2,000 times a second: 23 s of 70 in full collections, 750 reports/s
acknowledged; with `GC_THRESHOLD` none, 2,000/s at half the CPU (`bench/README.md`).
"""

from __future__ import annotations

import asyncio
import gc
import logging

try:
    import uvloop
except ImportError:  # Windows, or installed without it
    uvloop = None

log = logging.getLogger(__name__)

GC_THRESHOLD = (100_000, 20, 100)
"""A young collection every 100,000 allocations instead of 700, so that a report's
objects die young; the older generations far less often."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for a server: uvloop's where available."""
    if uvloop is not None:
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def tune_garbage_collector() -> None:
    """Collect as a long-running server should (see the module docstring); the
    objects alive now (modules, the started server) are left out of every later
    collection. Process-wide: call once the server has started."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    log.debug("gc: %d startup objects frozen", gc.get_freeze_count())


def run(main):
    """`asyncio.run(main)` on a loop from `new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
