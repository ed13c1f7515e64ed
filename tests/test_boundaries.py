"""`server/`, `agent/` and `protocol/` stay free of Qt, checked two ways."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    lint_imports = shutil.which("lint-imports") or str(
        Path(sys.executable).with_name("lint-imports")
    )
    if not Path(lint_imports).exists():
        pytest.skip("import-linter is not installed")

    result = subprocess.run(
        [lint_imports], cwd=ROOT, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_server_and_agent_run_without_loading_qt():
    code = (
        "import sys, importlib, pkgutil\n"
        "import protocol, server, agent\n"
        "for pkg in (server, agent):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if not info.name.endswith(('__main__', '.env')):\n"
        "            importlib.import_module(info.name)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('PySide6', 'qasync', 'console'))\n"
        "print(loaded)\n"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
