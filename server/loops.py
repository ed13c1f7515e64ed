"""The event loop a server runs on: uvloop where it exists, else asyncio's own.

uvloop (libuv) runs the same asyncio programs with a cheaper loop and transports;
for the server that is most of the per-packet cost python-socketio leaves us (about
a third less CPU per status report in `bench/`). It does not exist for Windows,
which keeps asyncio's default loop; nothing else changes.
"""

from __future__ import annotations

import asyncio

try:
    import uvloop
except ImportError:  # Windows, or installed without it
    uvloop = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new event loop for a server: uvloop's where available."""
    if uvloop is not None:
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(main):
    """`asyncio.run(main)` on a loop from `new_event_loop`."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)
