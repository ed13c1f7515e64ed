"""Fixtures of the benchmark tests: the Node.js fleet worker's node_modules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.fleet import NODE_DIR, node_client_missing

NPM_TIMEOUT = 300


@pytest.fixture(scope="session")
def node_modules(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """Where socket.io-client is installed for `Fleet(client="node")`.

    None means the checkout's own `bench/peers/node/node_modules` (made by its
    setup.sh). Where that is missing -- a fresh clone in CI, which does not run
    setup.sh -- `npm ci` installs the locked packages from the registry into a
    temporary copy of package.json and package-lock.json, once per session. Skips
    with the reason when node or npm is not installed or the install fails.
    """
    if shutil.which("node") is None:
        pytest.skip("node not installed (Debian: apt-get install nodejs npm)")
    if node_client_missing() is None:
        return None
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm not installed, and bench/peers/node/node_modules is missing")
    prefix = tmp_path_factory.mktemp("node-peer")
    for name in ("package.json", "package-lock.json"):
        shutil.copy2(NODE_DIR / name, prefix / name)
    try:
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=prefix,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT,
            check=True,
        )
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"npm ci of bench/peers/node failed: {exc.stderr[-500:]}")
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm ci of bench/peers/node took over {NPM_TIMEOUT} s")
    modules = prefix / "node_modules"
    reason = node_client_missing(modules)
    if reason:
        pytest.skip(reason)
    return modules
