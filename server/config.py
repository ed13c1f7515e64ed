"""Server settings: where it listens, where it keeps its data, which tokens it takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

APP_NAME = "DeployConsole"
DEFAULT_PORT = 8765


def default_data_dir() -> Path:
    """The user's application data folder for Deploy Console (platformdirs)."""
    return platformdirs.user_data_path(APP_NAME, appauthor=False)


@dataclass
class ServerConfig:
    """Everything a `DeployServer` needs to start.

    Tokens left as None are generated on first start and kept in `data_dir`
    (`tokens.json`), so they survive restarts. `port=0` picks a free port (tests).
    """

    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str | None = None
    """SQLAlchemy async URL; default: SQLite file `deploy.db` in `data_dir`."""
    enrollment_token: str | None = None
    admin_token: str | None = None
    redis_url: str | None = None
    """Scale-out: share rooms between server processes through this Redis."""
    redis_channel: str = "deploy-console"
    """Scale-out: the Redis channel and key prefix the cooperating servers share."""
    status_write_interval_s: float = 0.1
    """Agents' status reports are written in one batch at most this often."""
    sqlite_busy_timeout_ms: int = 10_000
    """How long a SQLite write waits for another program's lock on the file."""
    max_upload_bytes: int = 8 * 1024**3
    """Largest installer accepted by `POST /api/software`."""

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "deploy.db"

    @property
    def packages_dir(self) -> Path:
        return self.data_dir / "packages"

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.sqlite_path}"


def port_number(text: str) -> int:
    """A TCP port from the command line, 0 (any free port) to 65535; argparse
    reports anything else as a usage error instead of a traceback."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 0 and 65535")
    return port
