"""DeviceModel: rows keyed by device, updates announced in coalesced batches."""

from __future__ import annotations

from PySide6.QtCore import Qt

from console.ui.devices import Column, DeviceFilter, DeviceModel
from console.ui.progress import PROGRESS_ROLE


def _device(device_id: int, **fields) -> dict:
    return {
        "device_id": device_id,
        "agent_id": f"agent-{device_id}",
        "hostname": f"PC-{device_id:04d}",
        "ip": f"10.0.{device_id // 250}.{device_id % 250}",
        "online": True,
        **fields,
    }


def _record(model: DeviceModel) -> dict[str, list]:
    seen: dict[str, list] = {"changed": [], "reset": [], "inserted": []}
    model.dataChanged.connect(
        lambda top, bottom, *_: seen["changed"].append(
            (top.row(), bottom.row(), top.column(), bottom.column())
        )
    )
    model.modelReset.connect(lambda: seen["reset"].append(True))
    model.rowsInserted.connect(lambda _p, first, last: seen["inserted"].append(first))
    return seen


def test_new_devices_are_inserted_rows_not_a_reset(qapp):
    model = DeviceModel()
    seen = _record(model)

    for device_id in range(1, 4):
        model.apply_device(_device(device_id))

    assert seen["inserted"] == [0, 1, 2]
    assert seen["reset"] == []
    assert model.rowCount() == 3


def test_burst_of_updates_gives_one_data_changed_over_the_changed_rows(qapp):
    model = DeviceModel()
    for device_id in range(1, 101):
        model.apply_device(_device(device_id))
    seen = _record(model)

    for tick in range(10):
        for device_id in range(11, 21):
            model.apply_target(
                {
                    "deployment_id": 1,
                    "device_id": device_id,
                    "status": "in_progress",
                    "progress": tick * 5,
                }
            )
    model.flush()

    assert seen["changed"] == [(10, 19, Column.PROGRESS, Column.PROGRESS)]
    assert seen["reset"] == []


def test_nothing_is_announced_before_the_coalescing_timer_fires(qapp, qtbot):
    model = DeviceModel()
    model.apply_device(_device(1))
    seen = _record(model)

    model.apply_target(
        {"deployment_id": 1, "device_id": 1, "status": "in_progress", "progress": 10}
    )
    assert seen["changed"] == []
    with qtbot.waitSignal(model.dataChanged, timeout=2000):
        pass

    assert seen["changed"] == [(0, 0, Column.PROGRESS, Column.PROGRESS)]


def test_separate_rows_give_separate_ranges(qapp):
    model = DeviceModel()
    for device_id in range(1, 11):
        model.apply_device(_device(device_id))
    seen = _record(model)

    model.apply_device(_device(2, online=False))
    model.apply_device(_device(8, online=False))
    model.flush()

    assert seen["changed"] == [
        (1, 1, Column.HOSTNAME, Column.PROGRESS),
        (7, 7, Column.HOSTNAME, Column.PROGRESS),
    ]


def test_an_older_deployment_does_not_replace_the_shown_one(qapp):
    model = DeviceModel()
    model.apply_device(_device(1))
    model.apply_target(
        {"deployment_id": 5, "device_id": 1, "status": "in_progress", "progress": 30}
    )

    model.apply_target(
        {"deployment_id": 4, "device_id": 1, "status": "failed", "progress": 0}
    )

    progress = model.index(0, Column.PROGRESS).data(PROGRESS_ROLE)
    assert progress[1] == "downloading 30%"


def test_unchanged_device_update_announces_nothing(qapp):
    model = DeviceModel()
    model.apply_device(_device(1))
    model.flush()
    seen = _record(model)

    model.apply_device(_device(1))
    model.flush()

    assert seen["changed"] == []


def test_online_count_follows_connects_and_disconnects(qapp):
    model = DeviceModel()
    model.apply_device(_device(1))
    model.apply_device(_device(2))

    model.apply_device(_device(1, online=False))

    assert model.online_count == 1


def test_filter_matches_ip_and_state(qapp):
    model = DeviceModel()
    model.apply_device(_device(1, ip="192.168.1.10"))
    model.apply_device(_device(2, ip="10.1.1.1", online=False))
    proxy = DeviceFilter()
    proxy.setSourceModel(model)

    proxy.set_text("192.168")
    by_ip = proxy.rowCount()
    proxy.set_text("offline")
    by_state = [proxy.index(r, 0).data(Qt.ItemDataRole.UserRole) for r in range(1)]

    assert by_ip == 1
    assert by_state == [2]
