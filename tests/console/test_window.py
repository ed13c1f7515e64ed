"""The console window with a real embedded server and real agent sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDragMoveEvent, QDropEvent
from PySide6.QtWidgets import QApplication

from console.ui.devices import Column
from console.ui.progress import PROGRESS_ROLE
from tests.console.conftest import next_emission, until

ANY_ACTION = (
    Qt.DropAction.CopyAction | Qt.DropAction.MoveAction | Qt.DropAction.LinkAction
)
# How a file manager's user picks the action: Shift moves, Ctrl+Shift links.
PROPOSING = {
    Qt.DropAction.CopyAction: Qt.KeyboardModifier.NoModifier,
    Qt.DropAction.MoveAction: Qt.KeyboardModifier.ShiftModifier,
    Qt.DropAction.LinkAction: (
        Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    ),
}


def _send_drop(
    view,
    point: QPoint,
    mime: QMimeData,
    actions: Qt.DropAction = ANY_ACTION,
    modifiers: Qt.KeyboardModifier = Qt.KeyboardModifier.NoModifier,
):
    """Deliver a complete drag-and-drop (enter, move, drop) to `view`'s viewport."""
    buttons = Qt.MouseButton.LeftButton
    action = actions
    position = QPoint(point)
    enter = QDragEnterEvent(position, action, mime, buttons, modifiers)
    QApplication.sendEvent(view.viewport(), enter)
    move = QDragMoveEvent(position, action, mime, buttons, modifiers)
    QApplication.sendEvent(view.viewport(), move)
    drop = QDropEvent(position, action, mime, buttons, modifiers)
    QApplication.sendEvent(view.viewport(), drop)
    return enter, move, drop


def _progress_text(window, device_id: int) -> str:
    window.devices.flush()
    row = window.devices.row_of(device_id)
    index = window.devices.index(row, Column.PROGRESS)
    value = index.data(PROGRESS_ROLE)
    return value[1] if value else ""


def _device_row_point(window, device_id: int) -> QPoint:
    source = window.devices.index(window.devices.row_of(device_id), 0)
    index = window.device_filter.mapFromSource(source)
    return window.device_view.visualRect(index).center()


async def _add_script_package(session, tmp_path: Path, name: str = "Tool") -> dict:
    installer = tmp_path / f"{name.lower()}-1.0.sh"
    installer.write_text("#!/bin/sh\necho installed\n")
    row = await session.server.add_software(
        installer, name=name, version="1.0", installer_type="script"
    )
    session.window.software.add(row)
    return row


async def _deploy_by_drop(session, software: dict, device_id: int) -> dict:
    """Drag `software` from the library onto the device's row and confirm."""
    window = session.window
    library_index = window.software.index(
        window.software.all_software().index(software), 0
    )
    mime = window.software.mimeData([library_index])
    asked = asyncio.ensure_future(next_emission(window.question_asked))
    created = asyncio.ensure_future(next_emission(window.deployment_created))
    _send_drop(
        window.device_view,
        _device_row_point(window, device_id),
        mime,
    )
    (dialog,) = await asked
    dialog.accept()
    (deployment,) = await created
    return deployment


async def test_registering_agent_becomes_a_device_row(session, agents):
    model = session.window.devices

    agent = await agents("agent-1", "PC-ACCOUNTING-01")
    await until(lambda: model.row_of(agent.device_id) is not None, model.rowsInserted)

    row = model.row_of(agent.device_id)
    assert model.index(row, Column.HOSTNAME).data() == "PC-ACCOUNTING-01"
    assert model.index(row, Column.STATE).data() == "online"


async def test_status_bar_counts_online_agents(session, agents):
    window = session.window

    await agents("agent-1")
    await agents("agent-2")
    await until(
        lambda: window.devices.online_count == 2, window.devices.online_count_changed
    )

    assert "2 agents online" in window.listening_label.text()
    assert f":{session.server.port}" in window.listening_label.text()


async def test_disconnected_agent_row_turns_grey_and_offline(session, agents):
    model = session.window.devices
    agent = await agents("agent-1")
    await until(lambda: model.online_count == 1, model.online_count_changed)

    await agent.close()
    await until(lambda: model.online_count == 0, model.online_count_changed)

    model.flush()
    index = model.index(model.row_of(agent.device_id), Column.STATE)
    assert index.data() == "offline"
    assert index.data(Qt.ItemDataRole.ForegroundRole) is not None


async def test_package_dropped_on_device_row_is_deployed_to_its_agent(
    session, agents, tmp_path
):
    agent = await agents("agent-1", "PC-01")
    software = await _add_script_package(session, tmp_path)
    model = session.window.devices
    await until(lambda: model.row_of(agent.device_id) is not None, model.rowsInserted)

    deployment = await _deploy_by_drop(session, software, agent.device_id)

    job = await asyncio.wait_for(agent.jobs.get(), 10)
    assert job["deployment_id"] == deployment["id"]
    assert job["device_id"] == agent.device_id
    assert [item["software_id"] for item in job["software_list"]] == [software["id"]]


async def test_drop_on_a_selected_row_deploys_to_the_whole_selection(
    session, agents, tmp_path
):
    first = await agents("agent-1", "PC-01")
    second = await agents("agent-2", "PC-02")
    software = await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 2, window.devices.rowsInserted)
    window.device_view.selectAll()

    deployment = await _deploy_by_drop(session, software, first.device_id)

    targets = {t["device_id"] for t in deployment["targets"]}
    assert targets == {first.device_id, second.device_id}
    jobs = [await asyncio.wait_for(a.jobs.get(), 10) for a in (first, second)]
    assert {job["deployment_id"] for job in jobs} == {deployment["id"]}


async def test_declined_confirmation_creates_no_deployment(session, agents, tmp_path):
    agent = await agents("agent-1")
    await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 1, window.devices.rowsInserted)
    asked = asyncio.ensure_future(next_emission(window.question_asked))

    _send_drop(
        window.device_view,
        _device_row_point(window, agent.device_id),
        window.software.mimeData([window.software.index(0, 0)]),
    )
    (dialog,) = await asked
    dialog.reject()
    await window.tasks.join()

    assert await session.server.list_deployments() == []
    assert agent.jobs.empty()


@pytest.mark.parametrize(
    ("reports", "expected"),
    [
        ([("downloading", 20)], "downloading 20%"),
        ([("downloading", 30), ("installing", 70)], "installing 70%"),
        ([("installing", 80), ("completed", 100)], "success"),
        (
            [("installing", 60), ("failed", 60, {"exit_code": 1603})],
            "failed 1603",
        ),
        (
            [("completed", 100, {"exit_code": 3010, "reboot_required": True})],
            "reboot required",
        ),
    ],
    ids=["downloading", "installing", "success", "failed", "reboot"],
)
async def test_agent_status_reports_move_the_device_progress(
    session, agents, tmp_path, reports, expected
):
    agent = await agents("agent-1")
    software = await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 1, window.devices.rowsInserted)
    deployment = await _deploy_by_drop(session, software, agent.device_id)
    await asyncio.wait_for(agent.jobs.get(), 10)

    for status, progress, *extra in reports:
        await agent.report(
            deployment["id"], status, progress, **(extra[0] if extra else {})
        )
    await until(
        lambda: _progress_text(window, agent.device_id) == expected,
        window.devices.dataChanged,
    )

    assert _progress_text(window, agent.device_id) == expected


async def test_open_confirmation_does_not_stall_agent_updates(
    session, agents, tmp_path
):
    agent = await agents("agent-1")
    software = await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 1, window.devices.rowsInserted)
    first = await _deploy_by_drop(session, software, agent.device_id)
    await asyncio.wait_for(agent.jobs.get(), 10)
    asked = asyncio.ensure_future(next_emission(window.question_asked))
    _send_drop(
        window.device_view,
        _device_row_point(window, agent.device_id),
        window.software.mimeData([window.software.index(0, 0)]),
    )
    (dialog,) = await asked

    await agent.report(first["id"], "downloading", 40)
    await until(
        lambda: _progress_text(window, agent.device_id) == "downloading 40%",
        window.devices.dataChanged,
    )

    assert dialog.isVisible()
    dialog.reject()


@pytest.mark.parametrize("proposed", list(PROPOSING), ids=["copy", "move", "link"])
async def test_installer_dropped_on_library_is_added_and_source_kept(
    session, tmp_path, proposed
):
    window = session.window
    source = tmp_path / "Foo Setup 1.2.3.exe"
    source.write_bytes(b"MZ" + b"\0" * 4096)
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(source))])
    asked = asyncio.ensure_future(next_emission(window.question_asked))

    enter, move, drop = _send_drop(
        window.library_view, QPoint(20, 20), mime, modifiers=PROPOSING[proposed]
    )
    (dialog,) = await asked
    assert (dialog.values()["name"], dialog.values()["version"]) == ("Foo", "1.2.3")
    assert dialog.values()["install_args"] == "/S"
    dialog.accept()
    await until(lambda: window.software.rowCount() == 1, window.software.rowsInserted)

    assert [e.dropAction() for e in (enter, move, drop)] == [
        Qt.DropAction.CopyAction
    ] * 3
    assert drop.proposedAction() == proposed
    assert drop.isAccepted()
    assert source.read_bytes() == b"MZ" + b"\0" * 4096
    (stored,) = await session.server.list_software()
    assert (stored["name"], stored["installer_type"]) == ("Foo", "exe")


async def test_library_refuses_files_that_are_not_installers(session, tmp_path):
    window = session.window
    source = tmp_path / "notes.txt"
    source.write_text("hello")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(source))])

    enter, _move, drop = _send_drop(window.library_view, QPoint(20, 20), mime)

    assert not enter.isAccepted()
    assert not drop.isAccepted()
    assert source.exists()


async def test_library_refuses_a_drag_that_only_allows_moving(session, tmp_path):
    window = session.window
    source = tmp_path / "tool-1.0.msi"
    source.write_bytes(b"msi")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(source))])

    enter, _move, drop = _send_drop(
        window.library_view, QPoint(20, 20), mime, actions=Qt.DropAction.MoveAction
    )

    assert not enter.isAccepted()
    assert not drop.isAccepted()
    assert source.read_bytes() == b"msi"


async def test_server_info_lines_appear_in_activity_newest_first(session, agents):
    window = session.window

    await agents("agent-7", "PC-LAB-07")
    await until(
        lambda: any("agent-7" in m for m in window.activity.messages()),
        window.activity.rowsInserted,
    )

    assert "agent-7" in window.activity.messages()[0] or any(
        "agent-7" in m for m in window.activity.messages()[:3]
    )


async def test_closing_the_window_disconnects_agents_cleanly(session, agents, caplog):
    agent = await agents("agent-1")
    await until(
        lambda: session.window.devices.online_count == 1,
        session.window.devices.online_count_changed,
    )
    caplog.set_level(logging.WARNING)

    session.window.close()
    await asyncio.wait_for(session.wait_closed(), 5)
    await session.stop()
    await asyncio.wait_for(agent.disconnected.wait(), 10)

    assert session.server is None
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_filter_box_keeps_matching_hostnames(session, agents):
    window = session.window
    await agents("agent-1", "PC-ACCOUNTING-01")
    await agents("agent-2", "PC-LAB-02")
    await until(lambda: window.devices.rowCount() == 2, window.devices.rowsInserted)

    window.filter_box.setText("lab")

    assert window.device_filter.rowCount() == 1
    assert window.device_filter.index(0, 0).data() == "PC-LAB-02"


def _deployment_status(window, deployment_id: int) -> str | None:
    model = window.deployments_panel.deployments
    position = model.position(deployment_id)
    return None if position is None else model.row_dict(position)["status"]


async def test_cancel_button_cancels_the_shown_deployment(session, agents, tmp_path):
    agent = await agents("agent-1")
    software = await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 1, window.devices.rowsInserted)
    deployment = await _deploy_by_drop(session, software, agent.device_id)
    panel = window.deployments_panel

    panel.cancel_button.click()
    await until(
        lambda: _deployment_status(window, deployment["id"]) == "cancelled",
        panel.deployments.dataChanged,
    )

    stored = await session.server.get_deployment(deployment["id"])
    assert [t["status"] for t in stored["targets"]] == ["cancelled"]


async def test_retry_failed_sends_the_job_to_the_agent_again(session, agents, tmp_path):
    agent = await agents("agent-1")
    software = await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 1, window.devices.rowsInserted)
    deployment = await _deploy_by_drop(session, software, agent.device_id)
    await asyncio.wait_for(agent.jobs.get(), 10)
    panel = window.deployments_panel
    await agent.report(deployment["id"], "failed", 60, exit_code=1603)
    # The window's slot enables the button after the model's dataChanged: wait on
    # the bridge's signal, whose earlier-connected window slot has run by then.
    await until(panel.retry_button.isEnabled, window.bridge.deployments_changed)

    panel.retry_button.click()

    job = await asyncio.wait_for(agent.jobs.get(), 10)
    assert job["deployment_id"] == deployment["id"]


async def test_failed_target_shows_its_installer_log_tail(session, agents, tmp_path):
    agent = await agents("agent-1")
    software = await _add_script_package(session, tmp_path)
    window = session.window
    await until(lambda: window.devices.rowCount() == 1, window.devices.rowsInserted)
    deployment = await _deploy_by_drop(session, software, agent.device_id)
    panel = window.deployments_panel
    tail = "MainEngineThread is returning 1603"

    await agent.report(deployment["id"], "failed", 60, exit_code=1603, log_tail=tail)
    await until(
        lambda: (panel.targets.row_dict(0) or {}).get("log_tail") == tail,
        panel.targets.dataChanged,
    )
    panel.target_view.selectRow(0)

    assert tail in panel.log_tail.toPlainText()
    assert panel.targets.index(0, 4).data() == "1603"


async def test_port_change_restarts_the_server_in_place(session, agents):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        new_port = probe.getsockname()[1]
    window = session.window

    attached = asyncio.ensure_future(next_emission(window.server_attached))

    window.port_change_requested.emit(new_port)
    (server,) = await attached

    assert server.port == new_port
    assert f":{new_port} " in window.listening_label.text()
    agent = await agents("agent-after-restart")
    await until(
        lambda: window.devices.row_of(agent.device_id) is not None,
        window.devices.rowsInserted,
    )
