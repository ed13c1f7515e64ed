"""Render screenshots of the console during a deployment into docs/.

Usage (from the repository root):

    xvfb-run -a -s "-screen 0 1400x900x24" .venv/bin/python scripts/screenshots.py

Without a display the script re-runs itself under xvfb-run. It starts the real
console (embedded server on a free loopback port, real window), connects a dozen
Socket.IO agent clients that report a scripted mix of states (downloading,
installing, success, failed 1603, reboot required, offline), and grabs the window
and the drag-and-drop confirmation. The clients speak the real agent protocol;
they only skip downloading and installing so that the picture is repeatable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

HOSTS = [
    ("WS-ACCT-01", "10.20.1.11"),
    ("WS-ACCT-02", "10.20.1.12"),
    ("WS-ACCT-03", "10.20.1.13"),
    ("WS-HR-01", "10.20.2.21"),
    ("WS-HR-02", "10.20.2.22"),
    ("WS-LAB-01", "10.20.3.31"),
    ("WS-LAB-02", "10.20.3.32"),
    ("WS-LAB-03", "10.20.3.33"),
    ("WS-RECEPTION", "10.20.4.40"),
    ("WS-SALES-01", "10.20.5.51"),
    ("WS-SALES-02", "10.20.5.52"),
    ("WS-WAREHOUSE", "10.20.6.60"),
]
OFFLINE = {"WS-HR-02", "WS-WAREHOUSE"}
PACKAGES = [
    ("7z2301-x64.msi", "7-Zip", "23.01", "msi", 1_540_000),
    ("Firefox Setup 121.0.exe", "Firefox", "121.0", "exe", 2_310_000),
    ("NotepadPlusPlus-8.6.2.zip", "Notepad++", "8.6.2", "zip", 640_000),
    ("set-printer-defaults.ps1", "Printer defaults", "2.1", "script", 4_200),
]
LOG_TAIL = (
    "MSI (s) (A4:2C) [10:42:17:311]: Product: Firefox -- Installation failed.\n"
    "MSI (s) (A4:2C) [10:42:17:312]: Windows Installer installed the product. "
    "Product Name: Firefox. Product Version: 121.0. Installation success or "
    "error status: 1603.\n"
    "Action ended 10:42:17: INSTALL. Return value 3.\n"
    "MainEngineThread is returning 1603"
)


class ScriptedAgent:
    """A Socket.IO client that registers like an agent and reports given states."""

    def __init__(self, url: str, token: str, hostname: str, ip: str) -> None:
        import socketio

        self.client = socketio.AsyncClient(reconnection=False)
        self.url, self.token, self.hostname, self.ip = url, token, hostname, ip
        self.device_id = 0

    async def connect(self) -> None:
        await self.client.connect(
            self.url,
            auth={"role": "agent", "token": self.token},
            transports=["websocket"],
        )
        ack = await self.client.call(
            "agent_register",
            {
                "agent_id": f"agent-{self.hostname.lower()}",
                "hostname": self.hostname,
                "platform": "windows",
                "os_version": "10.0.22631",
                "agent_version": "0.1.0",
                "ip": self.ip,
            },
        )
        self.device_id = int(ack["device_id"])

    async def report(self, deployment_id: int, status: str, progress: float, **extra):
        await self.client.call(
            "software_installation_status",
            {
                "deployment_id": deployment_id,
                "device_id": self.device_id,
                "status": status,
                "progress": progress,
                **extra,
            },
        )

    async def close(self) -> None:
        if self.client.connected:
            await self.client.disconnect()
        await self.client.shutdown()


async def _settle(window: Any, *, join: bool = True) -> None:
    """Let queued events, the coalescing timer and painting run."""
    if join:
        await window.tasks.join()
    window.devices.flush()
    # A script, not a test: the loop is Qt's, so sleeping lets it lay out and paint.
    await asyncio.sleep(0.3)


async def capture(out_dir: Path) -> list[Path]:
    from PySide6.QtCore import QItemSelectionModel, QPoint, Qt
    from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
    from PySide6.QtWidgets import QApplication, QStyleFactory

    from console.session import ConsoleSession
    from console.ui.main_window import load_style_sheet
    from server.config import ServerConfig

    app = QApplication.instance()
    app.setStyle(QStyleFactory.create("Fusion"))
    app.setStyleSheet(load_style_sheet())
    saved: list[Path] = []
    agents: list[ScriptedAgent] = []
    with tempfile.TemporaryDirectory(prefix="deploy-shots-") as tmp:
        root = Path(tmp)
        session = ConsoleSession(
            ServerConfig(host="127.0.0.1", port=0, data_dir=root / "data")
        )
        await session.start()
        window = session.window
        window.resize(1400, 900)
        window.show()
        server = session.server
        try:
            software = {}
            for file_name, name, version, kind, size in PACKAGES:
                path = root / file_name
                path.write_bytes(os.urandom(size))
                row = await server.add_software(
                    path, name=name, version=version, installer_type=kind
                )
                window.software.add(row)
                software[name] = row

            by_host: dict[str, ScriptedAgent] = {}
            for hostname, ip in HOSTS:
                agent = ScriptedAgent(server.url, server.enrollment_token, hostname, ip)
                await agent.connect()
                agents.append(agent)
                by_host[hostname] = agent
            for hostname in OFFLINE:
                await by_host[hostname].close()

            ids = {h: a.device_id for h, a in by_host.items()}
            older = await server.create_deployment(
                [software["7-Zip"]["id"]],
                [ids[h] for h in ("WS-ACCT-01", "WS-ACCT-02", "WS-LAB-01")],
                deployment_name="7-Zip 23.01 — accounting and lab",
            )
            for hostname in ("WS-ACCT-01", "WS-ACCT-02", "WS-LAB-01"):
                await by_host[hostname].report(older["id"], "completed", 100)

            current = await server.create_deployment(
                [software["Firefox"]["id"]],
                list(ids.values()),
                deployment_name="Firefox 121.0 — all workstations",
            )
            script = {
                "WS-ACCT-01": ("completed", 100, {}),
                "WS-ACCT-02": ("installing", 72, {}),
                "WS-ACCT-03": ("downloading", 20, {}),
                "WS-HR-01": (
                    "failed",
                    75,
                    {
                        "exit_code": 1603,
                        "log_tail": LOG_TAIL,
                        "message": "Firefox: installer failed with exit code 1603",
                    },
                ),
                "WS-LAB-01": ("completed", 100, {}),
                "WS-LAB-02": ("downloading", 34, {}),
                "WS-LAB-03": (
                    "completed",
                    100,
                    {"exit_code": 3010, "reboot_required": True},
                ),
                "WS-RECEPTION": ("installing", 58, {}),
                "WS-SALES-01": ("downloading", 8, {}),
                "WS-SALES-02": ("completed", 100, {}),
            }
            for hostname, (status, progress, extra) in script.items():
                agent = by_host[hostname]
                if status in ("installing", "completed", "failed"):
                    await agent.report(current["id"], "downloading", 40)
                await agent.report(current["id"], status, progress, **extra)

            window.show_deployment(await server.get_deployment(current["id"]))
            await _settle(window)
            panel = window.deployments_panel
            for row in range(panel.targets.rowCount()):
                if panel.targets.row_dict(row)["status"] == "failed":
                    panel.target_view.selectRow(row)
            window.device_view.selectRow(0)
            await _settle(window)

            main_shot = out_dir / "screenshot.png"
            window.grab().save(str(main_shot))
            saved.append(main_shot)

            # The confirmation a drop of a library package onto a device brings up.
            asked: asyncio.Future = asyncio.get_running_loop().create_future()
            window.question_asked.connect(lambda d: asked.done() or asked.set_result(d))
            view = window.device_view
            view.clearSelection()
            for row in (2, 3, 4):  # WS-ACCT-03, WS-HR-01 and the offline WS-HR-02
                view.selectionModel().select(
                    view.model().index(row, 0),
                    QItemSelectionModel.SelectionFlag.Select
                    | QItemSelectionModel.SelectionFlag.Rows,
                )
            point = view.visualRect(view.model().index(3, 0)).center()
            mime = window.software.mimeData([window.software.index(2, 0)])
            for kind in (QDragEnterEvent, QDragMoveEvent, QDropEvent):
                event = kind(
                    QPoint(point),
                    Qt.DropAction.CopyAction,
                    mime,
                    Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier,
                )
                QApplication.sendEvent(view.viewport(), event)
            dialog = await asyncio.wait_for(asked, 10)
            await _settle(window, join=False)  # the deploy task waits on the dialog
            confirm_shot = out_dir / "screenshot-confirm.png"
            dialog.grab().save(str(confirm_shot))
            saved.append(confirm_shot)
            dialog.reject()
        finally:
            for agent in agents:
                await agent.close()
            await session.stop()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    options = parser.parse_args()

    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") is None:
        xvfb = shutil.which("xvfb-run")
        if xvfb:
            command = [xvfb, "-a", "-s", "-screen 0 1400x900x24", sys.executable]
            return subprocess.call([*command, *sys.argv])
        os.environ["QT_QPA_PLATFORM"] = "offscreen"

    from PySide6.QtWidgets import QApplication

    from console.loop import new_event_loop

    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    app = QApplication.instance() or QApplication(sys.argv[:1])
    options.out.mkdir(parents=True, exist_ok=True)
    with asyncio.Runner(loop_factory=lambda: new_event_loop(app)) as runner:
        saved = runner.run(capture(options.out))
    for path in saved:
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
