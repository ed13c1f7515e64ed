"""Plumbing every table model of the console shares: headers, counts, time cells."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

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
