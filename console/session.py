"""`ConsoleSession`: the embedded server and the window, started and stopped in order.

Runs on the qasync loop; every method is a coroutine or a quick slot. The server
itself runs in a child process of its own (`console.server_process.ProcessServer`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtWidgets import QApplication

from console.loop import gui_collector
from console.server_process import ProcessServer
from console.tasks import TaskKeeper
from console.ui.main_window import MainWindow
from server.config import ServerConfig
from server.errors import EnvironmentFault

log = logging.getLogger(__name__)

DEMO_AGENTS = 3
SHUTDOWN_GRACE_S = 5.0
DEMO_REGISTER_TIMEOUT_S = 120
RESTART_WINDOW_S = 60.0
"""A server lost twice within this many seconds is not started a third time."""


class ConsoleSession:
    """One run of the console: the embedded server (a `DeployServer` in a process of
    its own, through `ProcessServer`) plus its `MainWindow`.

    Args:
        config: where the server listens and keeps its data.
        demo: after start, add the sample packages, start a few local agents and
            deploy the first sample to them (`server.demo`).
        agent_command: how the demo starts an agent (default `python -m agent`;
            a frozen console passes its bundled `deploy-agent`).
        server_factory: makes the server from the config; default `ProcessServer`.
            The benchmark passes `ThreadedServer` or `DeployServer` to measure the
            server on a thread or on the window's own loop, as the console ran it
            before.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        demo: bool = False,
        agent_command: list[str] | None = None,
        server_factory: Callable[[ServerConfig], Any] = ProcessServer,
    ) -> None:
        self.config = config
        self.demo = demo
        self.agent_command = agent_command
        self._server_factory = server_factory
        self.server: Any = None  # a ProcessServer unless the factory says else
        # Closing the window must not quit Qt under the loop: the session stops
        # the server first, then the program's coroutine returns.
        QApplication.instance().setQuitOnLastWindowClosed(False)
        self.window = MainWindow()
        self.fleet: Any = None
        self._closed = asyncio.Event()
        self._stopped = False
        self._last_loss: float | None = None
        self._collecting = False
        self._tasks = TaskKeeper(self.window.show_error)
        self.window.closed.connect(self._closed.set)
        self.window.port_change_requested.connect(self.on_port_change_requested)

    async def start(self) -> None:
        """Start the server and show it in the window.

        Raises the server's `EnvironmentFault`s (port in use, data folder, newer
        database) unchanged, with nothing left running.
        """
        # Collected on this thread only, from now until stop() (see
        # console.loop.GuiThreadCollector): the window's Qt objects must die here.
        gui_collector.acquire()
        self._collecting = True
        try:
            server = await self._start_server()
        except BaseException:
            self._release_collector()
            raise
        log.info("console started; server listening on port %s", server.port)
        if self.demo:
            self._tasks.spawn(self._run_demo(), "starting the demo")

    async def wait_closed(self) -> None:
        """Return when the technician has closed the window."""
        await self._closed.wait()

    async def stop(self) -> None:
        """Stop in order: window tasks, demo agents, then the server. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        await self._tasks.drain(SHUTDOWN_GRACE_S)
        await self.window.shutdown()
        if self.fleet is not None:
            fleet, self.fleet = self.fleet, None
            await fleet.stop()
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()
        self.window.close()
        self.window.deleteLater()
        self._release_collector()
        log.info("console stopped")

    def _release_collector(self) -> None:
        if self._collecting:
            self._collecting = False
            gui_collector.release()

    # --- port change -----------------------------------------------------------

    def on_port_change_requested(self, port: int) -> None:
        self._tasks.spawn(self.restart(port), "restarting the server")

    async def restart(self, port: int) -> None:
        """Restart the server on `port` in place; on failure go back to the old one."""
        old_config = self.config
        self.window.detach()
        # Nothing of the window's may still be talking to the old server.
        await self.window.tasks.drain(SHUTDOWN_GRACE_S)
        await self.server.stop()
        self.server = None
        self.config = dataclasses.replace(old_config, port=port)
        try:
            await self.start_server_only()
        except EnvironmentFault as exc:
            log.warning("cannot listen on port %s: %s", port, exc)
            self.window.show_error(f"Cannot listen on port {port}: {exc}")
            self.config = old_config
            await self.start_server_only()
        # TODO(console): demo agents keep the old URL after a port change.

    async def start_server_only(self) -> None:
        server = await self._start_server()
        log.info("server restarted on port %s", server.port)

    async def _start_server(self) -> Any:
        """Start the server and show it; start errors propagate unchanged and
        leave nothing running."""
        server = self._server_factory(self.config)
        await server.start()
        self.server = server
        self.window.attach(server)
        if hasattr(server, "on_lost"):
            server.on_lost = lambda code: self._tasks.spawn(
                self._recover(server, code), "restarting the server"
            )
        return server

    async def _recover(self, server: Any, code: int | None) -> None:
        """The server process ended unasked (killed, crashed): tell the
        technician and start it again on the same port and data folder; a second
        loss within `RESTART_WINDOW_S` is only reported."""
        if self._stopped or self.server is not server:
            return
        try:
            self.window.detach()
            self.server = None
            # The window's calls to the lost server can only fail: end them.
            await self.window.tasks.cancel_all()
            await server.stop()  # what is left of it: its pipe, its reader thread
            now = asyncio.get_running_loop().time()
            if self._last_loss is not None and now - self._last_loss < RESTART_WINDOW_S:
                self.window.show_error(
                    f"The server stopped unexpectedly again (exit code {code}). "
                    "Restart Deploy Console; its log says why."
                )
                return
            self._last_loss = now
            self.window.show_error(
                f"The server stopped unexpectedly (exit code {code}); "
                "starting it again…"
            )
            await self.start_server_only()
        except EnvironmentFault as exc:
            log.error("the server could not start again: %s", exc)
            self.window.show_error(f"The server could not start again: {exc}")
        except Exception as exc:  # a task nobody awaits must still say it failed
            log.exception("restarting the server failed")
            self.window.show_error(f"The server could not start again: {exc}")

    # --- demo ------------------------------------------------------------------

    async def _run_demo(self) -> None:
        try:
            from server import demo
        except ImportError:
            log.warning("demo unavailable: server.demo is missing")
            self.window.show_status("Demo unavailable: server.demo is not installed")
            return

        server = self.server
        self.window.show_status("Demo: adding the sample packages…")
        samples = await demo.add_sample_packages(server)
        for sample in samples:
            self.window.software.add(sample)

        msiexec = demo.demo_msiexec()
        note = " and Wine for the MSI sample" if msiexec else ""
        self.window.show_status(f"Demo: starting {DEMO_AGENTS} local agents{note}…")
        self.fleet = demo.DemoFleet(
            server.url,
            server.enrollment_token,
            count=DEMO_AGENTS,
            msiexec=msiexec,
            agent_command=self.agent_command,
        )
        await self.fleet.start()
        devices = await self.fleet.wait_registered(server, DEMO_REGISTER_TIMEOUT_S)
        if not samples or not devices:
            self.window.show_status("Demo: no samples or agents to deploy to")
            return

        first = next(
            (s for s in samples if s.get("installer_type") == "script"), samples[0]
        )
        deployment = await server.create_deployment(
            [int(first["id"])],
            [int(d["id"]) for d in devices],
            deployment_name=f"Demo: {first['name']}",
        )
        log.info("demo: deployment %s sends %s", deployment["id"], first["name"])
        self.window.show_deployment(deployment)
        self.window.show_status(
            f"Demo: {first['name']} sent to {len(devices)} demo agents — drag more "
            "packages from the library onto devices"
        )
