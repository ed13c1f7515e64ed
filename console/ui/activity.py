"""The activity dock: the server's INFO log lines, newest first, filterable."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
)
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from console.ui.tables import HeaderedTableModel, TableView

_Index = QModelIndex | QPersistentModelIndex
MAX_LINES = 5000
_LEVEL_COLOURS = {
    logging.WARNING: QBrush(QColor("#a05a00")),
    logging.ERROR: QBrush(QColor("#b3261e")),
    logging.CRITICAL: QBrush(QColor("#b3261e")),
}


class ActivityModel(HeaderedTableModel):
    """Log lines, newest first, at most `MAX_LINES` (the oldest drop off)."""

    headers = ["Time", "Level", "Message"]

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._lines: list[tuple[str, int, str]] = []

    def row_total(self) -> int:
        return len(self._lines)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        stamp, level, message = self._lines[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return (stamp, logging.getLevelName(level).lower(), message)[index.column()]
        if role == Qt.ItemDataRole.ForegroundRole:
            return _LEVEL_COLOURS.get(level)
        if role == Qt.ItemDataRole.ToolTipRole and index.column() == 2:
            return message
        return None

    def add_line(self, stamp: str, level: int, message: str) -> None:
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._lines.insert(0, (stamp, level, message))
        self.endInsertRows()
        if len(self._lines) > MAX_LINES:
            self.beginRemoveRows(QModelIndex(), MAX_LINES, len(self._lines) - 1)
            del self._lines[MAX_LINES:]
            self.endRemoveRows()

    def messages(self) -> list[str]:
        return [message for _, _, message in self._lines]


class _RecordSignal(QObject):
    record_emitted = Signal(str, int, str)


class ActivityHandler(logging.Handler):
    """A logging handler that feeds an `ActivityModel`.

    Safe from any thread: records travel to the GUI thread through a queued Qt
    signal (the server logs from executor threads too, e.g. while hashing).
    """

    def __init__(self, model: ActivityModel, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._signal = _RecordSignal()
        self._signal.record_emitted.connect(
            model.add_line, Qt.ConnectionType.QueuedConnection
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
            self._signal.record_emitted.emit(stamp, record.levelno, message)
        except RuntimeError:
            pass  # the Qt object is already gone while the process shuts down
        except Exception:  # a bad log call must not break the caller
            self.handleError(record)


class ActivityPanel(QWidget):
    """The dock's content: a filter box over the activity table."""

    def __init__(self, model: ActivityModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(model)
        self.proxy.setFilterKeyColumn(2)
        self.proxy.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)

        self.filter_box = QLineEdit(self)
        self.filter_box.setPlaceholderText("Filter by device, deployment, text…")
        self.filter_box.setClearButtonEnabled(True)
        self.filter_box.textChanged.connect(self.proxy.setFilterFixedString)

        self.view = TableView(self)
        self.view.setModel(self.proxy)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setShowGrid(False)
        self.view.setWordWrap(False)
        self.view.verticalHeader().setVisible(False)
        self.view.verticalHeader().setDefaultSectionSize(22)
        self.view.horizontalHeader().setStretchLastSection(True)
        self.view.horizontalHeader().resizeSection(0, 70)
        self.view.horizontalHeader().resizeSection(1, 60)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.filter_box)
        layout.addWidget(self.view)
