"""Plumbing every table of the console shares: headers, counts, time cells, and a
view that paints in one go."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QPaintEvent
from PySide6.QtWidgets import QTableView

Index = QModelIndex | QPersistentModelIndex


class HeaderedTableModel(QAbstractTableModel):
    """A flat table whose columns are `headers`; subclasses give `row_total()`.

    `header_tips` are tooltips for some column headers. GUI thread only.
    """

    headers: Sequence[str] = ()
    header_tips: dict[int, str] = {}

    def row_total(self) -> int:
        raise NotImplementedError

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else self.row_total()

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.headers)

    def headerData(
        self,
        section: int,
        orientation: Qt.Orientation,
        role: int = Qt.ItemDataRole.DisplayRole,
    ) -> Any:
        if orientation is not Qt.Orientation.Horizontal:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.headers[section]
        if role == Qt.ItemDataRole.ToolTipRole:
            return self.header_tips.get(section)
        return None


class TableView(QTableView):
    """A `QTableView` that paints while holding Python's interpreter lock.

    Painting a table asks the model for every visible cell and role: hundreds of
    calls from Qt into Python (`data()`, the delegates' `paint()`). When Qt starts
    the paint, each of those calls takes the interpreter lock and gives it back;
    with the embedded server busy on its own thread (`console.server_thread`),
    taking it back waits up to a switch interval every time, and one repaint took
    hundreds of milliseconds. Entering Python once, here, and painting from inside
    keeps the lock for the whole paint: the cells cost what they cost alone.
    """

    def paintEvent(self, event: QPaintEvent) -> None:
        super().paintEvent(event)


def local_time(value: str | None, fmt: str | None = None) -> str:
    """An ISO timestamp from the server as local time, formatted with `fmt`.

    Without `fmt`: "14:02:11" for today, "2024-05-01 14:02" for an older day. A
    value that is not ISO comes back unchanged.
    """
    if not value:
        return ""
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return value
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone()
    if fmt is None:
        fmt = "%H:%M:%S" if stamp.date() == datetime.now().date() else "%Y-%m-%d %H:%M"
    return stamp.strftime(fmt)
