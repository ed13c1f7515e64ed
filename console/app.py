"""`deploy-console`: the desktop program with its embedded server (qasync)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PySide6.QtCore import QSocketNotifier
from PySide6.QtWidgets import QApplication, QMessageBox, QStyleFactory

from server.config import DEFAULT_PORT, ServerConfig, default_data_dir, port_number
from server.errors import (
    DatabaseTooNewError,
    DataDirError,
    EnvironmentFault,
    PortInUseError,
)

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_SELF_TEST_FAILED = 1
EXIT_STARTUP_ERROR = 2


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="deploy-console",
        description="Push software to your devices: the console and its server.",
    )
    parser.add_argument("--port", type=port_number, default=DEFAULT_PORT)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument(
        "--demo", action="store_true", help="start sample agents and packages"
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="offscreen: start the server and one agent, deploy a sample, exit 0/1",
    )
    parser.add_argument(
        "--agent-cmd",
        default=None,
        help='how --self-test and --demo start an agent (default: "<python> -m agent")',
    )
    parser.add_argument("--log-level", default="INFO")
    return parser.parse_args(argv)


def demo_or_default_data_dir(demo: bool) -> Path:
    """The data folder when none is given: a `demo` folder inside it for `--demo`,
    so demo devices and deployments never mix with a site's real ones."""
    return default_data_dir() / "demo" if demo else default_data_dir()


def missing_display() -> str | None:
    """Why no window can open here, or None: Linux with no X11/Wayland display and
    no QT_QPA_PLATFORM chosen (Qt would abort with a misleading xcb message)."""
    if not sys.platform.startswith("linux") or os.environ.get("QT_QPA_PLATFORM"):
        return None
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    return (
        "deploy-console: no display to open a window on (DISPLAY and WAYLAND_DISPLAY "
        "are unset). Run it in a desktop session, under `xvfb-run -a deploy-console`, "
        "or use `deploy-server` for a server without a window."
    )


def startup_error_text(exc: EnvironmentFault, config: ServerConfig) -> str:
    """A sentence a technician can act on, for an error raised by server.start()."""
    if isinstance(exc, PortInUseError):
        return (
            f"Port {config.port} is already used by another program (perhaps "
            f"another Deploy Console). Close it, or start with --port.\n\n{exc}"
        )
    if isinstance(exc, DataDirError):
        return (
            f"The data folder {config.data_dir} cannot be written. Check its "
            f"permissions and free space, or start with --data-dir.\n\n{exc}"
        )
    if isinstance(exc, DatabaseTooNewError):
        return (
            "The database in the data folder was written by a newer Deploy "
            f"Console. Install that version again, or use another --data-dir.\n\n{exc}"
        )
    return str(exc)


def _configure_logging(level_name: str) -> None:
    """Print lines at `level_name` and up; the activity dock still gets INFO.

    Leaves logging alone when the host process configured it already (tests).
    """
    root = logging.getLogger()
    if root.handlers:
        return
    level = logging.getLevelName(level_name.upper())
    if not isinstance(level, int):
        level = logging.INFO
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.setLevel(level)
    root.addHandler(handler)
    root.setLevel(min(level, logging.INFO))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per step


def _show_startup_error(text: str) -> None:
    box = QMessageBox(QMessageBox.Icon.Critical, "Deploy Console", text)
    box.setInformativeText("Deploy Console could not start.")
    box.exec()  # the asyncio loop is not running here: a plain modal is fine


def _application() -> QApplication:
    app = QApplication.instance()
    if app is None:
        app = QApplication(sys.argv[:1])
        app.setApplicationName("Deploy Console")
        app.setOrganizationName("DeployConsole")
    app.setQuitOnLastWindowClosed(False)  # the session decides when to stop
    return app


def close_on_termination_signals(close: Callable[[], None]) -> Callable[[], None]:
    """Call `close()` on the loop when the process gets SIGINT or SIGTERM.

    Ctrl-C in the terminal, `kill`, or a logout must stop the console in order
    (agents disconnected, demo agents ended, database committed) instead of killing
    it mid-flight. qasync's loop has no `add_signal_handler`, and Python runs a
    signal handler only when the interpreter next runs, which an idle Qt loop may
    not do for a long time; so the signal is written to a socket (`set_wakeup_fd`)
    that a QSocketNotifier watches. Returns a function that puts everything back.
    POSIX only; on Windows it does nothing (a windowed program gets no Ctrl-C).
    """
    if sys.platform == "win32":
        return lambda: None
    receiver, sender = socket.socketpair()
    receiver.setblocking(False)
    sender.setblocking(False)
    previous_fd = signal.set_wakeup_fd(sender.fileno())
    previous = {
        sig: signal.signal(sig, lambda *_: None)
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    notifier = QSocketNotifier(receiver.fileno(), QSocketNotifier.Type.Read)

    def on_signal() -> None:
        with contextlib.suppress(OSError):
            receiver.recv(64)
        log.info("termination signal received; closing the console")
        close()

    notifier.activated.connect(on_signal)

    def restore() -> None:
        notifier.setEnabled(False)
        signal.set_wakeup_fd(previous_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        receiver.close()
        sender.close()

    return restore


async def run_console(
    options: argparse.Namespace, report_error: Callable[[str], None]
) -> int:
    """The console's life: start, show, wait for the window to close, stop."""
    from console.loop import settle_memory
    from console.session import ConsoleSession
    from console.ui.main_window import load_style_sheet

    app = QApplication.instance()
    app.setStyle(QStyleFactory.create("Fusion"))
    app.setStyleSheet(load_style_sheet())
    config = ServerConfig(
        host="0.0.0.0",
        port=options.port,
        data_dir=options.data_dir or demo_or_default_data_dir(options.demo),
    )
    agent_command = None
    if options.agent_cmd:
        from console.selftest import agent_command as split_agent_command

        agent_command = split_agent_command(options.agent_cmd)
    session = ConsoleSession(config, demo=options.demo, agent_command=agent_command)
    try:
        await session.start()
    except EnvironmentFault as exc:
        log.error("cannot start: %s", exc)
        await session.stop()
        report_error(startup_error_text(exc, config))
        return EXIT_STARTUP_ERROR

    try:
        settle_memory()
        session.window.show()
        restore_signals = close_on_termination_signals(session.window.close)
        try:
            await session.wait_closed()
        finally:
            restore_signals()
    finally:
        # Also on an unexpected error: the server process stops by itself once
        # this one has gone, but the window's tasks and the demo agents end first.
        await session.stop()
    return EXIT_OK


def main(
    argv: Sequence[str] | None = None,
    *,
    report_error: Callable[[str], None] | None = None,
) -> int:
    """Entry point of `deploy-console`; returns the process exit code.

    Args:
        argv: command line without the program name (default: sys.argv[1:]).
        report_error: shows a startup error; default a message box shown once the
            loop has stopped (tests pass a list's append).
    """
    options = parse_args(argv)
    if options.self_test:
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    problem = missing_display()
    if problem:
        print(problem, file=sys.stderr)
        return EXIT_STARTUP_ERROR
    _configure_logging(options.log_level)
    app = _application()
    errors: list[str] = []

    from console.loop import new_event_loop

    with asyncio.Runner(loop_factory=lambda: new_event_loop(app)) as runner:
        if options.self_test:
            from console.selftest import run_self_test

            return runner.run(run_self_test(options))
        code = runner.run(run_console(options, errors.append))

    for text in errors:
        (report_error or _show_startup_error)(text)
    return code
