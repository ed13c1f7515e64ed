"""`ProcessServer`: the embedded `DeployServer` in a child process of its own.

Why a process: the server of a big fleet is busy. With 4,000 agents reporting
5,000 times a second the server alone keeps one core at work, and on a thread of
the console's process (`console.server_thread`) it shares the interpreter lock
with the window: the window's loop lagged 320 ms at the 99th percentile (1.1 s at
worst) and the server, paying for every hand-over of the lock, acknowledged only
1,700 reports a second (benchmark 4, `bench/README.md`). In a process of its own
the server has a core and an interpreter to itself, and the window is a client
that hears of it over one pipe.

The child is started with multiprocessing's "spawn" method on every platform (no
fork of a process with Qt and threads in it); a frozen console re-executes itself
for it (`multiprocessing.freeze_support()` in its entry point). The child runs the
server on uvloop where it exists, as `deploy-server` does; its log records come to
the console's logging (the activity dock, the terminal), its events to the
console's listeners.

The pipe carries pickled tuples:

    console -> server   ("call", id, method, args, kwargs)   run DeployServer.<method>
                        ("cancel", id)                       the caller gave up
                        ("stop",)                            stop the server, exit
    server -> console   ("started", ServerInfo) | ("start_failed", exception)
                        ("result", id, value) | ("error", id, exception)
                        ("progress", id, fraction)           add_software's progress
                        ("outbox", [("event", name, payload) | ("log", record)])
                        ("stopped",)

Whoever goes first, the other notices: the console's end of the pipe closes when
the console process ends however it ends, and the server then stops cleanly (the
agents are disconnected, the database committed) and exits; a server process that
dies fails the calls waiting on it with `ServerProcessError`.

Threads: in each process one reader thread blocks on the pipe and hands every
message to its process's event loop. The server process writes from a thread of
its own too, so that a console slow to read never holds up the server's loop;
what the server says meanwhile gathers into one outbox message. Everything else
happens on the loops. Every
method of `ProcessServer` is called on the console thread, and every listener and
`progress` callback is called there.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import multiprocessing.connection
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from console.embedded import EmbeddedServer, ServerInfo
from server.config import ServerConfig

log = logging.getLogger(__name__)

PROCESS_NAME = "deploy-server"
READER_THREAD_NAME = "deploy-server-pipe"
WRITER_THREAD_NAME = "deploy-server-pipe-writer"
EXIT_TIMEOUT_S = 30.0
"""How long a stopped server process may take to exit before it is killed."""


class ServerProcessError(RuntimeError):
    """The server process is gone, or sent something that cannot cross the pipe."""


_Pipe = multiprocessing.connection.Connection


def _spawn_context() -> Any:
    return multiprocessing.get_context("spawn")


class ProcessServer(EmbeddedServer):
    """A `DeployServer` running in a child process; the same interface, awaited
    from the console's loop.

    `start()` starts the process, which builds and starts the server, and returns
    once it listens; its start errors (`PortInUseError`, `DataDirError`,
    `DatabaseTooNewError`) reach the caller unchanged, with the process already
    ended. `stop()` stops the server and waits for the process to exit, without
    blocking the console's loop. Calls are answered in any order; a caller that
    is cancelled cancels its call in the server process.
    """

    def __init__(self, config: ServerConfig) -> None:
        super().__init__(config)
        self._process: Any = None
        self._pipe: _Pipe | None = None
        self._reader: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._progress: dict[int, Callable[[float], Any]] = {}
        self._ids = itertools.count(1)
        self._first: asyncio.Future[Any] | None = None  # "started" or "start_failed"
        self._stopped: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[int | None] | None = None  # the exit code
        self._collector: Any = None
        self.on_lost: Callable[[int | None], Any] | None = None
        """Called (console thread) with the exit code if the running server
        process ends without having been asked to: killed, crashed."""

    @property
    def pid(self) -> int | None:
        """The server process's id while it runs (diagnostics, tests)."""
        return self._process.pid if self._process is not None else None

    async def wait_exited(self) -> int | None:
        """Wait until the server process has exited, however it ended; its exit
        code (negative: the signal that ended it, on POSIX)."""
        if self._ended is None:
            raise RuntimeError("the server is not started")
        return await asyncio.shield(self._ended)

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server process; return once its server listens.

        Raises the server's start errors unchanged; the process has ended by then.
        """
        if self._process is not None:
            raise RuntimeError("the server is already started")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._first = loop.create_future()
        self._stopped = loop.create_future()
        self._ended = loop.create_future()
        context = _spawn_context()
        ours, theirs = context.Pipe(duplex=True)
        self._process = context.Process(
            target=child_main,
            args=(theirs, self.config, _forwarded_log_level()),
            name=PROCESS_NAME,
            # A daemon is terminated (SIGTERM: a clean stop, see child_main) by
            # multiprocessing's exit handler if the console exits without stop().
            daemon=True,
        )
        self._process.start()
        theirs.close()  # else the child's exit would not close the pipe for us
        self._collector = _gui_collector()
        if self._collector is not None:
            # The reader thread allocates (it unpickles every message): with
            # automatic collection on, a collection could run there and destroy
            # a Qt object of the window on the wrong thread.
            self._collector.acquire()
        self._pipe = ours
        # A daemon: a console that ends without stop() (its loop broke, say)
        # must not wait at exit for this thread's read, which only the child's
        # exit ends; multiprocessing's exit handler then terminates the child,
        # which stops cleanly on SIGTERM.
        self._reader = threading.Thread(
            target=self._read,
            args=(ours, self._process),
            name=READER_THREAD_NAME,
            daemon=True,
        )
        self._reader.start()
        try:
            kind, value = await self._first
        except BaseException:
            await self._end_process()
            raise
        if kind == "start_failed":
            await self._end_process()
            raise value
        self._started(value)

    async def stop(self) -> None:
        """Stop the server (agents see a clean disconnect, the database is
        committed), then wait for its process to exit. Idempotent."""
        if self._process is None:
            return
        try:
            if self._running and self._send(("stop",)):
                assert self._stopped is not None
                await asyncio.shield(self._stopped)
        finally:
            self._running = False
            await self._end_process()

    async def _end_process(self) -> None:
        """Wait until the process has exited and the reader thread ended."""
        if self._process is None:
            return
        if self._process.is_alive():
            # A child that is still starting, or was not asked yet: it stops at
            # this (or has already stopped, and then the pipe is closed).
            self._send(("stop",))
        assert self._ended is not None
        code = await asyncio.shield(self._ended)
        assert self._reader is not None
        self._reader.join()  # it resolved `_ended` as its last act
        if self._pipe is not None:
            self._pipe.close()
        log.debug("server process %s exited with %s", self._process.pid, code)
        self._process = self._pipe = self._reader = None
        if self._collector is not None:
            self._collector.release()
            self._collector = None

    # --- calls ----------------------------------------------------------------------

    async def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self._require()
        if not self._running:
            raise ServerProcessError("the server process is not running")
        assert self._loop is not None
        call_id = next(self._ids)
        progress = kwargs.get("progress")
        if progress is not None:
            self._progress[call_id] = progress
            kwargs["progress"] = True  # the child reports it as "progress" messages
        future = self._loop.create_future()
        self._calls[call_id] = future
        try:
            if not self._send(("call", call_id, method, args, kwargs)):
                raise ServerProcessError("the server process is gone")
            return await future
        except asyncio.CancelledError:
            self._send(("cancel", call_id))
            raise
        finally:
            self._calls.pop(call_id, None)
            self._progress.pop(call_id, None)

    def _send(self, message: tuple[Any, ...]) -> bool:
        """Write one message to the pipe (console thread); False if it is closed."""
        pipe = self._pipe
        if pipe is None:
            return False
        try:
            pipe.send(message)
        except (OSError, ValueError):  # the child has gone; the reader sees EOF
            return False
        return True

    # --- what comes back ------------------------------------------------------------

    def _read(self, pipe: _Pipe, process: Any) -> None:
        """The reader thread: hand each message to the console loop, in order;
        after the child's end closes, wait for it to exit and say so."""
        loop = self._loop
        assert loop is not None
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                break
            except Exception as exc:  # a message that does not unpickle here
                message = ("undecodable", exc)
            loop.call_soon_threadsafe(self._on_message, message)
        process.join(EXIT_TIMEOUT_S)
        if process.is_alive():
            log.error("the server process did not exit; killing it")
            process.kill()
            process.join()
        with contextlib.suppress(RuntimeError):  # the console loop has closed
            loop.call_soon_threadsafe(self._on_ended, process.exitcode)

    def _on_message(self, message: tuple[Any, ...]) -> None:
        """One message from the server process (console thread)."""
        kind = message[0]
        if kind == "outbox":
            self._on_outbox(message[1])
        elif kind in ("result", "error"):
            future = self._calls.get(message[1])
            if future is not None and not future.done():
                if kind == "result":
                    future.set_result(message[2])
                else:
                    future.set_exception(message[2])
        elif kind == "progress":
            callback = self._progress.get(message[1])
            if callback is not None:
                callback(message[2])
        elif kind in ("started", "start_failed"):
            if self._first is not None and not self._first.done():
                self._first.set_result((kind, message[1]))
        elif kind == "stopped":
            if self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)
        elif kind == "undecodable":
            log.error("a message from the server process was lost: %s", message[1])

    def _on_outbox(self, items: list[tuple[Any, ...]]) -> None:
        events: list[tuple[str, dict[str, Any]]] = []
        for item in items:
            if item[0] == "event":
                events.append((item[1], item[2]))
                continue
            if events:  # keep events and log lines in the server's order
                self._deliver(events)
                events = []
            record: logging.LogRecord = item[1]
            logger = logging.getLogger(record.name)
            if logger.isEnabledFor(record.levelno):  # as the console configured it
                logger.handle(record)
        self._deliver(events)

    def _on_ended(self, code: int | None) -> None:
        """The server process has exited (console thread)."""
        was_running = self._running
        self._running = False
        gone = ServerProcessError(
            f"the server process ended unexpectedly (exit code {code})"
        )
        if self._first is not None and not self._first.done():
            self._first.set_exception(gone)
        lost = was_running and (self._stopped is None or not self._stopped.done())
        if lost:
            log.error("%s", gone)
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        for future in self._calls.values():
            if not future.done():
                future.set_exception(gone)
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(code)
        if lost and self.on_lost is not None:
            try:
                self.on_lost(code)
            except Exception:  # the report of a loss must not hide it
                log.exception("on_lost failed")


def _gui_collector() -> Any:
    """`console.loop.gui_collector` when a Qt application runs in this process,
    else None (a script without a window). Imported here, not at the top: the
    server's child process imports this module and needs no Qt."""
    try:
        from PySide6.QtCore import QCoreApplication
    except ImportError:
        return None
    if QCoreApplication.instance() is None:
        return None
    from console.loop import gui_collector

    return gui_collector


def _forwarded_log_level() -> int:
    """The lowest level the console's logging wants from the server: the root's,
    and INFO at most, which the activity dock shows."""
    return min(logging.getLogger().getEffectiveLevel(), logging.INFO)


# --- the child process --------------------------------------------------------------


def child_main(pipe: _Pipe, config: ServerConfig, log_level: int) -> None:
    """The server process: run a `DeployServer` for the console at `pipe`."""
    from server.runtime import new_event_loop

    # Ctrl-C in a terminal reaches the whole process group: the console decides
    # when its server stops, and tells it over the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(_Child(pipe, config, log_level).serve())
    finally:
        pipe.close()


class _Child:
    """The server's side of the pipe (server process, its event loop)."""

    def __init__(self, pipe: _Pipe, config: ServerConfig, log_level: int) -> None:
        self.pipe = pipe
        self.config = config
        self.log_level = log_level
        self.loop: asyncio.AbstractEventLoop | None = None
        self.inbox: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        self.calls: dict[int, asyncio.Task[None]] = {}
        # Messages for the console, in order, written by the writer thread. The
        # last may be an "outbox" still taking items.
        self.outgoing: list[tuple[Any, ...]] = []
        self.outgoing_changed = threading.Condition()
        self.closing = False
        self.server: Any = None

    async def serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        writer = threading.Thread(target=self._write, name=WRITER_THREAD_NAME)
        writer.start()
        try:
            await self._serve()
        finally:
            with self.outgoing_changed:
                self.closing = True
                self.outgoing_changed.notify()
            writer.join()  # everything said is written before the process ends

    async def _serve(self) -> None:
        from server.app import DeployServer
        from server.runtime import tune_garbage_collector

        assert self.loop is not None
        self._forward_logging()
        threading.Thread(
            target=self._read, name=READER_THREAD_NAME, daemon=True
        ).start()
        if sys.platform != "win32":  # a terminate() is asked to stop, not killed
            self.loop.add_signal_handler(
                signal.SIGTERM, self.inbox.put_nowait, ("stop",)
            )
        server = DeployServer(self.config)
        try:
            await server.start()
        except Exception as exc:
            self._send(("start_failed", _crossable(exc)))
            return
        self.server = server
        server.add_listener(self._on_event)
        tune_garbage_collector()
        self._send(("started", ServerInfo.of(server)))
        try:
            await self._run()
        finally:
            for task in self.calls.values():
                task.cancel()
            await server.stop()
            self._send(("stopped",))

    async def _run(self) -> None:
        """Answer the console until it says stop or goes away."""
        while True:
            message = await self.inbox.get()
            kind = message[0]
            if kind == "call":
                _, call_id, method, args, kwargs = message
                self.calls[call_id] = asyncio.create_task(
                    self._call(call_id, method, args, kwargs)
                )
            elif kind == "cancel":
                task = self.calls.get(message[1])
                if task is not None:
                    task.cancel()
            elif kind == "stop":
                return
            elif kind == "eof":
                log.warning("the console went away; stopping its server")
                return

    async def _call(
        self, call_id: int, method: str, args: tuple, kwargs: dict[str, Any]
    ) -> None:
        try:
            if kwargs.get("progress"):
                kwargs["progress"] = self._progress_sender(call_id)
            result = await getattr(self.server, method)(*args, **kwargs)
        except asyncio.CancelledError:
            return  # the console stopped waiting; nobody reads an answer
        except Exception as exc:
            self._send(("error", call_id, _crossable(exc)))
        else:
            self._send(("result", call_id, result))
        finally:
            self.calls.pop(call_id, None)

    def _progress_sender(self, call_id: int) -> Callable[[float], None]:
        def progress(fraction: float) -> None:  # any thread (hashing runs in one)
            self._send(("progress", call_id, fraction))

        return progress

    # --- the outbox: events and log records, in order ---------------------------------

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        self._post(("event", event, payload))

    def _post(self, item: tuple[Any, ...]) -> None:
        """Queue an event or log record for the console (any thread): it joins
        the outbox waiting to be written, or starts one."""
        with self.outgoing_changed:
            if self.outgoing and self.outgoing[-1][0] == "outbox":
                self.outgoing[-1][1].append(item)
            else:
                self.outgoing.append(("outbox", [item]))
                self.outgoing_changed.notify()

    def _send(self, message: tuple[Any, ...]) -> None:
        """Queue one message for the console (any thread), after what came before."""
        with self.outgoing_changed:
            self.outgoing.append(message)
            self.outgoing_changed.notify()

    def _forward_logging(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(_OutboxHandler(self._post))
        root.setLevel(self.log_level)
        logging.getLogger("alembic").setLevel(logging.WARNING)

    # --- the pipe -----------------------------------------------------------------

    def _read(self) -> None:
        """The reader thread: every message into the inbox; "eof" at the end."""
        loop = self.loop
        assert loop is not None
        while True:
            try:
                message = self.pipe.recv()
            except (EOFError, OSError):
                message = ("eof",)
            except Exception:  # a message that does not unpickle
                log.exception("a message from the console was lost")
                continue
            try:
                loop.call_soon_threadsafe(self.inbox.put_nowait, message)
            except RuntimeError:  # the loop has closed: the server has stopped
                return
            if message[0] == "eof":
                return

    def _write(self) -> None:
        """The writer thread: write what is queued, in order, until closing.

        The server's loop never waits for the pipe: while the console is slow to
        read (busy repainting, say), the writes wait here, and the events of the
        meantime gather into one outbox.
        """
        while True:
            with self.outgoing_changed:
                while not self.outgoing and not self.closing:
                    self.outgoing_changed.wait()
                messages, self.outgoing = self.outgoing, []
                if not messages:
                    return  # closing, and everything is written
            for message in messages:
                self._write_one(message)

    def _write_one(self, message: tuple[Any, ...]) -> None:
        """Something that cannot be pickled is replaced by an error for the
        console, not lost without a word."""
        try:
            self.pipe.send(message)
        except (OSError, ValueError):
            pass  # the console has gone; the reader thread says so
        except Exception as exc:  # pickling failed
            if message[0] in ("result", "error"):
                error = ServerProcessError(f"the answer could not be sent: {exc}")
                self._write_one(("error", message[1], error))
            else:
                log.error("a %s message could not be sent: %s", message[0], exc)


class _OutboxHandler(logging.Handler):
    """Log records to the console's logging, through the outbox (any thread)."""

    def __init__(self, post: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._post = post

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # As logging.handlers.QueueHandler.prepare: the message and any
            # traceback as text, nothing that might not pickle.
            message = self.format(record)
            record = logging.makeLogRecord(record.__dict__)
            record.msg, record.message = message, message
            record.args = record.exc_info = record.exc_text = None
            record.stack_info = None
            self._post(("log", record))
        except Exception:
            self.handleError(record)


def _crossable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling unchanged in kind, else a `ServerProcessError`
    with its text (an exception class with an unusual constructor, say)."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
    except Exception:
        copy = None
    if type(copy) is type(exc) and str(copy) == str(exc):
        return exc
    return ServerProcessError(f"{type(exc).__name__}: {exc}")
