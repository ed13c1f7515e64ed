"""An agent killed in the middle of its download and started again: every target
still ends in a true final state, and nothing is installed twice."""

from __future__ import annotations

import asyncio
import os
import zipfile
from pathlib import Path

import psutil

from protocol import SOFTWARE_DEPLOYMENT_UPDATE, TargetStatus
from server.demo import DemoFleet, add_sample_packages, wait_for_deployment
from tests.e2e.conftest import install_count, unpacked_files
from tests.e2e.slowlink import SlowLink

BIG_ZIP_BYTES = 12 * 1024 * 1024
LINK_BYTES_PER_SECOND = 3 * 1024 * 1024  # about four seconds per big download
VICTIM = "demo-agent-1"


def write_big_zip(path: Path) -> Path:
    """A portable app with a large incompressible payload, so its download takes a
    while over the slow link."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("BigApp/payload.bin", os.urandom(BIG_ZIP_BYTES))
        archive.writestr("BigApp/README.txt", "Big App 1.0\n")
    return path


async def test_agent_killed_mid_download_ends_in_a_final_state_without_double_install(
    server, tmp_path
):
    samples = await add_sample_packages(server)
    script = next(s for s in samples if s["installer_type"] == "script")
    big_zip = await server.add_software(
        write_big_zip(tmp_path / "big-app.zip"),
        name="Big App",
        version="1.0",
        installer_type="zip",
    )

    async with (
        SlowLink(server.url, LINK_BYTES_PER_SECOND) as link,
        DemoFleet(link.url, server.enrollment_token, 3, tmp_path / "fleet") as fleet,
    ):
        devices = await fleet.wait_registered(server, timeout=60)
        victim = next(d for d in devices if d["agent_id"] == VICTIM)
        big_download_seen = asyncio.Event()

        def on_event(event: str, payload: dict) -> None:
            # The script is package 1 of 2 (0-50 %), the big zip's download the
            # first half of package 2 (50-75 %).
            if (
                event == SOFTWARE_DEPLOYMENT_UPDATE
                and payload["device_id"] == victim["id"]
                and 50 < payload["progress"] < 75
            ):
                big_download_seen.set()

        unsubscribe = server.add_listener(on_event)
        deployment = await server.create_deployment(
            [script["id"], big_zip["id"]], [d["id"] for d in devices]
        )
        async with asyncio.timeout(60):
            await big_download_seen.wait()
        unsubscribe()
        victim_pid = fleet.pids[VICTIM]
        await fleet.kill_agent(VICTIM)
        killed = not psutil.pid_exists(victim_pid)
        await fleet.start_agent(VICTIM)

        async with asyncio.timeout(120):
            final = await wait_for_deployment(server, deployment["id"])

    assert killed
    by_agent = {
        next(d["agent_id"] for d in devices if d["id"] == t["device_id"]): t
        for t in final["targets"]
    }
    for agent_id, target in by_agent.items():
        dirs = fleet.agent_dirs[agent_id]
        assert TargetStatus(target["status"]).terminal, target
        assert install_count(dirs) <= 1, f"{agent_id} ran the script twice"
        if target["status"] == TargetStatus.SUCCESS:
            assert install_count(dirs) == 1, agent_id
            assert len(unpacked_files(dirs, "payload.bin")) == 1, agent_id
        else:
            assert target["message"], f"{agent_id} failed without saying why"
    others = [t for a, t in by_agent.items() if a != VICTIM]
    assert all(t["status"] == TargetStatus.SUCCESS for t in others), others
