"""`ThreadedServer`: the embedded `DeployServer` on a thread and event loop of its own.

`deploy-console` no longer uses it: its server runs in a child process
(`console.server_process.ProcessServer`), because on a thread it shares the
interpreter lock with the window (at 4,000 devices reporting, 1,700 reports/s
acknowledged and a loop lag p99 of 320 ms). It stays for the tests that need the
server's internals (`on_server_loop`) and for comparison in the benchmark
(`BENCH_CONSOLE_SERVER=thread`).

Why a thread at first: with the server on the window's qasync loop, every
Socket.IO read, registration and status report of thousands of agents ran
between two repaints, and the window lagged (benchmark 4: loop lag p99 49-75 ms
at 500 devices, 113 ms and a 1.45 s pause at 2,000). Here the server runs on an
asyncio loop of its own (uvloop's where it exists, as in `deploy-server`) in a
thread called "deploy-server"; the window's loop only hears of it through a few
thread-safe calls.

Thread affinity, written down once:

- Console thread (the Qt/qasync loop that calls `start()`): every public method
  and property of `ThreadedServer` is called here, and every listener added with
  `add_listener` is called here, as is the `progress` callback of `add_software`.
- Server thread: the `DeployServer` object and everything in it. Nothing on the
  console thread touches it except through `_call` (a coroutine run on the
  server's loop, its result or exception handed back unchanged).

Both threads still share one interpreter lock; `console.loop.SharedInterpreter`
says how while the server thread runs (garbage collected on the console thread
only, a shorter switch interval), and `console.ui.tables.TableView` paints without
giving the lock away between cells.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from console.embedded import EmbeddedServer, ServerInfo
from console.loop import shared_interpreter
from server.app import DeployServer
from server.config import ServerConfig
from server.runtime import new_event_loop

log = logging.getLogger(__name__)

THREAD_NAME = "deploy-server"
WATCH_INTERVAL_S = 0.5
"""How often the server thread checks that the console thread still runs."""

T = TypeVar("T")


class ThreadedServer(EmbeddedServer):
    """A `DeployServer` running on its own thread; the same interface, awaited from
    the console's loop.

    `start()` starts a (non-daemon) thread with a fresh asyncio loop, builds and
    starts the `DeployServer` there and returns once it listens; its start errors
    (`PortInUseError`, `DataDirError`, `DatabaseTooNewError`: `EnvironmentFault`s)
    reach the caller unchanged, with the thread already ended. `stop()` stops the
    server on its loop, ends the loop and the thread, and waits without blocking
    the console's loop. Every coroutine method of `DeployServer` the console uses is
    forwarded the same way; see `server.app.DeployServer` for what each does.

    Server events reach listeners on the console thread, in the server's order,
    at a low cost per event: the server thread appends each event to a list under a
    lock, and only when the list was empty schedules ONE drain on the console loop,
    which takes the whole list. Events arriving while a drain is pending ride along.
    """

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config)
        self._server: DeployServer | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._console_loop: asyncio.AbstractEventLoop | None = None
        self._thread_ended: asyncio.Future[None] | None = None
        self._stop_requested: asyncio.Event | None = None  # lives on the server loop
        self._unsubscribe_server: Callable[[], None] | None = None
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._pending_lock = threading.Lock()

    # --- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        """Start the server thread and the server on it; return once it listens.

        Raises the server's start errors unchanged; the thread has ended by then.
        """
        if self._thread is not None:
            raise RuntimeError("the server is already started")
        console_loop = asyncio.get_running_loop()
        loop_ready: concurrent.futures.Future[asyncio.AbstractEventLoop] = (
            concurrent.futures.Future()
        )
        self._console_loop = console_loop
        self._thread_ended = console_loop.create_future()
        self._thread = threading.Thread(
            target=self._run_thread,
            args=(
                console_loop,
                self._thread_ended,
                loop_ready,
                threading.current_thread(),
            ),
            name=THREAD_NAME,
            daemon=False,  # the server commits and disconnects before the process ends
        )
        shared_interpreter.acquire()
        self._thread.start()
        try:
            self._loop = await asyncio.wrap_future(loop_ready)
            info = await self._call(self._start_on_server_loop())
        except BaseException:
            await self._end_thread()
            raise
        self._started(info)

    async def stop(self) -> None:
        """Stop the server (agents see a clean disconnect, the database is
        committed), then its loop and thread. Idempotent."""
        if self._thread is None:
            return
        try:
            if self._running:
                await self._call(self._stop_on_server_loop())
        finally:
            self._running = False
            await self._end_thread()

    def _run_thread(
        self,
        console_loop: asyncio.AbstractEventLoop,
        thread_ended: asyncio.Future[None],
        loop_ready: concurrent.futures.Future[asyncio.AbstractEventLoop],
        console_thread: threading.Thread,
    ) -> None:
        """The server thread: one asyncio loop until asked to stop (server thread).

        `asyncio.Runner` cancels what is left, shuts the async generators and the
        loop's executor (the server hashes packages there) down and closes the loop;
        the thread's last act is to tell the console loop it has ended.
        """
        try:
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(self._serve(loop_ready, console_thread))
        except BaseException as exc:  # the thread must still say it ended
            if not loop_ready.done():
                loop_ready.set_exception(exc)
            else:
                log.exception("the server thread failed")
        finally:
            # A console thread that has ended waits for nothing (and its loop may
            # be half torn down): tell only a living one.
            if console_thread.is_alive():
                _tell_console(console_loop, thread_ended)

    async def _serve(
        self,
        loop_ready: concurrent.futures.Future[asyncio.AbstractEventLoop],
        console_thread: threading.Thread,
    ) -> None:
        """Run until `stop()` asks, or until the console thread is gone (server loop).

        The second case is a console that ended without `stop()` (a bug, an
        uncaught error): the server stops itself so the process can still exit.
        """
        stop_requested = asyncio.Event()
        self._stop_requested = stop_requested
        loop_ready.set_result(asyncio.get_running_loop())
        # No event tells this loop that another thread ended: look twice a second.
        while console_thread.is_alive():
            try:
                await asyncio.wait_for(stop_requested.wait(), WATCH_INTERVAL_S)
                return
            except TimeoutError:
                continue
        log.warning("the console ended without stopping its server; stopping it now")
        if self._running and self._server is not None:
            await self._server.stop()

    async def _end_thread(self) -> None:
        """Ask the server loop to end and wait for the thread, without blocking."""
        thread, loop, ended = self._thread, self._loop, self._thread_ended
        if thread is None:
            return
        stop_requested = self._stop_requested
        if loop is not None and stop_requested is not None:
            # RuntimeError: the loop has closed already, the thread ends by itself.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop_requested.set)
        if ended is not None:
            await asyncio.shield(ended)
        # The thread resolved `ended` as its last act: this join returns at once.
        thread.join()
        self._thread = self._loop = self._thread_ended = None
        self._stop_requested = None
        shared_interpreter.release()

    # --- on the server loop -------------------------------------------------------

    async def _start_on_server_loop(self) -> ServerInfo:
        """Create and start the `DeployServer`, follow its events (server loop)."""
        server = DeployServer(self.config)
        await server.start()
        self._server = server
        self._unsubscribe_server = server.add_listener(self._on_server_event)
        return ServerInfo.of(server)

    async def _stop_on_server_loop(self) -> None:
        if self._unsubscribe_server is not None:
            self._unsubscribe_server()
            self._unsubscribe_server = None
        assert self._server is not None
        await self._server.stop()

    def _on_server_event(self, event: str, payload: dict[str, Any]) -> None:
        """The server's listener (server thread): queue the event for the console.

        Only the first event of a batch costs a cross-thread call.
        """
        if not self._listeners:
            return
        with self._pending_lock:
            self._pending.append((event, payload))
            first = len(self._pending) == 1
        if first:
            assert self._console_loop is not None
            self._console_loop.call_soon_threadsafe(self._deliver_pending)

    # --- on the console loop ------------------------------------------------------

    def _deliver_pending(self) -> None:
        """Call the listeners with every queued event, in order (console thread)."""
        with self._pending_lock:
            events, self._pending = self._pending, []
        self._deliver(events)

    async def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the server loop; its result or exception, unchanged.

        Cancelling the caller cancels the coroutine on the server loop.
        """
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("the server is not started")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def on_server_loop(self, function: Callable[[DeployServer], Any]) -> Any:
        """`function(server)` on the server loop; a coroutine it returns is awaited
        there (a task or future is handed back as it is).

        For tests, diagnostics and the benchmark, which need the server's internals
        (its gateway, repository) or its loop: they may only be touched there.
        """
        self._require()
        server = self._server

        async def run() -> Any:
            result = function(server)
            if asyncio.iscoroutine(result):
                return await result
            return result

        return await self._call(run())

    async def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._require()
        progress = kwargs.get("progress")
        if progress is not None:
            console_loop = self._console_loop
            assert console_loop is not None

            def forward(fraction: float) -> None:
                console_loop.call_soon_threadsafe(progress, fraction)

            kwargs["progress"] = forward
        return await self._call(getattr(self._server, method)(*args, **kwargs))


def _tell_console(
    console_loop: asyncio.AbstractEventLoop, thread_ended: asyncio.Future[None]
) -> None:
    """Resolve `thread_ended` on the console loop (server thread, its last act)."""

    def resolve() -> None:
        if not thread_ended.done():
            thread_ended.set_result(None)

    if console_loop.is_closed():
        return
    # RuntimeError: the console loop closed meanwhile, nobody waits any more.
    with contextlib.suppress(RuntimeError):
        console_loop.call_soon_threadsafe(resolve)
