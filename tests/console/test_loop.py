"""The console's loop: ready callbacks share one Qt timer, in order, inside the loop."""

from __future__ import annotations

import asyncio

from PySide6.QtWidgets import QApplication

from console.loop import new_event_loop


async def test_ready_callbacks_run_in_the_order_they_were_scheduled():
    loop = asyncio.get_running_loop()
    ran: list[int] = []
    done = asyncio.Event()

    for n in range(1000):
        loop.call_soon(ran.append, n)
    loop.call_soon(done.set)
    await asyncio.wait_for(done.wait(), 10)

    assert ran == list(range(1000))


async def test_a_cancelled_callback_does_not_run():
    loop = asyncio.get_running_loop()
    ran: list[str] = []
    done = asyncio.Event()

    loop.call_soon(ran.append, "cancelled").cancel()
    loop.call_soon(done.set)
    await asyncio.wait_for(done.wait(), 10)

    assert ran == []


def test_qt_events_processed_outside_the_loop_run_no_callback(qapp: QApplication):
    loop = new_event_loop(qapp)
    ran: list[str] = []
    try:
        loop.call_soon(ran.append, "later")
        qapp.processEvents()
        outside = list(ran)
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()

    assert outside == []
    assert ran == ["later"]
