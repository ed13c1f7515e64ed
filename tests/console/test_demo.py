"""`deploy-console --demo`: samples in the library, local agents, bars that move."""

from __future__ import annotations

import pytest

from console.session import ConsoleSession
from server.config import ServerConfig
from tests.console.conftest import until

pytestmark = pytest.mark.slow


def _statuses(session: ConsoleSession) -> list[str]:
    model = session.window.deployments_panel.deployments
    return [model.row_dict(row)["status"] for row in range(model.rowCount())]


@pytest.mark.timeout(300)
async def test_demo_deploys_the_first_sample_to_every_demo_agent(qapp, tmp_path):
    session = ConsoleSession(
        ServerConfig(host="127.0.0.1", port=0, data_dir=tmp_path / "data"), demo=True
    )
    await session.start()
    session.window.show()
    try:
        deployments = session.window.deployments_panel.deployments
        await until(
            lambda: _statuses(session) == ["completed"],
            deployments.dataChanged,
            deployments.rowsInserted,
            timeout_s=240,
        )

        assert session.window.software.rowCount() >= 2
        assert session.window.devices.online_count == 3
    finally:
        await session.stop()
