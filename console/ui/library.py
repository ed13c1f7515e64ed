"""The software library: `SoftwareModel` and `LibraryView` (files in, drags out)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QMimeData,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QWidget

from console.packages import is_supported
from console.ui.devices import SOFTWARE_MIME
from console.ui.tables import HeaderedTableModel, TableView, local_time

log = logging.getLogger(__name__)

_Index = QModelIndex | QPersistentModelIndex
_HEADERS = ["Name", "Version", "Type", "Size", "Added"]


def human_size(size: int) -> str:
    """1536 -> "1.5 KB"."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover - the loop always returns


class SoftwareModel(HeaderedTableModel):
    """The packages in the library (rows as in GET /api/software). GUI thread only."""

    headers = _HEADERS

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._rows: list[dict[str, Any]] = []
        self._row_of: dict[int, int] = {}

    def row_total(self) -> int:
        return len(self._rows)

    def data(self, index: _Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self._rows[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return [
                row.get("name", ""),
                row.get("version", ""),
                row.get("installer_type", ""),
                human_size(int(row.get("size") or 0)),
                local_time(row.get("added_at"), "%Y-%m-%d"),
            ][index.column()]
        if role == Qt.ItemDataRole.UserRole:
            return int(row["id"])
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.get('file_name', '')}\nsha256 {row.get('sha256', '')}"
        return None

    def flags(self, index: _Index) -> Qt.ItemFlag:
        base = super().flags(index)
        if index.isValid():
            return base | Qt.ItemFlag.ItemIsDragEnabled
        return base

    def mimeTypes(self) -> list[str]:
        return [SOFTWARE_MIME]

    def mimeData(self, indexes: Any) -> QMimeData:
        ids = sorted({int(index.data(Qt.ItemDataRole.UserRole)) for index in indexes})
        mime = QMimeData()
        mime.setData(SOFTWARE_MIME, json.dumps(ids).encode())
        return mime

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

    def set_software(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.add(row)

    def add(self, row: dict[str, Any]) -> None:
        """Add a package, or refresh it if its id is already listed."""
        software_id = int(row["id"])
        existing = self._row_of.get(software_id)
        if existing is not None:
            self._rows[existing] = row
            self.dataChanged.emit(
                self.index(existing, 0),
                self.index(existing, len(_HEADERS) - 1),
            )
            return
        position = len(self._rows)
        self.beginInsertRows(QModelIndex(), position, position)
        self._rows.append(row)
        self._row_of[software_id] = position
        self.endInsertRows()

    def software(self, software_id: int) -> dict[str, Any] | None:
        position = self._row_of.get(software_id)
        return None if position is None else self._rows[position]

    def all_software(self) -> list[dict[str, Any]]:
        return list(self._rows)


def _local_files(mime: QMimeData) -> list[Path]:
    return [Path(url.toLocalFile()) for url in mime.urls() if url.isLocalFile()]


class LibraryView(TableView):
    """The library table: packages drag out to devices, installer files drop in.

    A file drop is always a copy, whatever action the file manager proposes (move,
    link): the source file is never touched beyond reading it. A drag that does not
    allow copying at all is refused.

    Signals:
        files_dropped(list): the installer paths (`pathlib.Path`) dropped.
    """

    files_dropped = Signal(list)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setAcceptDrops(True)
        self.viewport().setAcceptDrops(True)
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setAlternatingRowColors(True)
        self.setShowGrid(False)
        self.setWordWrap(False)
        self.verticalHeader().setVisible(False)
        self.verticalHeader().setDefaultSectionSize(24)

    def setModel(self, model: Any) -> None:
        super().setModel(model)
        header = self.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for column, width in ((1, 64), (2, 52), (3, 72), (4, 90)):
            header.resizeSection(column, width)

    @staticmethod
    def _accepts(event: QDropEvent) -> bool:
        """Installer files, from a source that lets us copy them.

        A source that offers only "move" would delete its file after the drop,
        so such a drag is refused rather than turned into a move.
        """
        if not event.possibleActions() & Qt.DropAction.CopyAction:
            return False
        return any(is_supported(path) for path in _local_files(event.mimeData()))

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._accepts(event):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QDragMoveEvent) -> None:
        if self._accepts(event):
            event.setDropAction(Qt.DropAction.CopyAction)
            event.accept()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = [p for p in _local_files(event.mimeData()) if is_supported(p)]
        if not paths or not self._accepts(event):
            event.ignore()
            return
        # Copy, never move: the file manager must not delete its original.
        event.setDropAction(Qt.DropAction.CopyAction)
        event.accept()
        skipped = len(event.mimeData().urls()) - len(paths)
        if skipped:
            log.info("ignored %d dropped file(s) that are not installers", skipped)
        self.files_dropped.emit(paths)
