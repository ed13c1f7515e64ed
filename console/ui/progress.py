"""`ProgressDelegate`: a progress bar with a status text, drawn inside a table cell."""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QColor, QPainter, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
)

from console.status import Tone

PROGRESS_ROLE = Qt.ItemDataRole.UserRole + 1
"""Item data role carrying `(percent: float, text: str, tone: Tone)` for a cell."""

_TONE_COLOURS = {
    Tone.ACTIVE: QColor("#2f7fd1"),
    Tone.SUCCESS: QColor("#2e9d52"),
    Tone.WARNING: QColor("#d08a12"),
    Tone.FAILED: QColor("#c8372d"),
    Tone.WAITING: QColor("#8c96a3"),
    Tone.IDLE: QColor("#a0a7b0"),
}


class ProgressDelegate(QStyledItemDelegate):
    """Paints the `PROGRESS_ROLE` value of a cell as a coloured bar with its text.

    Cells without that role are drawn as usual. Called on the GUI thread only.
    """

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        value = index.data(PROGRESS_ROLE)
        if not value:
            super().paint(painter, option, index)
            return
        percent, text, tone = value

        # Selection background first, so the bar sits on the row's highlight.
        style = option.widget.style() if option.widget else QApplication.style()
        style.drawPrimitive(
            QStyle.PrimitiveElement.PE_PanelItemViewItem, option, painter, option.widget
        )

        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(3, 3, -3, -3)
        bar.minimum = 0
        bar.maximum = 100
        bar.progress = round(percent if tone is not Tone.SUCCESS else 100)
        if tone in (Tone.FAILED, Tone.WARNING, Tone.IDLE):
            bar.progress = max(bar.progress, 100 if tone is not Tone.IDLE else 0)
        bar.text = text
        bar.textVisible = True
        bar.textAlignment = Qt.AlignmentFlag.AlignCenter
        bar.state = QStyle.StateFlag.State_Enabled | QStyle.StateFlag.State_Horizontal
        bar.palette = QPalette(option.palette)
        bar.palette.setColor(QPalette.ColorRole.Highlight, _TONE_COLOURS[tone])
        if not (option.state & QStyle.StateFlag.State_Enabled):
            bar.state &= ~QStyle.StateFlag.State_Enabled
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)
