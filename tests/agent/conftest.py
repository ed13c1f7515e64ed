"""Fixtures for the agent's tests: a package file server, a config, a job runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent.config import AgentConfig
from tests.agent.agent_helpers import TOKEN, PackageServer, RunningAgent, start_runner


@pytest.fixture
async def package_server() -> AsyncIterator[PackageServer]:
    server = PackageServer()
    app = web.Application()
    app.router.add_get("/packages/{sha}", server.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"http://127.0.0.1:{port}"
    yield server
    await runner.cleanup()


@pytest.fixture
def agent_config(tmp_path: Path, package_server: PackageServer) -> AgentConfig:
    state = tmp_path / "état agent"
    state.mkdir()
    return AgentConfig(
        server_url=package_server.url,
        token=TOKEN,
        state_dir=state,
        agent_id="agent-test",
        install_root=tmp_path / "install root ü",
        retry_1618_delays_s=(0.05, 0.05),
        download_attempts=3,
        download_backoff_s=0.05,
    )


@pytest.fixture
async def job_runner(agent_config: AgentConfig) -> AsyncIterator[RunningAgent]:
    running = await start_runner(agent_config)
    yield running
    await running.stop()
