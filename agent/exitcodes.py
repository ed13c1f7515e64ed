"""What an installer's exit code means: the one place where the rules live.

Windows installers speak 32-bit Windows error codes (DESIGN.md, "Installer results");
native programs on Linux and macOS hand on only 8 bits, so there only 0 is success.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"
    FAILED = "failed"


SUCCESS_CODES = frozenset({0, 1707})
REBOOT_CODES = frozenset({3010, 1641})
ANOTHER_INSTALL_RUNNING = 1618

_KNOWN = {
    1602: "cancelled by the user",
    1603: "fatal error during installation",
    1618: "another installation is already in progress",
    1619: "the installation package could not be opened",
    1620: "the installation package could not be opened (invalid package)",
    1625: "the installation is forbidden by system policy",
    1627: "function failed during execution",
    1638: "another version of this product is already installed",
    1639: "invalid command line argument",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reboot_required: bool
    message: str


def interpret_exit_code(code: int, *, windows_codes: bool) -> Verdict:
    """Map an installer's exit code to success, retry or failure.

    Args:
        code: the exit code; negative means killed by that signal (POSIX).
        windows_codes: True where the code is a full Windows code (on Windows, or
            msiexec run through Wine with the code recovered); False for native
            programs on Linux/macOS, where only 0 is success.
    """
    if code < 0:
        return Verdict(Outcome.FAILED, False, f"killed by signal {-code}")
    if not windows_codes:
        if code == 0:
            return Verdict(Outcome.SUCCESS, False, "exit code 0")
        return Verdict(Outcome.FAILED, False, f"failed with exit code {code}")

    if code in SUCCESS_CODES:
        return Verdict(Outcome.SUCCESS, False, f"exit code {code}")
    if code in REBOOT_CODES:
        return Verdict(
            Outcome.SUCCESS, True, f"exit code {code}: succeeded, reboot required"
        )
    if code == ANOTHER_INSTALL_RUNNING:
        return Verdict(Outcome.RETRY, False, f"exit code {code}: {_KNOWN[code]}")
    meaning = _KNOWN.get(code)
    text = f"failed with exit code {code}"
    return Verdict(Outcome.FAILED, False, f"{text}: {meaning}" if meaning else text)
