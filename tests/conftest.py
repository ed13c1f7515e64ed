"""Fixtures shared by every test folder: a real server on loopback, real agents.

- `server`: a started `DeployServer` on 127.0.0.1, port 0, with a temporary data
  folder (a real SQLite file); stopped after the test.
- `server_factory`: `await server_factory(**ServerConfig fields)` for more servers
  or other settings; all are stopped after the test.
- `agent_factory`: `await agent_factory(agent_id=..., server=...)` gives a connected,
  registered `tests.helpers.FakeAgent`; closed after the test.
- `package`: software added to `server` (a small shell-script installer).
- `package_file`: such an installer on disk, for servers made by `server_factory`.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from server.app import DeployServer
from server.config import ServerConfig
from tests.helpers import FakeAgent, connected_agent, write_installer


@pytest.fixture
async def server_factory(tmp_path_factory):
    servers: list[DeployServer] = []

    async def make(**config) -> DeployServer:
        config.setdefault("host", "127.0.0.1")
        config.setdefault("port", 0)
        config.setdefault("data_dir", tmp_path_factory.mktemp("server-data"))
        server = DeployServer(ServerConfig(**config))
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def server(server_factory) -> DeployServer:
    return await server_factory()


@pytest.fixture
async def agent_factory(server):
    agents: list[FakeAgent] = []
    numbers = itertools.count(1)

    async def make(agent_id: str | None = None, on=None, **kw) -> FakeAgent:
        target = on or server
        agent = await connected_agent(
            target, agent_id or f"agent-{next(numbers)}", **kw
        )
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        await agent.close()


@pytest.fixture
async def package(server, tmp_path: Path) -> dict:
    installer = write_installer(tmp_path / "hello.sh")
    return await server.add_software(
        installer, name="Hello", version="1.0", installer_type="script"
    )


@pytest.fixture
def package_file(tmp_path: Path) -> Path:
    return write_installer(tmp_path / "hello.sh")
