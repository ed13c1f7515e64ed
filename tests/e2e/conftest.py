"""Fixtures and checks shared by the end-to-end tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.demo import WINE_MSIEXEC, AgentDirs, msi_skip_reason


@contextlib.asynccontextmanager
async def running_server(data_dir: Path) -> AsyncIterator:
    """A real DeployServer on loopback, port 0, with a real SQLite file in data_dir."""
    from server.app import DeployServer
    from server.config import ServerConfig

    server = DeployServer(ServerConfig(host="127.0.0.1", port=0, data_dir=data_dir))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def msiexec() -> str | None:
    """The MSI launcher demo agents get here: Wine's msiexec, or None without Wine."""
    return WINE_MSIEXEC if msi_skip_reason() is None else None


def install_count(dirs: AgentDirs) -> int:
    """How many times the script sample ran on this agent (lines it appended)."""
    log = dirs.install_root / "HelloDeploy" / "install-count.log"
    if not log.exists():
        return 0
    return len(log.read_text().splitlines())


def unpacked_files(dirs: AgentDirs, name: str) -> list[Path]:
    """Every file called `name` under the agent's install root."""
    return sorted(dirs.install_root.rglob(name))
