"""The agent's settings, its state folder and its id."""

from __future__ import annotations

import logging
import os
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

log = logging.getLogger(__name__)

APP_NAME = "DeployConsole"
MSIEXEC_ENV = "DEPLOY_AGENT_MSIEXEC"


def default_state_dir() -> Path:
    """Machine-wide on Windows (the agent runs as a service), per user elsewhere."""
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return Path(platformdirs.site_data_dir(APP_NAME, appauthor=False)) / "agent"
    return platformdirs.user_state_path(APP_NAME, appauthor=False) / "agent"


def load_agent_id(state_dir: Path) -> str:
    """The id kept in `state_dir/agent_id`, made once (uuid4) when missing."""
    path = state_dir / "agent_id"
    try:
        existing = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    agent_id = f"agent-{uuid.uuid4()}"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(agent_id + "\n", encoding="utf-8")
    os.replace(tmp, path)
    log.info("new agent id %s kept in %s", agent_id, path)
    return agent_id


def msiexec_launcher(given: str | None) -> list[str] | None:
    """The command that runs msiexec: the flag, the environment, or the platform's.

    On Linux and macOS there is none unless given (e.g. `wine msiexec`).
    """
    text = given or os.environ.get(MSIEXEC_ENV)
    if text:
        return shlex.split(text, posix=sys.platform != "win32")
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return ["msiexec"]
    return None


@dataclass(slots=True)
class AgentConfig:
    server_url: str
    token: str
    state_dir: Path
    agent_id: str
    install_root: Path
    msiexec: list[str] | None = None
    hostname: str | None = None
    """Reported instead of the machine's host name when set (demo fleets)."""
    windows: bool = sys.platform == "win32"
    retry_1618_delays_s: tuple[float, ...] = (30, 60, 120, 300, 600)
    """Waits before each new attempt when another installation is running."""
    download_attempts: int = 8
    download_backoff_s: float = 1.0
    connect_backoff_cap_s: float = 60.0
    refused_backoff_cap_s: float = 300.0
    register_timeout_s: float = 15.0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def downloads_dir(self) -> Path:
        return self.state_dir / "downloads"

    @property
    def work_dir(self) -> Path:
        return self.state_dir / "work"
