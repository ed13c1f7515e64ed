"""Many devices reporting: updates reach the views as few, coalesced changes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable

from PySide6.QtCore import QObject, Qt

from console.bridge import SLICE, ServerBridge
from console.ui.activity import ActivityHandler, ActivityModel
from console.ui.deployments import TargetModel
from console.ui.devices import Column, DeviceFilter, DeviceModel, DeviceView
from console.ui.progress import PROGRESS_ROLE
from protocol import DEVICE_UPDATE, SOFTWARE_DEPLOYMENT_UPDATE
from tests.console.conftest import WAIT_S, next_emission, until


class ListenerHost:
    """Stands in for `DeployServer.add_listener` (server/app.py), the only part of
    the server the bridge uses: the test publishes events as the server would."""

    def __init__(self) -> None:
        self.listeners: list[Callable] = []

    def add_listener(self, listener: Callable) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def publish(self, event: str, payload: dict) -> None:
        for listener in list(self.listeners):
            listener(event, payload)


def _report(device_id: int, progress: float, **extra) -> dict:
    return {
        "deployment_id": 1,
        "device_id": device_id,
        "status": "in_progress",
        "progress": progress,
        **extra,
    }


def _record(model: QObject) -> dict[str, int]:
    seen = {"changed": 0, "reset": 0, "layout": 0}

    def count(kind: str) -> Callable[..., None]:
        return lambda *_: seen.__setitem__(kind, seen[kind] + 1)

    model.dataChanged.connect(count("changed"))
    model.modelReset.connect(count("reset"))
    model.layoutChanged.connect(count("layout"))
    return seen


async def test_a_burst_of_reports_is_delivered_as_one_batch_per_tick(qapp):
    host = ListenerHost()
    bridge = ServerBridge(host)
    batches: list[list] = []
    bridge.targets_changed.connect(batches.append)
    delivered = next_emission(bridge.targets_changed)

    for progress in range(50, 100, 10):
        for device_id in range(1, 201):
            host.publish(SOFTWARE_DEPLOYMENT_UPDATE, _report(device_id, progress))
    await delivered

    assert len(batches) == 1
    assert len(batches[0]) == 200
    assert {p["progress"] for p in batches[0]} == {90}


async def test_a_batch_bigger_than_a_slice_arrives_in_order_across_loop_turns(qapp):
    """4,000 devices finishing in one tick must not hold the loop for one long
    slot call: the window gets them in slices, and the loop runs in between."""
    host = ListenerHost()
    bridge = ServerBridge(host)
    slices: list[list] = []
    turns: list[int] = []  # how many slices had arrived when the loop next ran
    all_delivered = asyncio.Event()

    def on_slice(payloads: list) -> None:
        slices.append(payloads)
        asyncio.get_running_loop().call_soon(turns.append, len(slices))
        if sum(map(len, slices)) == 2 * SLICE + 1:
            all_delivered.set()

    bridge.targets_changed.connect(on_slice)
    for device_id in range(1, 2 * SLICE + 2):
        host.publish(SOFTWARE_DEPLOYMENT_UPDATE, _report(device_id, 60))
    await asyncio.wait_for(all_delivered.wait(), WAIT_S)

    assert [len(s) for s in slices] == [SLICE, SLICE, 1]
    assert [p["device_id"] for s in slices for p in s] == list(range(1, 2 * SLICE + 2))
    assert turns[:2] == [1, 2]  # the loop ran after each slice, before the next


async def test_a_superseded_report_keeps_the_message_the_latest_leaves_out(qapp):
    host = ListenerHost()
    bridge = ServerBridge(host)
    delivered = next_emission(bridge.targets_changed)

    host.publish(SOFTWARE_DEPLOYMENT_UPDATE, _report(1, 60, message="setup.exe /q"))
    host.publish(SOFTWARE_DEPLOYMENT_UPDATE, _report(1, 70, message=None))
    (batch,) = await delivered

    assert batch == [_report(1, 70, message="setup.exe /q")]


async def test_devices_are_delivered_before_their_targets(qapp):
    host = ListenerHost()
    bridge = ServerBridge(host)
    order: list[str] = []
    bridge.devices_changed.connect(lambda _: order.append("devices"))
    bridge.targets_changed.connect(lambda _: order.append("targets"))
    delivered = next_emission(bridge.targets_changed)

    host.publish(SOFTWARE_DEPLOYMENT_UPDATE, _report(7, 55))
    host.publish(
        DEVICE_UPDATE,
        {"device_id": 7, "agent_id": "a-7", "hostname": "PC-7", "online": True},
    )
    await delivered

    assert order == ["devices", "targets"]


def test_detached_bridge_delivers_nothing_more(qapp):
    host = ListenerHost()
    bridge = ServerBridge(host)
    batches: list[list] = []
    bridge.targets_changed.connect(batches.append)
    host.publish(SOFTWARE_DEPLOYMENT_UPDATE, _report(1, 60))

    bridge.detach()
    bridge.flush()

    assert batches == []
    assert host.listeners == []


def _fleet(count: int) -> list[dict]:
    return [
        {
            "device_id": n,
            "agent_id": f"agent-{n}",
            "hostname": f"PC-{n:05d}",
            "online": True,
        }
        for n in range(1, count + 1)
    ]


def test_thousands_of_target_updates_in_a_tick_are_one_data_changed_no_reset(qapp):
    model = DeviceModel()
    model.apply_devices(_fleet(5000))
    proxy = DeviceFilter()
    proxy.setSourceModel(model)
    view = DeviceView()
    view.setModel(proxy)
    view.sortByColumn(Column.HOSTNAME, Qt.SortOrder.AscendingOrder)
    view.show()
    source_seen, proxy_seen = _record(model), _record(proxy)

    model.apply_targets([_report(n, 75) for n in range(1, 2501)])
    model.apply_targets([_report(n, 75) for n in range(2501, 5001)])
    model.flush()  # the tick's announcement

    assert source_seen == {"changed": 1, "reset": 0, "layout": 0}
    assert proxy_seen["reset"] == 0
    assert proxy_seen["layout"] == 0
    assert model.index(4999, Column.PROGRESS).data(PROGRESS_ROLE)[1] == (
        "installing 75%"
    )
    view.close()


def test_new_devices_in_one_batch_are_one_inserted_block(qapp):
    model = DeviceModel()
    inserted: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))

    model.apply_devices(_fleet(300))

    assert inserted == [(0, 299)]
    assert model.online_count == 300


def _deployment(targets: list[dict]) -> dict:
    return {"id": 1, "deployment_name": "Tool", "targets": targets}


def _target(device_id: int, status: str = "in_progress", **extra) -> dict:
    return {"device_id": device_id, "status": status, "progress_percent": 70, **extra}


def test_refreshing_the_shown_deployment_changes_rows_in_place(qapp):
    model = TargetModel(lambda device_id: f"PC-{device_id}")
    model.set_deployment(_deployment([_target(n) for n in range(1, 101)]))
    seen = _record(model)

    finished = [_target(n) for n in range(1, 101)]
    finished[41] = _target(42, "failed", exit_code=1603, log_tail="error 1603")
    model.refresh(_deployment(finished))

    assert seen == {"changed": 1, "reset": 0, "layout": 0}
    assert model.index(41, 4).data() == "1603"
    assert model.row_dict(41)["log_tail"] == "error 1603"


async def test_a_storm_of_log_lines_reaches_the_activity_list_as_one_block(qapp):
    """A thread logs 300 lines (as the server's executor threads do) before the
    GUI thread runs again: one inserted block, newest first, nothing lost."""
    model = ActivityModel()
    handler = ActivityHandler(model)
    inserted: list[tuple[int, int]] = []
    model.rowsInserted.connect(lambda _p, first, last: inserted.append((first, last)))
    logger = logging.getLogger("tests.activity_storm")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        writer = threading.Thread(
            target=lambda: [logger.info("line %d", n) for n in range(300)]
        )
        writer.start()
        writer.join()
        await until(lambda: model.rowCount() == 300, model.rowsInserted)
    finally:
        logger.removeHandler(handler)

    assert inserted == [(0, 299)]
    assert model.messages()[0] == "line 299"
    assert model.messages()[-1] == "line 0"
