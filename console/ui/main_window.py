"""`MainWindow`: devices, software library, deployments and activity in one window.

Everything here runs on the GUI thread, which is also the asyncio loop's thread
(qasync): slots never block; anything that talks to the server is a coroutine
started through `TaskKeeper`.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from importlib import resources
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (
    QDialog,
    QDockWidget,
    QFileDialog,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QProgressBar,
    QSplitter,
    QStyle,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from console.bridge import ServerBridge
from console.packages import guess_package
from console.tasks import TaskKeeper
from console.ui.activity import ActivityHandler, ActivityModel, ActivityPanel
from console.ui.deployments import DeploymentsPanel
from console.ui.devices import DeviceFilter, DeviceModel, DeviceView
from console.ui.dialogs import (
    AddPackageDialog,
    ChoosePackagesDialog,
    ConfirmDeploymentDialog,
    HistoryDialog,
    SettingsDialog,
    ask,
)
from console.ui.library import LibraryView, SoftwareModel
from protocol import TargetStatus

log = logging.getLogger(__name__)

ACTIVITY_LOGGERS = ("server", "console")
"""Logger trees whose INFO lines appear in the activity dock."""

HISTORY_DEPLOYMENTS = 50
REFRESH_MS = 500
"""At most one re-read of the shown deployment per this many ms while its
targets finish (the updates carry no exit code, reboot flag or log tail)."""
SHUTDOWN_GRACE_S = 5.0


def load_style_sheet() -> str:
    """The application's style sheet (console/ui/style.qss)."""
    return resources.files("console.ui").joinpath("style.qss").read_text("utf-8")


def _titled(title: str, hint: str, *widgets: QWidget) -> QWidget:
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(6, 6, 6, 6)
    layout.setSpacing(4)
    heading = QLabel(title)
    heading.setObjectName("panelTitle")
    layout.addWidget(heading)
    if hint:
        note = QLabel(hint)
        note.setObjectName("hint")
        layout.addWidget(note)
    for widget in widgets:
        layout.addWidget(widget)
    return box


class MainWindow(QMainWindow):
    """The console's window. `attach(server)` connects it to a started server.

    Signals:
        closed(): the technician closed the window; the session shuts down.
        port_change_requested(int): settings asked for another port.
        question_asked(QDialog): a dialog just opened and waits for an answer
            (tests answer it; the loop keeps running meanwhile).
        deployment_created(dict): a deployment was created from this window.
        server_attached(object): the window now shows this (started) server.
    """

    closed = Signal()
    port_change_requested = Signal(int)
    question_asked = Signal(object)
    deployment_created = Signal(dict)
    server_attached = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Deploy Console")
        self.resize(1400, 900)
        self.server: Any = None
        self.bridge: ServerBridge | None = None
        self.tasks = TaskKeeper(self.show_error)
        self._host_label = ""
        self._fetching: set[int] = set()
        self._refreshing = False
        self._refresh_again = False
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(REFRESH_MS)
        self._refresh_timer.timeout.connect(self._on_refresh_timer)

        self.devices = DeviceModel(self)
        self.device_filter = DeviceFilter(self)
        self.device_filter.setSourceModel(self.devices)
        self.device_view = DeviceView(self)
        self.device_view.setModel(self.device_filter)
        self.device_view.sortByColumn(0, Qt.SortOrder.AscendingOrder)
        self.filter_box = QLineEdit(self)
        self.filter_box.setPlaceholderText("Filter by hostname, IP or status…")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.textChanged.connect(self.device_filter.set_text)

        self.software = SoftwareModel(self)
        self.library_view = LibraryView(self)
        self.library_view.setModel(self.software)

        self.deployments_panel = DeploymentsPanel(self.devices.hostname, self)

        self.activity = ActivityModel(self)
        self._activity_handler = ActivityHandler(self.activity)
        for name in ACTIVITY_LOGGERS:
            logger = logging.getLogger(name)
            logger.addHandler(self._activity_handler)
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)  # the dock shows INFO whatever root says

        self._build_layout()
        self._build_actions()
        self._build_status_bar()
        self._connect()

    # --- construction --------------------------------------------------------

    def _build_layout(self) -> None:
        library = _titled(
            "Software library",
            "Drop installers here · drag packages onto devices",
            self.library_view,
        )
        devices = _titled("Devices", "", self.filter_box, self.device_view)
        deployments = _titled("Deployments", "", self.deployments_panel)

        top = QSplitter(Qt.Orientation.Horizontal)
        top.addWidget(library)
        top.addWidget(devices)
        top.setSizes([460, 940])
        central = QSplitter(Qt.Orientation.Vertical)
        central.addWidget(top)
        central.addWidget(deployments)
        central.setSizes([430, 280])
        self.setCentralWidget(central)

        dock = QDockWidget("Activity", self)
        dock.setObjectName("activityDock")
        dock.setWidget(ActivityPanel(self.activity, dock))
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.resizeDocks([dock], [160], Qt.Orientation.Vertical)
        self.activity_dock = dock

    def _build_actions(self) -> None:
        style = self.style()
        pixmap = QStyle.StandardPixmap
        self.add_action = QAction(
            style.standardIcon(pixmap.SP_FileDialogNewFolder), "Add package…", self
        )
        self.add_action.setShortcut(QKeySequence.StandardKey.Open)
        self.add_action.triggered.connect(self._on_add_package)
        self.deploy_action = QAction(
            style.standardIcon(pixmap.SP_MediaPlay), "Deploy…", self
        )
        self.deploy_action.triggered.connect(self._on_deploy_selected)
        self.settings_action = QAction(
            style.standardIcon(pixmap.SP_FileDialogDetailedView), "Settings…", self
        )
        self.settings_action.triggered.connect(self._on_settings)
        self.quit_action = QAction("Quit", self)
        self.quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)

        toolbar = QToolBar("Main", self)
        toolbar.setObjectName("mainToolbar")
        toolbar.setMovable(False)
        toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        toolbar.addAction(self.add_action)
        toolbar.addAction(self.deploy_action)
        toolbar.addSeparator()
        toolbar.addAction(self.settings_action)
        toolbar.addAction(self.activity_dock.toggleViewAction())
        self.addToolBar(toolbar)

        menu = self.menuBar().addMenu("&File")
        menu.addAction(self.add_action)
        menu.addAction(self.settings_action)
        menu.addSeparator()
        menu.addAction(self.quit_action)
        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self.activity_dock.toggleViewAction())

    def _build_status_bar(self) -> None:
        self.listening_label = QLabel("Server stopped", self)
        self.add_progress = QProgressBar(self)
        self.add_progress.setRange(0, 100)
        self.add_progress.setMaximumWidth(220)
        self.add_progress.setVisible(False)
        self.statusBar().addPermanentWidget(self.add_progress)
        self.statusBar().addPermanentWidget(self.listening_label)

    def _connect(self) -> None:
        self.devices.online_count_changed.connect(self._update_listening)
        self.device_view.software_dropped.connect(self.on_software_dropped)
        self.device_view.customContextMenuRequested.connect(self._on_device_menu)
        self.library_view.files_dropped.connect(self.on_files_dropped)
        panel = self.deployments_panel
        panel.deployment_selected.connect(self._on_deployment_selected)
        panel.retry_requested.connect(self._on_retry)
        panel.cancel_requested.connect(self._on_cancel)

    # --- server wiring -------------------------------------------------------

    def attach(self, server: Any) -> None:
        """Show `server` (started): load its lists, then follow its events."""
        self.detach()
        self.server = server
        self.bridge = ServerBridge(server, self)
        self.bridge.devices_changed.connect(self.devices.apply_devices)
        self.bridge.targets_changed.connect(self.on_targets_changed)
        self.bridge.deployments_changed.connect(self.on_deployments_changed)
        host = server.config.host
        if host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        self._host_label = f"http://{host}:{server.port}"
        self._update_listening()
        self.tasks.spawn(self.load(), "loading the server's lists")
        self.server_attached.emit(server)

    def detach(self) -> None:
        """Stop following the current server (before it stops or is replaced)."""
        if self.bridge is not None:
            self.bridge.detach()
            self.bridge.deleteLater()
            self.bridge = None
        self._refresh_timer.stop()
        self.server = None
        self.listening_label.setText("Server stopped")

    async def load(self) -> None:
        """Fill the models from the server; the bridge keeps them current after."""
        server = self.server
        self.devices.set_devices(await server.list_devices())
        self.software.set_software(await server.list_software())
        deployments = await server.list_deployments(limit=200)
        for deployment in reversed(deployments):
            self.deployments_panel.deployments.upsert(deployment)
        # The device rows show their latest target: replay recent deployments.
        for deployment in reversed(deployments[:HISTORY_DEPLOYMENTS]):
            full = await server.get_deployment(int(deployment["id"]))
            self.devices.apply_targets(
                [{"deployment_id": full["id"], **t} for t in full.get("targets", [])]
            )

    def flush_updates(self) -> None:
        """Apply the server events gathered for the next tick now (self-test)."""
        if self.bridge is not None:
            self.bridge.flush()
        self.devices.flush()

    def _update_listening(self, *_args: object) -> None:
        if self.server is None:
            return
        online = self.devices.online_count
        noun = "agent" if online == 1 else "agents"
        self.listening_label.setText(
            f"Listening on {self._host_label} — {online} {noun} online"
        )

    def show_error(self, text: str) -> None:
        """Report a failed operation in the status bar (and the activity log)."""
        self.statusBar().showMessage(text, 15_000)

    def show_status(self, text: str) -> None:
        self.statusBar().showMessage(text, 10_000)

    # --- live events ---------------------------------------------------------

    def on_targets_changed(self, payloads: list[dict[str, Any]]) -> None:
        """A batch of `software_deployment_update`s (one per target) from the bridge."""
        self.devices.apply_targets(payloads)
        self.deployments_panel.on_targets_changed(payloads)
        shown = self.deployments_panel.targets.deployment_id
        if any(
            int(p["deployment_id"]) == shown and TargetStatus(p["status"]).terminal
            for p in payloads
        ):
            # Exit code, reboot flag and log tail live on the stored target: read
            # them again, once for many finished targets.
            self._refresh_timer.start()

    def on_deployments_changed(self, payloads: list[dict[str, Any]]) -> None:
        """A batch of `deployment_update`s (one per deployment) from the bridge."""
        for payload in self.deployments_panel.on_deployments_changed(payloads):
            deployment_id = int(payload["deployment_id"])
            if deployment_id not in self._fetching:
                self._fetching.add(deployment_id)
                self.tasks.spawn(
                    self._fetch_deployment(deployment_id), "loading a deployment"
                )

    async def _fetch_deployment(self, deployment_id: int) -> None:
        try:
            deployment = await self.server.get_deployment(deployment_id)
        finally:
            self._fetching.discard(deployment_id)
        self.deployments_panel.deployments.upsert(deployment)

    def _on_refresh_timer(self) -> None:
        if self._refreshing:
            self._refresh_again = True
            return
        shown = self.deployments_panel.targets.deployment_id
        if shown is not None and self.server is not None:
            self.tasks.spawn(self._refresh_shown(shown), "refreshing the deployment")

    async def _refresh_shown(self, deployment_id: int) -> None:
        self._refreshing = True
        try:
            deployment = await self.server.get_deployment(deployment_id)
            self.deployments_panel.refresh_targets(deployment)
        finally:
            self._refreshing = False
            if self._refresh_again:
                self._refresh_again = False
                self._refresh_timer.start()

    # --- deploying -----------------------------------------------------------

    def on_software_dropped(self, software_ids: list, device_ids: list) -> None:
        self.tasks.spawn(self.deploy(software_ids, device_ids), "deploying")

    async def ask(self, dialog: QDialog) -> int:
        """Open `dialog` without blocking the loop and wait for the answer.

        The dialog is deleted once control returns to the event loop, so read its
        fields right after this returns, before awaiting anything else.
        """
        waiting = ask(dialog)
        self.question_asked.emit(dialog)
        try:
            return await waiting
        finally:
            dialog.deleteLater()

    async def deploy(
        self, software_ids: list[int], device_ids: list[int]
    ) -> dict[str, Any] | None:
        """Confirm with the technician, then create the deployment."""
        packages = []
        for software_id in software_ids:
            row = self.software.software(software_id)
            label = f"{row['name']} {row.get('version', '')}" if row else "?"
            packages.append(label.strip() if row else f"package {software_id}")
        devices = []
        for device_id in device_ids:
            device = self.devices.device(device_id)
            devices.append(
                (self.devices.hostname(device_id), bool(device and device.online))
            )
        dialog = ConfirmDeploymentDialog(packages, devices, self)
        if await self.ask(dialog) != QDialog.DialogCode.Accepted:
            return None

        deployment = await self.server.create_deployment(
            software_ids, device_ids, deployment_name=dialog.deployment_name()
        )
        log.info(
            "deployment %s created: %s to %d device(s)",
            deployment["id"],
            ", ".join(packages),
            len(device_ids),
        )
        self.show_deployment(deployment)
        self.deployment_created.emit(deployment)
        return deployment

    def show_deployment(self, deployment: dict[str, Any]) -> None:
        """List `deployment` (with targets) and select it in the panel."""
        self.deployments_panel.deployments.upsert(deployment)
        self.devices.apply_targets(
            [
                {"deployment_id": deployment["id"], **target}
                for target in deployment.get("targets", [])
            ]
        )
        self.deployments_panel.select(int(deployment["id"]))
        self.deployments_panel.show_deployment(deployment)

    def _on_deploy_selected(self) -> None:
        device_ids = self.device_view.selected_device_ids()
        if not device_ids:
            self.show_status("Select one or more devices first")
            return
        self.tasks.spawn(self._choose_and_deploy(device_ids), "deploying")

    async def _choose_and_deploy(self, device_ids: list[int]) -> None:
        dialog = ChoosePackagesDialog(self.software.all_software(), self)
        if await self.ask(dialog) != QDialog.DialogCode.Accepted:
            return
        software_ids = dialog.software_ids()
        if software_ids:
            await self.deploy(software_ids, device_ids)

    def _on_device_menu(self, position: QPoint) -> None:
        index = self.device_view.indexAt(position)
        if not index.isValid():
            return
        menu = QMenu(self)
        menu.addAction(self.deploy_action)
        history = menu.addAction("Show history")
        device_id = int(index.siblingAtColumn(0).data(Qt.ItemDataRole.UserRole))
        history.triggered.connect(
            lambda: self.tasks.spawn(self._show_history(device_id), "loading history")
        )
        menu.popup(self.device_view.viewport().mapToGlobal(position))

    async def _show_history(self, device_id: int) -> None:
        # TODO(server): a per-device history query; this scans recent deployments.
        lines = []
        for deployment in await self.server.list_deployments(limit=HISTORY_DEPLOYMENTS):
            full = await self.server.get_deployment(int(deployment["id"]))
            for target in full.get("targets", []):
                if int(target["device_id"]) != device_id:
                    continue
                name = full.get("deployment_name") or f"Deployment {full['id']}"
                code = target.get("exit_code")
                suffix = f" (exit code {code})" if code is not None else ""
                lines.append(
                    f"{full.get('created_at', '')[:19]}  {name}: "
                    f"{target['status']}{suffix}"
                )
        dialog = HistoryDialog(self.devices.hostname(device_id), lines, self)
        await self.ask(dialog)

    def _on_deployment_selected(self, deployment_id: int) -> None:
        if self.deployments_panel.targets.deployment_id == deployment_id:
            return
        self.tasks.spawn(self._load_targets(deployment_id), "loading a deployment")

    async def _load_targets(self, deployment_id: int) -> None:
        deployment = await self.server.get_deployment(deployment_id)
        self.deployments_panel.show_deployment(deployment)

    def _on_retry(self, deployment_id: int) -> None:
        self.tasks.spawn(self._retry(deployment_id), "retrying failed targets")

    async def _retry(self, deployment_id: int) -> None:
        self.show_deployment(await self.server.retry_deployment(deployment_id))

    def _on_cancel(self, deployment_id: int) -> None:
        self.tasks.spawn(self._cancel(deployment_id), "cancelling a deployment")

    async def _cancel(self, deployment_id: int) -> None:
        self.show_deployment(await self.server.cancel_deployment(deployment_id))

    # --- adding packages -----------------------------------------------------

    def on_files_dropped(self, paths: list[Path]) -> None:
        self.tasks.spawn(self.add_files(paths), "adding a package")

    def _on_add_package(self) -> None:
        self.tasks.spawn(self._pick_and_add(), "adding a package")

    async def _pick_and_add(self) -> None:
        dialog = QFileDialog(self, "Add installer to the library")
        dialog.setFileMode(QFileDialog.FileMode.ExistingFiles)
        dialog.setNameFilter("Installers (*.msi *.exe *.ps1 *.bat *.cmd *.sh *.zip)")
        if await self.ask(dialog) == QDialog.DialogCode.Accepted:
            await self.add_files([Path(name) for name in dialog.selectedFiles()])

    async def add_files(self, paths: list[Path]) -> list[dict[str, Any]]:
        """Ask for each file's details, then copy and hash it into the library."""
        added = []
        for path in paths:
            dialog = AddPackageDialog(path, guess_package(path), self)
            if await self.ask(dialog) != QDialog.DialogCode.Accepted:
                continue
            values = dialog.values()
            self.add_progress.setValue(0)
            self.add_progress.setFormat(f"adding {path.name} %p%")
            self.add_progress.setVisible(True)
            try:
                row = await self.server.add_software(
                    path, progress=self._on_add_progress, **values
                )
            finally:
                self.add_progress.setVisible(False)
            self.software.add(row)
            self.show_status(f"Added {row['name']} {row.get('version', '')}")
            added.append(row)
        return added

    def _on_add_progress(self, fraction: float) -> None:
        self.add_progress.setValue(round(fraction * 100))

    # --- settings ------------------------------------------------------------

    def _on_settings(self) -> None:
        self.tasks.spawn(self._settings(), "changing settings")

    async def _settings(self) -> None:
        server = self.server
        dialog = SettingsDialog(
            port=server.port,
            enrollment_token=server.enrollment_token,
            admin_token=server.admin_token,
            data_dir=server.config.data_dir,
            regenerate=lambda: self.tasks.spawn(
                self._regenerate(dialog), "regenerating the enrollment token"
            ),
            parent=self,
        )
        if await self.ask(dialog) != QDialog.DialogCode.Accepted:
            return
        if dialog.port() != server.port:
            self.port_change_requested.emit(dialog.port())

    async def _regenerate(self, dialog: SettingsDialog) -> None:
        token = await self.server.regenerate_enrollment_token()
        with contextlib.suppress(RuntimeError):  # the dialog was closed meanwhile
            dialog.set_enrollment_token(token)
        self.show_status("New enrollment token: agents need it to connect")

    # --- closing -------------------------------------------------------------

    async def shutdown(self) -> None:
        """Finish this window's running operations and stop following the server.

        Open questions are answered "no" first, so no deployment starts now.
        """
        for dialog in self.findChildren(QDialog):
            if dialog.isVisible():
                dialog.reject()
        await self.tasks.drain(SHUTDOWN_GRACE_S)
        self.detach()
        for name in ACTIVITY_LOGGERS:
            logging.getLogger(name).removeHandler(self._activity_handler)

    def closeEvent(self, event: QCloseEvent) -> None:
        event.accept()
        self.closed.emit()
