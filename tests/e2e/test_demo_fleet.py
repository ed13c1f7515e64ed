"""The demo fleet: real agent processes, all gone with their folders after stop."""

from __future__ import annotations

import socket

import psutil
import pytest

from server.demo import DemoFleet


@pytest.fixture
def unreachable_server_url() -> str:
    """A loopback URL nothing listens on: the agents keep retrying, as they should."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_fleet_runs_each_agent_as_its_own_process_with_its_own_folders(
    unreachable_server_url,
):
    async with DemoFleet(unreachable_server_url, "token", count=2) as fleet:
        pids = fleet.pids
        state_dirs = {d.state_dir for d in fleet.agent_dirs.values()}
        install_roots = {d.install_root for d in fleet.agent_dirs.values()}

        assert sorted(pids) == ["demo-agent-1", "demo-agent-2"]
        assert len(set(pids.values())) == 2
        assert all(alive(pid) for pid in pids.values())
        assert len(state_dirs) == len(install_roots) == 2
        assert all(path.is_dir() for path in state_dirs | install_roots)


async def test_stopping_the_fleet_ends_every_agent_and_removes_its_temporary_folder(
    unreachable_server_url,
):
    fleet = DemoFleet(unreachable_server_url, "token", count=2)
    await fleet.start()
    pids = list(fleet.pids.values())

    await fleet.stop()

    assert not any(alive(pid) for pid in pids)
    assert not fleet.base_dir.exists()


async def test_stopping_the_fleet_keeps_a_base_folder_it_was_given(
    unreachable_server_url, tmp_path
):
    async with DemoFleet(unreachable_server_url, "token", 1, base_dir=tmp_path):
        pass

    assert (tmp_path / "demo-agent-1" / "state").is_dir()


async def test_killed_agent_restarts_with_the_same_state_folder(
    unreachable_server_url,
):
    async with DemoFleet(unreachable_server_url, "token", count=1) as fleet:
        first = fleet.pids["demo-agent-1"]
        await fleet.kill_agent("demo-agent-1")
        killed = not alive(first)
        await fleet.start_agent("demo-agent-1")

        assert killed
        assert fleet.pids["demo-agent-1"] != first
        assert alive(fleet.pids["demo-agent-1"])
