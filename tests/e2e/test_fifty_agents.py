"""A deployment to fifty agents at once: fifty real agent processes, all complete."""

from __future__ import annotations

import asyncio

import pytest

from protocol import TargetStatus
from server.demo import DemoFleet, add_sample_packages, wait_for_deployment
from tests.e2e.conftest import install_count, unpacked_files

AGENTS = 50


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_deployment_to_fifty_agents_at_once_completes_on_every_one(
    server, tmp_path
):
    samples = await add_sample_packages(server)
    packages = [s for s in samples if s["installer_type"] in ("script", "zip")]

    async with DemoFleet(
        server.url, server.enrollment_token, AGENTS, tmp_path / "fleet"
    ) as fleet:
        devices = await fleet.wait_registered(server, timeout=300)
        deployment = await server.create_deployment(
            [p["id"] for p in packages], [d["id"] for d in devices]
        )
        async with asyncio.timeout(300):
            final = await wait_for_deployment(server, deployment["id"])

    statuses = [t["status"] for t in final["targets"]]
    assert len(statuses) == AGENTS
    assert statuses == [TargetStatus.SUCCESS] * AGENTS, final.get("counts")
    assert final["status"] == "completed"
    for agent_id, dirs in fleet.agent_dirs.items():
        assert install_count(dirs) == 1, agent_id
        assert len(unpacked_files(dirs, "hello_portable.py")) == 1, agent_id
