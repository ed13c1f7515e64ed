"""`Coalescer`: what arrives while a batch is written goes, together, into the next."""

import asyncio

import pytest

from server.coalesce import Coalescer
from tests.helpers import TIMEOUT


class Recorder:
    """A `process` that records its batches and can be held inside one."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.inside = asyncio.Event()
        self.release = asyncio.Event()
        self.release.set()
        self.fail_with: Exception | None = None

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(list(items))
        self.inside.set()
        await self.release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [item * 10 for item in items]


async def _holding_first_batch(
    recorder: Recorder, max_batch: int = 500
) -> tuple[Coalescer, asyncio.Future]:
    """A coalescer whose first batch, [1], is being carried out and held there;
    and the future of that first item."""
    recorder.release.clear()
    coalescer = Coalescer(recorder, "test", max_batch=max_batch)
    first = asyncio.ensure_future(coalescer.submit(1))
    await recorder.inside.wait()
    return coalescer, first


async def test_a_lone_item_is_carried_out_at_once_as_its_own_batch():
    recorder = Recorder()
    coalescer = Coalescer(recorder, "test")

    async with asyncio.timeout(TIMEOUT):
        assert await coalescer.submit(1) == 10
    assert recorder.batches == [[1]]


async def test_items_arriving_during_a_batch_share_the_next_one():
    recorder = Recorder()
    coalescer, first = await _holding_first_batch(recorder)

    later = [asyncio.ensure_future(coalescer.submit(n)) for n in (2, 3, 4)]
    await asyncio.sleep(0)  # let them queue behind the held batch
    recorder.release.set()

    async with asyncio.timeout(TIMEOUT):
        results = await asyncio.gather(first, *later)
    assert results == [10, 20, 30, 40]
    assert recorder.batches == [[1], [2, 3, 4]]


async def test_batches_are_capped_and_the_rest_follows():
    recorder = Recorder()
    coalescer, first = await _holding_first_batch(recorder, max_batch=2)
    later = [asyncio.ensure_future(coalescer.submit(n)) for n in range(2, 7)]
    await asyncio.sleep(0)
    recorder.release.set()

    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(first, *later)
    assert recorder.batches == [[1], [2, 3], [4, 5], [6]]


async def test_a_failed_batch_fails_its_callers_only():
    recorder = Recorder()
    coalescer, doomed = await _holding_first_batch(recorder)
    recorder.fail_with = OSError("disk full")
    recorder.release.set()

    with pytest.raises(OSError, match="disk full"):
        async with asyncio.timeout(TIMEOUT):
            await doomed
    recorder.fail_with = None
    async with asyncio.timeout(TIMEOUT):
        assert await coalescer.submit(2) == 20


async def test_a_cancelled_caller_does_not_stop_the_others():
    recorder = Recorder()
    coalescer, first = await _holding_first_batch(recorder)
    gone = asyncio.ensure_future(coalescer.submit(2))
    kept = asyncio.ensure_future(coalescer.submit(3))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.release.set()

    async with asyncio.timeout(TIMEOUT):
        assert await first == 10
        assert await kept == 30
        await coalescer.drain()
    assert gone.cancelled()
