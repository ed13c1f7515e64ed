"""The frozen bundles run on a machine without Python (issue 6).

One module-scoped build with the real `build_installer.py` (PyInstaller, a few
minutes on two cores); every frozen program then runs in a minimal environment
that has no virtual environment, no PYTHONPATH and no display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "build_installer.py"
BUILD_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 300

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="the bundles are built and run here on Linux"
)


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)["project"]["version"]


def minimal_env(home: Path) -> dict[str, str]:
    """What a device without Python offers: system folders, a home, no display."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "TMPDIR": str(home),
        "LANG": "C.UTF-8",
        "QT_QPA_PLATFORM": "offscreen",
    }


def run_frozen(argv: list[str | Path], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(part) for part in argv],
        env=minimal_env(home),
        cwd=home,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both bundles and their tarballs, made by the one build command."""
    out = tmp_path_factory.mktemp("packaging")
    result = subprocess.run(
        [
            sys.executable,
            str(BUILD_SCRIPT),
            "--dist",
            str(out / "dist"),
            "--work",
            str(out / "build"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    print(result.stdout[-2000:])
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return out / "dist"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty home folder: nothing of the developer's leaks into the run."""
    return tmp_path


# --- the build command ---------------------------------------------------------


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--help"],
        capture_output=True,
        text=True,
        check=True,
    )

    for option in (
        "--only",
        "--clean",
        "--dist",
        "--work",
        "--jobs",
        "--skip-setup",
        "--iscc",
        "--self-test",
    ):
        assert option in result.stdout


def test_self_test_of_a_single_bundle_is_refused_before_building() -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--only", "agent", "--self-test"],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "--self-test runs both programs" in result.stderr


# --- the frozen programs -------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)
@linux_only
def test_frozen_agent_reports_the_project_version(dist: Path, home: Path) -> None:
    result = run_frozen([dist / "deploy-agent" / "deploy-agent", "--version"], home)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == project_version()


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)
@linux_only
def test_frozen_console_self_test_deploys_to_the_frozen_agent(
    dist: Path, home: Path
) -> None:
    agent = dist / "deploy-agent" / "deploy-agent"

    result = run_frozen(
        [
            dist / "deploy-console" / "deploy-console",
            "--self-test",
            "--data-dir",
            home / "console-data",
            "--agent-cmd",
            str(agent),
        ],
        home,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "self-test: agent registered as device" in output
    assert "self-test: passed" in output


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)
@linux_only
def test_frozen_console_runs_its_bundled_agent_for_the_demo(
    dist: Path, home: Path
) -> None:
    # The demo fleet starts agents as `[sys.executable, "-m", "agent", ...]`.
    result = run_frozen(
        [dist / "deploy-console" / "deploy-console", "-m", "agent", "--version"], home
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == project_version()


# --- what the tarballs carry ---------------------------------------------------


def _tarball(dist: Path, name: str) -> Path:
    matches = sorted(dist.glob(f"{name}-{project_version()}-linux-*.tar.gz"))
    assert len(matches) == 1, sorted(p.name for p in dist.iterdir())
    return matches[0]


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)
@linux_only
def test_agent_tarball_holds_the_program_and_its_systemd_unit(dist: Path) -> None:
    with tarfile.open(_tarball(dist, "deploy-agent")) as tar:
        program = tar.getmember("deploy-agent/deploy-agent")
        unit = tar.getmember("deploy-agent/deploy-agent.service")

    assert program.mode & 0o111, "the agent must stay executable after unpacking"
    assert unit.isfile()


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)
@linux_only
def test_console_tarball_holds_migrations_and_sample_sources(dist: Path) -> None:
    with tarfile.open(_tarball(dist, "deploy-console")) as tar:
        names = set(tar.getnames())

    internal = "deploy-console/_internal"
    assert f"{internal}/server/migrations/env.py" in names
    assert any(
        name.startswith(f"{internal}/server/migrations/versions/0001") for name in names
    )
    assert f"{internal}/resources/samples/build.py" in names
    assert f"{internal}/PySide6/Qt/plugins/platforms/libqoffscreen.so" in names


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S)
@linux_only
@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)
def test_systemd_unit_is_valid_for_the_unpacked_agent(
    dist: Path, tmp_path: Path
) -> None:
    # systemd reads the unit as installed; only the program's path is made to
    # point at the bundle built here instead of /opt.
    unit_text = (dist / "deploy-agent" / "deploy-agent.service").read_text()
    unit = tmp_path / "deploy-agent.service"
    unit.write_text(
        unit_text.replace(
            "/opt/deploy-agent/deploy-agent",
            str(dist / "deploy-agent" / "deploy-agent"),
        )
    )

    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"},
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
