"""`deploy-console` start-up: clear errors, and the self-test the bundle runs."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from console.app import EXIT_STARTUP_ERROR, main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def taken_port():
    """A port another program is listening on."""
    with socket.socket() as listener:
        listener.bind(("0.0.0.0", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_port_in_use_reports_a_clear_error_and_exits_2(qapp, taken_port, tmp_path):
    errors: list[str] = []

    code = main(
        ["--port", str(taken_port), "--data-dir", str(tmp_path)],
        report_error=errors.append,
    )

    assert code == EXIT_STARTUP_ERROR
    (text,) = errors
    assert f"Port {taken_port} is already used" in text
    assert "Traceback" not in text


def test_unwritable_data_folder_reports_a_clear_error(qapp, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data folder should be")
    errors: list[str] = []

    code = main(
        ["--port", "0", "--data-dir", str(blocker / "data")],
        report_error=errors.append,
    )

    assert code == EXIT_STARTUP_ERROR
    (text,) = errors
    assert "cannot be written" in text


def _run_console(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.run(
        [sys.executable, "-m", "console", "--log-level", "WARNING", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )


def test_self_test_deploys_to_a_real_agent_and_exits_0():
    result = _run_console("--self-test")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-test: agent reported success ... ok" in result.stdout
    assert result.stdout.rstrip().endswith("self-test: passed")


def test_self_test_fails_with_1_when_the_agent_cannot_start():
    broken_agent = shlex.join([sys.executable, "-c", "raise SystemExit(3)"])

    result = _run_console("--self-test", "--agent-cmd", broken_agent)

    assert result.returncode == 1
    assert "FAILED: SelfTestFailed: the agent exited with code 3" in result.stdout


def test_without_a_display_it_says_so_instead_of_aborting(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("only Linux decides about a display this way")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")
    }
    result = subprocess.run(
        [sys.executable, "-m", "console", "--data-dir", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == EXIT_STARTUP_ERROR
    assert "no display" in result.stderr
    assert "xvfb-run" in result.stderr


def test_demo_keeps_its_data_apart_from_the_sites_data():
    from console.app import demo_or_default_data_dir
    from server.config import default_data_dir

    assert demo_or_default_data_dir(False) == default_data_dir()
    assert demo_or_default_data_dir(True) == default_data_dir() / "demo"
