"""Wording of target states and the fields guessed from installer file names."""

from __future__ import annotations

from pathlib import Path

import pytest

from console.packages import guess_package, is_supported
from console.status import TargetState, Tone, describe
from protocol import InstallerType, TargetStatus


def _state(status: str, progress: float = 0, **extra) -> TargetState:
    return TargetState.from_update(
        {"deployment_id": 1, "status": status, "progress": progress, **extra}
    )


@pytest.mark.parametrize(
    ("state", "online", "text", "tone"),
    [
        (_state("pending"), False, "waiting for agent", Tone.WAITING),
        (_state("in_progress", 20), True, "downloading 20%", Tone.ACTIVE),
        (_state("in_progress", 75), True, "installing 75%", Tone.ACTIVE),
        (
            _state("in_progress", 10, agent_status="installing"),
            True,
            "installing 10%",
            Tone.ACTIVE,
        ),
        (_state("success", 100), True, "success", Tone.SUCCESS),
        (_state("failed", 60, exit_code=1603), True, "failed 1603", Tone.FAILED),
        (
            _state("success", 100, exit_code=3010, reboot_required=True),
            True,
            "reboot required",
            Tone.WARNING,
        ),
        (_state("cancelled"), True, "cancelled", Tone.IDLE),
    ],
    ids=[
        "waiting",
        "downloading",
        "installing",
        "agent-says-installing",
        "success",
        "failed",
        "reboot",
        "cancelled",
    ],
)
def test_target_state_reads_as_a_technician_expects(state, online, text, tone):
    assert describe(state, online=online) == (text, tone)


def test_a_later_update_keeps_the_exit_code_it_left_out():
    failed = _state("failed", 60, exit_code=1603)

    merged = failed.merged(_state("failed", 60))

    assert merged.exit_code == 1603
    assert merged.status is TargetStatus.FAILED


@pytest.mark.parametrize(
    ("file_name", "name", "version", "installer_type", "args"),
    [
        ("7z2301-x64.msi", "7z", "2301", InstallerType.MSI, ""),
        ("Foo Setup 1.2.3.exe", "Foo", "1.2.3", InstallerType.EXE, "/S"),
        ("node-v20.11.0-x64.msi", "node", "20.11.0", InstallerType.MSI, ""),
        ("install-tool.sh", "install tool", "", InstallerType.SCRIPT, ""),
        ("Backup.PS1", "Backup", "", InstallerType.SCRIPT, ""),
        ("portable_app_2.0.zip", "portable app", "2.0", InstallerType.ZIP, ""),
    ],
)
def test_file_name_prefills_the_package(file_name, name, version, installer_type, args):
    guess = guess_package(Path(file_name))

    assert (guess.name, guess.version) == (name, version)
    assert (guess.installer_type, guess.install_args) == (installer_type, args)


def test_files_that_are_not_installers_are_refused():
    assert not is_supported(Path("readme.txt"))
    with pytest.raises(ValueError, match="not an installer"):
        guess_package(Path("readme.txt"))
