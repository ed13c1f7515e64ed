"""PyInstaller hook for our `server` package: what it loads by name at run time.

- engine.io picks its async driver with importlib from the `async_mode` name;
- SQLAlchemy finds a dialect and its driver from the database URL
  (`sqlite+aiosqlite`, `postgresql+asyncpg`);
- Alembic executes `migrations/env.py` and `migrations/versions/*.py` from files, so
  they travel as data (what they import is added by build_installer.py).
"""

from PyInstaller.utils.hooks import collect_data_files

hiddenimports = [
    "engineio.async_drivers.aiohttp",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "aiosqlite",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "asyncpg",
    "greenlet",
    "alembic.runtime.migration",
    "alembic.ddl.sqlite",
    "alembic.ddl.postgresql",
]

datas = collect_data_files("server", excludes=["**/__pycache__"])
datas += collect_data_files(
    "server",
    subdir="migrations",
    include_py_files=True,
    excludes=["**/__pycache__", "**/*.pyc"],
)
