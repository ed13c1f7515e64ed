"""`ThreadedServer`: the embedded `DeployServer` on a thread and event loop of its own.

Why a thread: with the server on the window's qasync loop, every Socket.IO read,
registration and status report of thousands of agents ran between two repaints,
and the window lagged (benchmark 4: loop lag p99 49-75 ms at 500 devices, 113 ms
and a 1.45 s pause at 2,000). Here the server runs on an asyncio loop of its own
(uvloop's where it exists, as in `deploy-server`) in a thread called
"deploy-server"; the window's loop only hears of it through a few thread-safe
calls.

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
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from console.loop import shared_interpreter
from server.app import DeployServer
from server.config import ServerConfig
from server.runtime import new_event_loop

log = logging.getLogger(__name__)

THREAD_NAME = "deploy-server"
WATCH_INTERVAL_S = 0.5
"""How often the server thread checks that the console thread still runs."""

Listener = Callable[[str, dict[str, Any]], Any]
T = TypeVar("T")


@dataclass(frozen=True)
class _Started:
    """What the console may read about a started server without asking its thread."""

    server: DeployServer
    port: int
    url: str
    enrollment_token: str
    admin_token: str
    tokens_generated: bool


class ThreadedServer:
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
        self.config = config
        self._started: _Started | None = None  # kept after stop, as DeployServer's
        self._running = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._console_loop: asyncio.AbstractEventLoop | None = None
        self._thread_ended: asyncio.Future[None] | None = None
        self._stop_requested: asyncio.Event | None = None  # lives on the server loop
        self._unsubscribe_server: Callable[[], None] | None = None
        self._enrollment_token: str | None = None
        # Written on the console thread only; replaced, never changed in place, so
        # the server thread can read it without the lock.
        self._listeners: tuple[Listener, ...] = ()
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._pending_lock = threading.Lock()

    # --- what the console reads -------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._started.port if self._started else None

    @property
    def url(self) -> str:
        return self._require().url

    @property
    def enrollment_token(self) -> str:
        self._require()
        assert self._enrollment_token is not None
        return self._enrollment_token

    @property
    def admin_token(self) -> str:
        return self._require().admin_token

    @property
    def tokens_generated(self) -> bool:
        return self._require().tokens_generated

    @property
    def running(self) -> bool:
        """True from a successful `start()` until `stop()`."""
        return self._running

    def _require(self) -> _Started:
        if self._started is None:
            raise RuntimeError("the server is not started")
        return self._started

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
            started = await self._call(self._start_on_server_loop())
        except BaseException:
            await self._end_thread()
            raise
        self._started = started
        self._enrollment_token = started.enrollment_token
        self._running = True

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
        if self._running and self._started is not None:
            await self._started.server.stop()

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

    async def _start_on_server_loop(self) -> _Started:
        """Create and start the `DeployServer`, follow its events (server loop)."""
        server = DeployServer(self.config)
        await server.start()
        self._unsubscribe_server = server.add_listener(self._on_server_event)
        return _Started(
            server=server,
            port=int(server.port or 0),
            url=server.url,
            enrollment_token=server.enrollment_token,
            admin_token=server.admin_token,
            tokens_generated=server.tokens_generated,
        )

    async def _stop_on_server_loop(self) -> None:
        if self._unsubscribe_server is not None:
            self._unsubscribe_server()
            self._unsubscribe_server = None
        assert self._started is not None
        await self._started.server.stop()

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
        for event, payload in events:
            # Read for each event: a listener removed during the drain hears no more.
            for listener in self._listeners:
                try:
                    listener(event, payload)
                except Exception:  # a broken listener must not stop the updates
                    log.exception("listener %r failed on %s", listener, event)

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event, payload)` on the console thread for every update
        the server sends to the consoles. Returns a function that unsubscribes;
        events not yet delivered by then are dropped for that listener."""
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

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
        server = self._require().server

        async def run() -> Any:
            result = function(server)
            if asyncio.iscoroutine(result):
                return await result
            return result

        return await self._call(run())

    # --- the server's interface, forwarded --------------------------------------

    async def list_devices(self) -> list[dict[str, Any]]:
        return await self._call(self._require().server.list_devices())

    async def list_software(self) -> list[dict[str, Any]]:
        return await self._call(self._require().server.list_software())

    async def add_software(
        self,
        path: str | Path,
        *,
        name: str,
        version: str = "",
        installer_type: str,
        install_args: str = "",
        timeout_s: int = 3600,
        file_name: str | None = None,
        progress: Callable[[float], Any] | None = None,
        move: bool = False,
    ) -> dict[str, Any]:
        """As `DeployServer.add_software`; `progress(fraction)` is called on the
        console thread."""
        forward = None
        if progress is not None:
            console_loop = self._console_loop
            assert console_loop is not None

            def forward(fraction: float) -> None:
                console_loop.call_soon_threadsafe(progress, fraction)

        return await self._call(
            self._require().server.add_software(
                path,
                name=name,
                version=version,
                installer_type=installer_type,
                install_args=install_args,
                timeout_s=timeout_s,
                file_name=file_name,
                progress=forward,
                move=move,
            )
        )

    async def create_deployment(
        self,
        software_ids: Iterable[int],
        device_ids: Iterable[int],
        deployment_name: str | None = None,
    ) -> dict[str, Any]:
        return await self._call(
            self._require().server.create_deployment(
                list(software_ids), list(device_ids), deployment_name
            )
        )

    async def get_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._call(self._require().server.get_deployment(deployment_id))

    async def list_deployments(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self._call(self._require().server.list_deployments(limit))

    async def cancel_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._call(self._require().server.cancel_deployment(deployment_id))

    async def retry_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._call(self._require().server.retry_deployment(deployment_id))

    async def regenerate_enrollment_token(self) -> str:
        token = await self._call(self._require().server.regenerate_enrollment_token())
        self._enrollment_token = token
        return token

    async def wait_idle(self) -> None:
        await self._call(self._require().server.wait_idle())


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
