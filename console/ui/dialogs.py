"""Dialogs, and `ask()`: wait for a dialog's answer without blocking the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from console.packages import DEFAULT_INSTALL_ARGS, PackageGuess
from protocol import InstallerType


async def ask(dialog: QDialog) -> int:
    """Open `dialog` window-modal and wait for its result, keeping the loop running.

    `QDialog.exec()` would start a nested event loop inside a coroutine; qasync
    cannot run other tasks' steps in there safely. `open()` returns at once and
    `finished` resolves the future. Cancelling the waiting task rejects the dialog.
    """
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def on_finished(result: int) -> None:
        if not future.done():
            future.set_result(result)

    dialog.finished.connect(on_finished)
    dialog.open()
    try:
        return await future
    finally:
        if dialog.isVisible():
            dialog.reject()
        dialog.finished.disconnect(on_finished)


def _buttons(dialog: QDialog, ok_text: str) -> QDialogButtonBox:
    buttons = QDialogButtonBox(
        QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
    )
    buttons.button(QDialogButtonBox.StandardButton.Ok).setText(ok_text)
    buttons.accepted.connect(dialog.accept)
    buttons.rejected.connect(dialog.reject)
    return buttons


class AddPackageDialog(QDialog):
    """Name, version, type, silent arguments and timeout for one installer file."""

    def __init__(
        self, path: Path, guess: PackageGuess, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add package")
        self.setMinimumWidth(460)
        self.path = path

        self.file_label = QLabel(str(path), self)
        self.file_label.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
        )
        self.name_edit = QLineEdit(guess.name, self)
        self.version_edit = QLineEdit(guess.version, self)
        self.type_box = QComboBox(self)
        for installer_type in InstallerType:
            self.type_box.addItem(installer_type.value, installer_type.value)
        self.type_box.setCurrentIndex(
            self.type_box.findData(guess.installer_type.value)
        )
        self.type_box.currentIndexChanged.connect(self._on_type_changed)
        self.args_edit = QLineEdit(guess.install_args, self)
        self.args_edit.setPlaceholderText("silent install arguments")
        self.timeout_box = QSpinBox(self)
        self.timeout_box.setRange(10, 86_400)
        self.timeout_box.setValue(3600)
        self.timeout_box.setSuffix(" s")

        form = QFormLayout()
        form.addRow("File", self.file_label)
        form.addRow("Name", self.name_edit)
        form.addRow("Version", self.version_edit)
        form.addRow("Type", self.type_box)
        form.addRow("Arguments", self.args_edit)
        form.addRow("Timeout", self.timeout_box)
        self.buttons = _buttons(self, "Add to library")
        self.name_edit.textChanged.connect(self._on_name_changed)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.buttons)

    def _on_type_changed(self) -> None:
        installer_type = InstallerType(self.type_box.currentData())
        if self.args_edit.text() in DEFAULT_INSTALL_ARGS.values():
            self.args_edit.setText(DEFAULT_INSTALL_ARGS[installer_type])

    def _on_name_changed(self, text: str) -> None:
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        ok.setEnabled(bool(text.strip()))

    def values(self) -> dict[str, Any]:
        """Keyword arguments for `server.add_software(path, **values)`."""
        return {
            "name": self.name_edit.text().strip(),
            "version": self.version_edit.text().strip(),
            "installer_type": str(self.type_box.currentData()),
            "install_args": self.args_edit.text().strip(),
            "timeout_s": self.timeout_box.value(),
        }


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def deployment_question(packages: list[str], devices: list[tuple[str, bool]]) -> str:
    """ "Deploy 7-Zip 23.01 to PC-01?" or "Deploy 2 packages to 5 devices?"."""
    what = packages[0] if len(packages) == 1 else _plural(len(packages), "package")
    where = devices[0][0] if len(devices) == 1 else _plural(len(devices), "device")
    return f"Deploy {what} to {where}?"


class ConfirmDeploymentDialog(QDialog):
    """ "Deploy these packages to these devices?" — offline devices marked waiting."""

    def __init__(
        self,
        packages: list[str],
        devices: list[tuple[str, bool]],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Deploy software")
        self.setMinimumWidth(420)
        icon = self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxQuestion)
        heading = QLabel(deployment_question(packages, devices), self)
        heading.setWordWrap(True)
        heading.setObjectName("dialogHeading")
        icon_label = QLabel(self)
        icon_label.setPixmap(icon.pixmap(32, 32))
        top = QHBoxLayout()
        top.addWidget(icon_label)
        top.addWidget(heading, 1)

        self.package_list = QListWidget(self)
        self.package_list.addItems(packages)
        self.device_list = QListWidget(self)
        for hostname, online in devices:
            text = hostname if online else f"{hostname} — waiting for agent"
            item = QListWidgetItem(text)
            if not online:
                item.setForeground(Qt.GlobalColor.gray)
            self.device_list.addItem(item)
        for widget in (self.package_list, self.device_list):
            rows = min(max(widget.count(), 1), 6)
            widget.setFixedHeight(rows * widget.sizeHintForRow(0) + 8)
            widget.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)

        self.name_edit = QLineEdit(self)
        self.name_edit.setPlaceholderText("optional deployment name")
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(QLabel("Packages"))
        layout.addWidget(self.package_list)
        layout.addWidget(QLabel("Devices"))
        layout.addWidget(self.device_list)
        layout.addWidget(self.name_edit)
        layout.addWidget(_buttons(self, "Deploy"))

    def deployment_name(self) -> str | None:
        return self.name_edit.text().strip() or None


class ChoosePackagesDialog(QDialog):
    """Pick packages from the library (the device list's "Deploy…" menu)."""

    def __init__(
        self, software: list[dict[str, Any]], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose packages")
        self.setMinimumWidth(360)
        self.list = QListWidget(self)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        for row in software:
            item = QListWidgetItem(f"{row['name']} {row.get('version', '')}".strip())
            item.setData(Qt.ItemDataRole.UserRole, int(row["id"]))
            self.list.addItem(item)
        layout = QVBoxLayout(self)
        layout.addWidget(self.list)
        layout.addWidget(_buttons(self, "Next"))

    def software_ids(self) -> list[int]:
        return [
            int(item.data(Qt.ItemDataRole.UserRole))
            for item in self.list.selectedItems()
        ]


class HistoryDialog(QDialog):
    """A device's past targets, newest first (non-modal, read only)."""

    def __init__(
        self, hostname: str, lines: list[str], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"History — {hostname}")
        self.setMinimumSize(520, 300)
        history = QListWidget(self)
        history.addItems(lines or ["No deployments for this device yet."])
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(history)
        layout.addWidget(buttons)


class SettingsDialog(QDialog):
    """Port, tokens and data folder; the tokens can be copied, enrollment regenerated.

    Args:
        regenerate: starts regenerating the enrollment token (the window runs the
            coroutine); it calls `set_enrollment_token` when done.
    """

    def __init__(
        self,
        *,
        port: int,
        enrollment_token: str,
        admin_token: str,
        data_dir: Path,
        regenerate: Callable[[], None],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.setMinimumWidth(520)
        self.port_box = QSpinBox(self)
        self.port_box.setRange(1, 65_535)
        self.port_box.setValue(port)
        self.enrollment_edit = self._token_edit(enrollment_token)
        self.admin_edit = self._token_edit(admin_token)
        self.regenerate_button = QPushButton("Regenerate", self)
        self.regenerate_button.clicked.connect(regenerate)
        self.data_dir = data_dir
        open_button = QPushButton(str(data_dir), self)
        open_button.setIcon(
            self.style().standardIcon(QStyle.StandardPixmap.SP_DirOpenIcon)
        )
        open_button.setFlat(True)
        open_button.clicked.connect(self._on_open_data_dir)

        form = QFormLayout()
        form.addRow("Port", self.port_box)
        form.addRow(
            "Enrollment token",
            self._row(self.enrollment_edit, self._copy_button(self.enrollment_edit)),
        )
        form.addRow("", self.regenerate_button)
        admin_copy = self._copy_button(self.admin_edit)
        form.addRow("Admin token", self._row(self.admin_edit, admin_copy))
        form.addRow("Data folder", open_button)
        note = QLabel("Changing the port restarts the server; agents reconnect.", self)
        note.setObjectName("hint")
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(note)
        layout.addWidget(_buttons(self, "Apply"))

    def _token_edit(self, token: str) -> QLineEdit:
        edit = QLineEdit(token, self)
        edit.setReadOnly(True)
        edit.setEchoMode(QLineEdit.EchoMode.PasswordEchoOnEdit)
        edit.setMinimumWidth(300)
        return edit

    def _copy_button(self, edit: QLineEdit) -> QPushButton:
        button = QPushButton("Copy", self)
        button.clicked.connect(lambda: QGuiApplication.clipboard().setText(edit.text()))
        return button

    @staticmethod
    def _row(*widgets: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        for widget in widgets:
            row.addWidget(widget)
        return row

    def _on_open_data_dir(self) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.data_dir)))

    def set_enrollment_token(self, token: str) -> None:
        self.enrollment_edit.setText(token)

    def port(self) -> int:
        return self.port_box.value()
