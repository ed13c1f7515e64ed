"""Background coroutines started from Qt slots, held by reference and awaited at exit.

Runs on the one asyncio loop that is also the Qt loop (qasync).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from server.errors import ServerError

log = logging.getLogger(__name__)


class TaskKeeper:
    """Starts coroutines as tasks, keeps them alive, reports their failures.

    Args:
        on_error: called with a one-line text a technician can read when a task
            fails with a `ServerError` (port in use, disk full, unknown package ...);
            other exceptions are bugs and are logged with their traceback as well.
    """

    def __init__(self, on_error: Callable[[str], None]) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._on_error = on_error

    def spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run `coro` in the background; `what` names it in logs and error texts."""
        task = asyncio.get_running_loop().create_task(coro, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if isinstance(exc, ServerError):
            log.warning("%s failed: %s", task.get_name(), exc)
        else:
            log.error("%s failed", task.get_name(), exc_info=exc)
        self._on_error(f"{task.get_name()} failed: {exc}")

    async def cancel_all(self) -> None:
        """Cancel every running task and wait until they have all finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def drain(self, timeout_s: float) -> None:
        """Let running tasks finish for up to `timeout_s`, then cancel the rest.

        Cancelling a task in the middle of a database call can leave a connection
        behind, so shutdown gives them a moment to complete first.
        """
        tasks = list(self._tasks)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout_s)
            for task in pending:
                log.warning("%s still running at shutdown; cancelled", task.get_name())
        await self.cancel_all()

    async def join(self) -> None:
        """Wait until every task running now has finished (failures are reported)."""
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._tasks)
