"""The activity dock: the server's INFO log lines, newest first, filterable."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any

from PySide6.QtCore import (
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
    Signal,
    Slot,
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
        self.add_lines([(stamp, level, message)])

    def add_lines(self, lines: list[tuple[str, int, str]]) -> None:
        """Add lines in the order they were logged, as one inserted block at the
        top (a registration storm logs thousands a second)."""
        if not lines:
            return
        lines = lines[-MAX_LINES:]
        self.beginInsertRows(QModelIndex(), 0, len(lines) - 1)
        self._lines[:0] = reversed(lines)
        self.endInsertRows()
        if len(self._lines) > MAX_LINES:
            self.beginRemoveRows(QModelIndex(), MAX_LINES, len(self._lines) - 1)
            del self._lines[MAX_LINES:]
            self.endRemoveRows()

    def messages(self) -> list[str]:
        return [message for _, _, message in self._lines]


class _Inbox(QObject):
    """Lines waiting for the GUI thread, and the queued signal that fetches them.

    A child of the model, so Qt destroys it with the model, on the GUI thread;
    its slot is its own method, so no reference cycle through a connection keeps
    it for the garbage collector (which may run on any thread, and a Qt object
    destroyed on the wrong thread crashes the process later).
    """

    ready = Signal()

    def __init__(self, model: ActivityModel) -> None:
        super().__init__(model)  # the model is `parent()`: no Python reference
        self._lines: list[tuple[str, int, str]] = []
        self._lock = threading.Lock()
        self.ready.connect(self._take, Qt.ConnectionType.QueuedConnection)

    def put(self, line: tuple[str, int, str]) -> None:
        """Queue a line (any thread); the first of a batch signals the GUI thread."""
        with self._lock:
            self._lines.append(line)
            first = len(self._lines) == 1
        if first:
            self.ready.emit()

    @Slot()
    def _take(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        model = self.parent()
        if isinstance(model, ActivityModel):
            model.add_lines(lines)


class ActivityHandler(logging.Handler):
    """A logging handler that feeds an `ActivityModel`.

    Safe from any thread: records wait in a list under a lock, and the first of
    a batch sends one queued Qt signal to the GUI thread, which takes them all
    into the model as one block (the server logs from executor threads too, and
    a big fleet logs thousands of lines a second while it registers).
    """

    def __init__(self, model: ActivityModel, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._inbox = _Inbox(model)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
            self._inbox.put((stamp, record.levelno, message))
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
