"""`Coalescer`: many callers' small writes, carried out as one batch at a time.

A registration storm is thousands of agents each wanting one device row written;
a transaction each costs far more than the row. A `Coalescer` runs one batch at a
time: the first item after a quiet spell goes out at once (no added delay), and
whatever arrives while a batch is being written waits for the next one. So under
load the batches grow by themselves, and when the load is light every item is its
own batch, exactly as before.

Runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BATCH = 500
"""The most items in one batch (one transaction); more wait for the next."""


class Coalescer(Generic[T, R]):
    """`await submit(item)` returns `process(batch)`'s result for that item.

    Args:
        process: carries out a batch; returns one result per item, in order. If
            it raises, every caller of that batch gets the exception.
        name: for the runner task and the log.
        max_batch: the most items handed to one `process` call.
    """

    def __init__(
        self,
        process: Callable[[list[T]], Awaitable[Sequence[R]]],
        name: str,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        self._process = process
        self._name = name
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task | None = None

    async def submit(self, item: T) -> R:
        """`item`'s result, once the batch holding it has been carried out."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name=self._name
            )
        return await future

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                await self._carry_out(batch)
        finally:
            self._runner = None

    async def _carry_out(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._process([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(
                    f"{self._name}: {len(results)} results for {len(batch)} items"
                )
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise  # cancelled: the callers were told, the runner stops
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():  # its caller may have been cancelled
                future.set_result(result)

    async def drain(self) -> None:
        """Return once every item submitted so far has been carried out."""
        while self._runner is not None:
            await asyncio.shield(self._runner)
