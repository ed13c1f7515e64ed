"""The database engine: async SQLAlchemy, SQLite tuned for a desktop, Alembic at start.

SQLite (the default) gets WAL journaling, a busy timeout and enforced foreign keys on
every connection, and one pooled connection: SQLite has one writer anyway, and a single
connection never meets "database is locked" between our own sessions. PostgreSQL
(`postgresql+asyncpg://...`) gets a normal pool, for scale-out.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from server.errors import DatabaseTooNewError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(
    url: str, *, busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS
) -> AsyncEngine:
    """An async engine for `url`, with the SQLite pragmas applied per connection.

    `busy_timeout_ms`: how long SQLite waits for another program's lock on the
    file before a write fails with "database is locked".
    """
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_pre_ping=True)

    engine = create_async_engine(url, pool_size=1, max_overflow=0, pool_timeout=60)

    def on_connect(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine.sync_engine, "connect", on_connect)
    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def migrate(engine: AsyncEngine) -> str:
    """Bring the schema to our newest revision; return that revision.

    Raises `DatabaseTooNewError` when the database carries a revision this version
    does not know (a newer Deploy Console wrote it), and changes nothing then.
    """
    async with engine.begin() as conn:
        return await conn.run_sync(_upgrade)


def _upgrade(connection) -> str:
    from alembic import command

    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    known = {rev.revision for rev in script.walk_revisions()}
    current = MigrationContext.configure(connection).get_current_revision()
    if current is not None and current not in known:
        raise DatabaseTooNewError(
            f"The database is at schema revision {current!r}, written by a newer "
            "Deploy Console; install that version or choose another data folder."
        )

    config.attributes["connection"] = connection
    command.upgrade(config, "head")
    head = script.get_current_head()
    if current != head:
        log.info("database schema upgraded from %s to %s", current, head)
    return head
