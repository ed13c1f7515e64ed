"""The device list: `DeviceModel`, its filter proxy and the `DeviceView` drop target."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QBrush, QColor, QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QWidget

from console.status import TargetState, describe
from console.ui.progress import PROGRESS_ROLE, ProgressDelegate
from console.ui.tables import HeaderedTableModel, TableView, local_time

log = logging.getLogger(__name__)

SOFTWARE_MIME = "application/x-deploy-software-ids"
"""Mime type of a drag from the software library: a JSON list of software ids."""

COALESCE_MS = 100

_Index = QModelIndex | QPersistentModelIndex


@dataclass(frozen=True, slots=True)
class DeviceRow:
    device_id: int
    agent_id: str = ""
    hostname: str = ""
    ip: str = ""
    platform: str = ""
    agent_version: str = ""
    online: bool = False
    last_seen: str = ""
    target: TargetState | None = None

    def with_target(self, target: TargetState | None) -> DeviceRow:
        """This row showing `target`: `replace(row, target=...)` without the cost
        of `replace`'s field walk, paid once per report."""
        return DeviceRow(
            self.device_id,
            self.agent_id,
            self.hostname,
            self.ip,
            self.platform,
            self.agent_version,
            self.online,
            self.last_seen,
            target,
        )


class Column:
    HOSTNAME, IP, PLATFORM, AGENT_VERSION, STATE, LAST_SEEN, PROGRESS = range(7)


_HEADERS = ["Hostname", "IP address", "Platform", "Agent", "State", "Last seen"]
_HEADERS.append("Deployment")
_DEVICE_FIELDS = ("agent_id", "hostname", "ip", "platform", "agent_version", "online")
_OFFLINE = QBrush(QColor("#9aa1a9"))


class DeviceModel(HeaderedTableModel):
    """Every known device, one row each, keyed by device id.

    Updates are applied to the rows at once but announced in batches: a timer
    (`COALESCE_MS`) turns all cells changed since the last tick into a few
    `dataChanged` signals over contiguous row runs. New devices are appended with
    `beginInsertRows`; the model is never reset once filled. GUI thread only.

    Signals:
        online_count_changed(int): how many devices are online now.
    """

    online_count_changed = Signal(int)
    headers = _HEADERS

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[DeviceRow] = []
        self._row_of: dict[int, int] = {}
        self._dirty: dict[int, tuple[int, int]] = {}
        self._online = 0
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(COALESCE_MS)
        self._flush_timer.timeout.connect(self.flush)

    # --- Qt model interface --------------------------------------------------

    def row_total(self) -> int:
        return len(self._rows)

    def flags(self, index: _Index) -> Qt.ItemFlag:
        base = super().flags(index)
        return base | Qt.ItemFlag.ItemIsDropEnabled if index.isValid() else base

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        column = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(row, column)
        if role == PROGRESS_ROLE and column == Column.PROGRESS:
            if row.target is None:
                return None
            text, tone = describe(row.target, online=row.online)
            return (row.target.progress, text, tone)
        if role == Qt.ItemDataRole.ForegroundRole and not row.online:
            return _OFFLINE
        if role == Qt.ItemDataRole.UserRole:
            return row.device_id
        if role == Qt.ItemDataRole.ToolTipRole and column == Column.PROGRESS:
            return row.target.message if row.target else None
        return None

    @staticmethod
    def _display(row: DeviceRow, column: int) -> str:
        if column == Column.HOSTNAME:
            return row.hostname or row.agent_id
        if column == Column.IP:
            return row.ip
        if column == Column.PLATFORM:
            return row.platform
        if column == Column.AGENT_VERSION:
            return row.agent_version
        if column == Column.STATE:
            return "online" if row.online else "offline"
        if column == Column.LAST_SEEN:
            return local_time(row.last_seen, "%Y-%m-%d %H:%M:%S")
        if column == Column.PROGRESS:
            return describe(row.target, online=row.online)[0]
        return ""

    # --- updates ---------------------------------------------------------------

    def set_devices(self, devices: list[dict[str, Any]]) -> None:
        """Load the initial list (rows as in GET /api/devices); appends new ones."""
        self.apply_devices([{"device_id": row["id"], **row} for row in devices])

    def apply_devices(self, payloads: list[dict[str, Any]]) -> None:
        """Apply a batch of `device_update` payloads in one pass.

        New devices arrive as one block of inserted rows, changed cells as one
        `dataChanged` per contiguous run, both before this returns.
        """
        added: list[DeviceRow] = []
        pending: dict[int, int] = {}
        for payload in payloads:
            device_id = int(payload["device_id"])
            if device_id in self._row_of:
                self.apply_device(payload)
            elif device_id in pending:
                position = pending[device_id]
                added[position] = self._row_from(added[position], payload)
            else:
                pending[device_id] = len(added)
                added.append(self._row_from(DeviceRow(device_id=device_id), payload))
        self._append(added)
        self.flush()

    def apply_device(self, payload: dict[str, Any]) -> None:
        """Apply a `device_update` payload (or a device row with `device_id`)."""
        device_id = int(payload["device_id"])
        row_index = self._row_of.get(device_id)
        if row_index is None:
            self._append([self._row_from(DeviceRow(device_id=device_id), payload)])
            return
        old = self._rows[row_index]
        new = self._row_from(old, payload)
        if new == old:
            return
        self._rows[row_index] = new
        self._mark(row_index, Column.HOSTNAME, Column.PROGRESS)
        if new.online != old.online:
            self._set_online(self._online + (1 if new.online else -1))

    @staticmethod
    def _row_from(row: DeviceRow, payload: dict[str, Any]) -> DeviceRow:
        fields = {k: payload[k] for k in _DEVICE_FIELDS if payload.get(k) is not None}
        fields["online"] = bool(payload.get("online", False))
        fields["last_seen"] = payload.get("last_seen") or ""
        return replace(row, **fields)

    def apply_targets(self, payloads: list[dict[str, Any]]) -> None:
        """Apply a batch of `software_deployment_update` payloads in one pass.

        The changed cells are announced at the model's next tick (`flush`), with
        those of every other batch until then: a big fleet's reports arrive in
        several slices a tick (`console.bridge.SLICE`), and each announcement
        costs the views a repaint."""
        for payload in payloads:
            self.apply_target(payload)

    def apply_target(self, payload: dict[str, Any]) -> None:
        """Apply a `software_deployment_update`: the device's progress cell moves.

        The cell shows the device's latest deployment: an update for an older
        deployment than the one shown is ignored.
        """
        row_index = self._row_of.get(int(payload["device_id"]))
        if row_index is None:
            log.debug("target update for unknown device %s", payload["device_id"])
            return
        update = TargetState.from_update(payload)
        old = self._rows[row_index]
        if old.target is not None and update.deployment_id < old.target.deployment_id:
            return
        target = old.target.merged(update) if old.target else update
        if target == old.target:
            return
        self._rows[row_index] = old.with_target(target)
        self._mark(row_index, Column.PROGRESS, Column.PROGRESS)

    def flush(self) -> None:
        """Announce every cell changed since the last flush (normally on the timer)."""
        self._flush_timer.stop()
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, {}
        run_start = run_end = None
        first_col, last_col = len(_HEADERS), -1
        for row in sorted(dirty):
            lo, hi = dirty[row]
            if run_end is not None and row == run_end + 1:
                run_end = row
                first_col, last_col = min(first_col, lo), max(last_col, hi)
                continue
            if run_start is not None:
                self._emit_changed(run_start, run_end, first_col, last_col)
            run_start = run_end = row
            first_col, last_col = lo, hi
        if run_start is not None:
            self._emit_changed(run_start, run_end, first_col, last_col)

    def _emit_changed(self, top: int, bottom: int, left: int, right: int) -> None:
        self.dataChanged.emit(self.index(top, left), self.index(bottom, right))

    def _mark(self, row: int, first_col: int, last_col: int) -> None:
        lo, hi = self._dirty.get(row, (first_col, last_col))
        self._dirty[row] = (min(lo, first_col), max(hi, last_col))
        if not self._flush_timer.isActive():
            self._flush_timer.start()

    def _append(self, rows: list[DeviceRow]) -> None:
        if not rows:
            return
        first = len(self._rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        for position, row in enumerate(rows, first):
            self._rows.append(row)
            self._row_of[row.device_id] = position
        self.endInsertRows()
        online = sum(1 for row in rows if row.online)
        if online:
            self._set_online(self._online + online)

    def _set_online(self, count: int) -> None:
        self._online = count
        self.online_count_changed.emit(count)

    # --- queries ---------------------------------------------------------------

    @property
    def online_count(self) -> int:
        return self._online

    def device(self, device_id: int) -> DeviceRow | None:
        row_index = self._row_of.get(device_id)
        return None if row_index is None else self._rows[row_index]

    def row_of(self, device_id: int) -> int | None:
        return self._row_of.get(device_id)

    def hostname(self, device_id: int) -> str:
        row = self.device(device_id)
        return (row.hostname or row.agent_id) if row else f"device {device_id}"


class DeviceFilter(QSortFilterProxyModel):
    """Sorts the devices and keeps rows whose hostname, IP or state matches a text."""

    _COLUMNS = (Column.HOSTNAME, Column.IP, Column.STATE, Column.PROGRESS)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._needle = ""
        self.setSortCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

    def set_text(self, text: str) -> None:
        self.beginFilterChange()
        self._needle = text.strip().lower()
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: _Index) -> bool:
        if not self._needle:
            return True
        model = self.sourceModel()
        for column in self._COLUMNS:
            value = model.index(source_row, column, source_parent).data()
            if value and self._needle in str(value).lower():
                return True
        return False


class DeviceView(TableView):
    """The device table; accepts packages dragged from the software library.

    Dropping on a row deploys to that row, or to the whole selection when the row
    is part of it. Every drop is a copy: nothing is removed from the library.

    Signals:
        software_dropped(list, list): software ids, device ids.
    """

    software_dropped = Signal(list, list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DropOnly)
        self.setDropIndicatorShown(True)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setSortingEnabled(True)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.setItemDelegateForColumn(Column.PROGRESS, ProgressDelegate(self))
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(26)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

    def setModel(self, model: Any) -> None:
        super().setModel(model)
        header = self.horizontalHeader()
        header.setStretchLastSection(True)
        widths = {
            Column.HOSTNAME: 170,
            Column.IP: 120,
            Column.PLATFORM: 80,
            Column.AGENT_VERSION: 70,
            Column.STATE: 70,
            Column.LAST_SEEN: 150,
        }
        for column, width in widths.items():
            header.resizeSection(column, width)
        header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        header.setMinimumSectionSize(60)

    def selected_device_ids(self) -> list[int]:
        rows = self.selectionModel().selectedRows() if self.selectionModel() else []
        return [int(index.data(Qt.ItemDataRole.UserRole)) for index in rows]

    def device_ids_at(self, index: QModelIndex) -> list[int]:
        """The devices a drop on `index` is meant for: its row, or the selection."""
        if not index.isValid():
            return []
        row_id = int(index.siblingAtColumn(0).data(Qt.ItemDataRole.UserRole))
        selected = self.selected_device_ids()
        return selected if row_id in selected else [row_id]

    # --- drop target -------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if event.mimeData().hasFormat(SOFTWARE_MIME):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        index = self.indexAt(event.position().toPoint())
        if event.mimeData().hasFormat(SOFTWARE_MIME) and index.isValid():
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        mime = event.mimeData()
        index = self.indexAt(event.position().toPoint())
        if not mime.hasFormat(SOFTWARE_MIME) or not index.isValid():
            event.ignore()
            return
        try:
            software_ids = [int(i) for i in json.loads(bytes(mime.data(SOFTWARE_MIME)))]
        except (ValueError, TypeError):
            log.warning("ignoring a drop with unreadable software ids")
            event.ignore()
            return
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        device_ids = self.device_ids_at(index)
        if software_ids and device_ids:
            self.software_dropped.emit(software_ids, device_ids)
