"""The deployments panel: the deployment list and the selected one's targets."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import (
    QAbstractTableModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from console.status import TargetState, deployment_text, describe
from console.ui.devices import COALESCE_MS
from console.ui.progress import PROGRESS_ROLE, ProgressDelegate
from console.ui.tables import HeaderedTableModel, TableView, local_time

log = logging.getLogger(__name__)

_Index = QModelIndex | QPersistentModelIndex


class _TableModel(HeaderedTableModel):
    """Rows of dicts keyed by an id field; shared plumbing of the two models."""

    key = "id"

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []

    def row_total(self) -> int:
        return len(self._rows)

    def row_dict(self, row: int) -> dict[str, Any] | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def position(self, key: int) -> int | None:
        for position, row in enumerate(self._rows):
            if int(row[self.key]) == key:
                return position
        return None

    def _changed(self, position: int) -> None:
        self.dataChanged.emit(
            self.index(position, 0),
            self.index(position, len(self.headers) - 1),
        )


class DeploymentModel(_TableModel):
    """Deployments, newest first (rows as from `server.list_deployments`)."""

    headers = ["Deployment", "Created", "Status", "Progress", "✓", "✗"]
    header_tips = {4: "Targets that succeeded", 5: "Targets that failed"}
    PROGRESS_COLUMN = 3

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        counts = row.get("counts") or {}
        column = index.column()
        if role == PROGRESS_ROLE and column == self.PROGRESS_COLUMN:
            progress = float(row.get("progress") or 0)
            text, tone = deployment_text(row.get("status", ""), progress)
            return (progress, text, tone)
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                row.get("deployment_name") or f"Deployment {row['id']}",
                local_time(row.get("created_at")),
                str(row.get("status", "")).replace("_", " "),
                "",
                str(counts.get("success", 0)),
                str(counts.get("failed", 0)),
            ][column]
        if role == Qt.ItemDataRole.UserRole:
            return int(row["id"])
        return None

    def upsert(self, deployment: dict[str, Any]) -> None:
        """Add a deployment at the top, or refresh the one with the same id."""
        row = {k: v for k, v in deployment.items() if k != "targets"}
        position = self.position(int(row["id"]))
        if position is None:
            self.beginInsertRows(QModelIndex(), 0, 0)
            self._rows.insert(0, row)
            self.endInsertRows()
            return
        self._rows[position] = {**self._rows[position], **row}
        self._changed(position)

    def apply_update(self, payload: dict[str, Any]) -> bool:
        """Apply a `deployment_update`; False when the deployment is not listed."""
        position = self.position(int(payload["deployment_id"]))
        if position is None:
            return False
        row = self._rows[position]
        row.update(
            status=payload["status"],
            progress=payload.get("progress", row.get("progress")),
            counts=payload.get("counts", row.get("counts")),
        )
        self._changed(position)
        return True

    def apply_updates(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply a batch of `deployment_update`s; returns those not listed here."""
        return [payload for payload in payloads if not self.apply_update(payload)]


class TargetModel(_TableModel):
    """The targets of one deployment (rows of `deployment["targets"]`)."""

    headers = [
        "Device",
        "Status",
        "Progress",
        "Message",
        "Exit",
        "Reboot",
        "Started",
        "Completed",
    ]
    key = "device_id"
    header_tips = {4: "Installer exit code", 5: "Reboot required"}
    PROGRESS_COLUMN = 2

    def __init__(
        self, hostname: Callable[[int], str], parent: QObject | None = None
    ) -> None:
        super().__init__(parent)
        self._hostname = hostname
        self.deployment_id: int | None = None
        self._row_of: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(COALESCE_MS)
        self._flush_timer.timeout.connect(self.flush)

    def set_deployment(self, deployment: dict[str, Any] | None) -> None:
        self.beginResetModel()  # a different deployment: a new list, not an update
        self.deployment_id = int(deployment["id"]) if deployment else None
        self._rows = [dict(t) for t in (deployment or {}).get("targets", [])]
        self._row_of = {int(row["device_id"]): n for n, row in enumerate(self._rows)}
        self._dirty.clear()
        self.endResetModel()

    def position(self, key: int) -> int | None:
        return self._row_of.get(key)

    def _changed(self, position: int) -> None:
        # A deployment to thousands of devices: batch like the device list does.
        self._dirty.add(position)
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def flush(self) -> None:
        """Announce the rows changed since the last flush, as contiguous runs."""
        self._flush_timer.stop()
        rows, self._dirty = sorted(self._dirty), set()
        last = len(self.headers) - 1
        start = previous = None
        for row in [*rows, None]:
            if row is not None and previous is not None and row == previous + 1:
                previous = row
                continue
            if start is not None:
                self.dataChanged.emit(self.index(start, 0), self.index(previous, last))
            start = previous = row

    def apply_updates(self, payloads: list[dict[str, Any]]) -> None:
        """Apply a batch of `software_deployment_update`s; the changed rows are
        announced at the next tick (`flush`: one `dataChanged` per contiguous
        run), as the device list does."""
        for payload in payloads:
            self.apply_update(payload)

    def refresh(self, deployment: dict[str, Any]) -> None:
        """Take the stored targets of the shown deployment (exit codes, log tails)
        in place: changed rows are announced, new ones inserted, never a reset."""
        if deployment is None or int(deployment["id"]) != self.deployment_id:
            return
        added = []
        for target in deployment.get("targets", []):
            position = self._row_of.get(int(target["device_id"]))
            if position is None:
                added.append(dict(target))
            elif self._rows[position] != target:
                self._rows[position] = dict(target)
                self._dirty.add(position)
        if added:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(added) - 1)
            for position, row in enumerate(added, first):
                self._rows.append(row)
                self._row_of[int(row["device_id"])] = position
            self.endInsertRows()
        self.flush()

    def apply_update(self, payload: dict[str, Any]) -> None:
        """Apply a `software_deployment_update` for the shown deployment."""
        if int(payload["deployment_id"]) != self.deployment_id:
            return
        position = self.position(int(payload["device_id"]))
        if position is None:
            return
        row = self._rows[position]
        row["status"] = payload["status"]
        row["progress_percent"] = payload.get("progress", row.get("progress_percent"))
        if payload.get("message"):
            row["message"] = payload["message"]
        for field in ("exit_code", "reboot_required", "agent_status"):
            if payload.get(field) is not None:
                row[field] = payload[field]
        self._changed(position)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        column = index.column()
        state = TargetState.from_update({"deployment_id": self.deployment_id, **row})
        if role == PROGRESS_ROLE and column == self.PROGRESS_COLUMN:
            text, tone = describe(state)
            return (state.progress, text, tone)
        if role == Qt.ItemDataRole.DisplayRole:
            exit_code = row.get("exit_code")
            return [
                self._hostname(int(row["device_id"])),
                str(row.get("status", "")).replace("_", " "),
                "",
                row.get("message") or "",
                "" if exit_code is None else str(exit_code),
                "yes" if row.get("reboot_required") else "",
                local_time(row.get("started_at")),
                local_time(row.get("completed_at")),
            ][column]
        if role == Qt.ItemDataRole.ToolTipRole and column == 3:
            return row.get("message") or None
        return None


class DeploymentsPanel(QWidget):
    """Deployment list above, the selected deployment's targets and log tail below.

    Signals:
        deployment_selected(int): the technician picked a deployment.
        retry_requested(int): "Retry failed" for this deployment id.
        cancel_requested(int): "Cancel" for this deployment id.
    """

    deployment_selected = Signal(int)
    retry_requested = Signal(int)
    cancel_requested = Signal(int)

    def __init__(
        self, hostname: Callable[[int], str], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.deployments = DeploymentModel(self)
        self.targets = TargetModel(hostname, self)

        self.deployment_view = _table(self.deployments, DeploymentModel.PROGRESS_COLUMN)
        self.deployment_view.setSelectionMode(
            QAbstractItemView.SelectionMode.SingleSelection
        )
        header = self.deployment_view.horizontalHeader()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in ((1, 70), (2, 80), (3, 120), (4, 36), (5, 36)):
            header.resizeSection(column, width)
        self.deployment_view.selectionModel().currentRowChanged.connect(
            self._on_current_changed
        )

        self.target_view = _table(self.targets, TargetModel.PROGRESS_COLUMN)
        header = self.target_view.horizontalHeader()
        widths = ((0, 120), (1, 84), (2, 130), (3, 150), (4, 52), (5, 62), (6, 70))
        for column, width in widths:
            header.resizeSection(column, width)
        self.target_view.selectionModel().currentRowChanged.connect(
            self._on_target_changed
        )

        self.log_tail = QPlainTextEdit(self)
        self.log_tail.setReadOnly(True)
        self.log_tail.setPlaceholderText("Select a failed target to see its log tail")
        self.log_tail.setMaximumBlockCount(500)
        self.log_tail.setObjectName("logTail")

        style = self.style()
        self.retry_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_BrowserReload), "Retry failed"
        )
        self.cancel_button = QPushButton(
            style.standardIcon(QStyle.StandardPixmap.SP_BrowserStop), "Cancel"
        )
        self.retry_button.clicked.connect(self._on_retry_clicked)
        self.cancel_button.clicked.connect(self._on_cancel_clicked)
        self.title = QLabel("No deployment selected", self)
        self.title.setObjectName("panelTitle")

        buttons = QHBoxLayout()
        buttons.addWidget(self.title, 1)
        buttons.addWidget(self.retry_button)
        buttons.addWidget(self.cancel_button)

        details = QWidget(self)
        details_layout = QVBoxLayout(details)
        details_layout.setContentsMargins(0, 0, 0, 0)
        details_layout.addLayout(buttons)
        details_layout.addWidget(self.target_view, 3)
        details_layout.addWidget(self.log_tail, 1)

        splitter = QSplitter(Qt.Orientation.Horizontal, self)
        splitter.addWidget(self.deployment_view)
        splitter.addWidget(details)
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setSizes([540, 820])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(splitter)
        self._update_buttons()

    def selected_deployment_id(self) -> int | None:
        index = self.deployment_view.currentIndex()
        return (
            int(index.siblingAtColumn(0).data(Qt.ItemDataRole.UserRole))
            if (index.isValid())
            else None
        )

    def select(self, deployment_id: int) -> None:
        position = self.deployments.position(deployment_id)
        if position is not None:
            self.deployment_view.selectRow(position)

    def show_deployment(self, deployment: dict[str, Any]) -> None:
        """Show the targets of `deployment` (a full row with its "targets")."""
        self.targets.set_deployment(deployment)
        name = deployment.get("deployment_name") or f"Deployment {deployment['id']}"
        self.title.setText(name)
        self.log_tail.clear()
        self._update_buttons()

    def on_deployments_changed(self, payloads: list[dict[str, Any]]) -> list[dict]:
        """Apply a batch of `deployment_update`s; returns those not listed yet."""
        unknown = self.deployments.apply_updates(payloads)
        shown = self.targets.deployment_id
        if any(int(p["deployment_id"]) == shown for p in payloads):
            self._update_buttons()
        return unknown

    def on_targets_changed(self, payloads: list[dict[str, Any]]) -> None:
        self.targets.apply_updates(payloads)

    def refresh_targets(self, deployment: dict[str, Any]) -> None:
        """The shown deployment as stored now, taken in place (selection kept)."""
        self.targets.refresh(deployment)
        self._on_target_changed(self.target_view.currentIndex(), QModelIndex())

    def _on_current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            deployment_id = current.siblingAtColumn(0).data(Qt.ItemDataRole.UserRole)
            self.deployment_selected.emit(int(deployment_id))

    def _on_target_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        row = self.targets.row_dict(current.row()) if current.isValid() else None
        if row is None:
            self.log_tail.clear()
            return
        text = row.get("log_tail") or ""
        if not text and row.get("status") == "failed":
            text = row.get("message") or ""
        if text != self.log_tail.toPlainText():  # a refresh keeps the scroll place
            self.log_tail.setPlainText(text)

    def _on_retry_clicked(self) -> None:
        if self.targets.deployment_id is not None:
            self.retry_requested.emit(self.targets.deployment_id)

    def _on_cancel_clicked(self) -> None:
        if self.targets.deployment_id is not None:
            self.cancel_requested.emit(self.targets.deployment_id)

    def _update_buttons(self) -> None:
        deployment_id = self.targets.deployment_id
        position = (
            None
            if deployment_id is None
            else (self.deployments.position(deployment_id))
        )
        row = None if position is None else self.deployments.row_dict(position)
        status = row.get("status") if row else None
        counts = (row or {}).get("counts") or {}
        self.cancel_button.setEnabled(status in ("pending", "in_progress"))
        self.retry_button.setEnabled(counts.get("failed", 0) > 0)


def _table(model: QAbstractTableModel, progress_column: int) -> TableView:
    view = TableView()
    view.setModel(model)
    view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    view.setAlternatingRowColors(True)
    view.setShowGrid(False)
    view.setWordWrap(False)
    view.verticalHeader().setVisible(False)
    view.verticalHeader().setDefaultSectionSize(24)
    view.horizontalHeader().setStretchLastSection(True)
    view.setItemDelegateForColumn(progress_column, ProgressDelegate(view))
    return view
