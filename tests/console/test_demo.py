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


@pytest.mark.timeout(300)
async def test_sigterm_closes_the_demo_console_in_order_and_ends_its_agents(tmp_path):
    """`kill` (or Ctrl-C) must not leave demo agents running behind the console."""
    import asyncio
    import os
    import signal
    import sys

    import psutil

    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    console = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "console", "--demo", "--port", "0",
        "--data-dir", str(tmp_path / "data"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )  # fmt: skip
    lines: list[str] = []
    try:
        async with asyncio.timeout(240):
            while "demo: deployment" not in "".join(lines):
                line = await console.stderr.readline()
                assert line, f"console ended early: {''.join(lines)[-2000:]}"
                lines.append(line.decode(errors="replace"))
        agents = [
            child
            for child in psutil.Process(console.pid).children(recursive=True)
            if "agent" in " ".join(child.cmdline())
        ]
        assert agents, "the demo started no agent processes"

        console.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            rest = await console.stderr.read()
            code = await console.wait()
    finally:
        if console.returncode is None:
            console.kill()
            await console.wait()

    _, alive = psutil.wait_procs(agents, timeout=15)
    assert code == 0, rest.decode(errors="replace")[-2000:]
    assert alive == []
    assert b"console stopped" in rest
