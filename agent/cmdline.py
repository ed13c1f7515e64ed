"""Building installer command lines that reach the installer intact.

Windows programs parse their own command line, and msiexec wants public properties
written as `PROP="value with spaces"`. So `install_args` is treated as Windows text:
it is split into raw tokens (quotes kept, `""` inside quotes is a literal quote) and
the tokens are passed on verbatim on Windows. `shlex` in non-POSIX mode cannot do
this: it splits `PROP="a b"` at the space because the quote is mid-word.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path, PurePath


class CommandLineError(ValueError):
    """`install_args` that cannot be split (an unterminated quote)."""


def split_windows_args(text: str) -> list[str]:
    """Split Windows-style arguments into raw tokens, keeping their quotes.

    `a "b c" PROP="x y"` -> `['a', '"b c"', 'PROP="x y"']`.
    """
    tokens: list[str] = []
    current: list[str] = []
    in_quotes = False
    started = False
    i = 0
    while i < len(text):
        char = text[i]
        if char == '"':
            started = True
            if in_quotes and text[i + 1 : i + 2] == '"':
                current.append('""')
                i += 2
                continue
            in_quotes = not in_quotes
            current.append(char)
        elif char in " \t\r\n" and not in_quotes:
            if started:
                tokens.append("".join(current))
                current, started = [], False
        else:
            started = True
            current.append(char)
        i += 1
    if in_quotes:
        raise CommandLineError(f"unterminated quote in installer arguments: {text!r}")
    if started:
        tokens.append("".join(current))
    return tokens


def unquote_windows_token(token: str) -> str:
    """The value a Windows program sees for one raw token: quotes removed.

    `PROP="a b"` becomes `PROP=a b`; inside quotes a doubled quote is one quote.
    """
    out: list[str] = []
    in_quotes = False
    i = 0
    while i < len(token):
        char = token[i]
        if char == '"':
            if in_quotes and token[i + 1 : i + 2] == '"':
                out.append('"')
                i += 2
                continue
            in_quotes = not in_quotes
        else:
            out.append(char)
        i += 1
    return "".join(out)


def split_posix_args(text: str) -> list[str]:
    """Split arguments for a POSIX program the way /bin/sh would."""
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise CommandLineError(f"cannot split installer arguments: {exc}") from None


def windows_command_line(argv: Sequence[str], raw_tail: Sequence[str] = ()) -> str:
    """A Windows command line: `argv` quoted as the C runtime expects, then the
    raw tokens of `install_args` appended verbatim (they are already Windows text)."""
    line = subprocess.list2cmdline(list(argv))
    return " ".join([line, *raw_tail]) if raw_tail else line


def wine_path(path: Path) -> str:
    """The Windows name of a local file under Wine (drive Z: is the root `/`)."""
    return "Z:" + str(path.resolve()).replace("/", "\\")


def is_wine_launcher(launcher: Sequence[str]) -> bool:
    """True when the MSI launcher runs msiexec through Wine (`wine msiexec`)."""
    return bool(launcher) and PurePath(launcher[0]).name.startswith("wine")


def msi_arguments(msi: str, log: str) -> list[str]:
    """The fixed part of a silent MSI install: `/i <msi> /qn /norestart /l*v <log>`."""
    return ["/i", msi, "/qn", "/norestart", "/l*v", log]


def wine_msi_argv(
    launcher: Sequence[str],
    msi: Path,
    log: Path,
    rc_file: Path,
    raw_args: Sequence[str],
) -> list[str]:
    """argv that runs msiexec through Wine and keeps its full exit code.

    Wine hands a Windows exit code to Linux truncated to 8 bits (1603 arrives as 67),
    so msiexec runs inside Wine's `cmd`, which sees the full code and writes
    `%ERRORLEVEL%` to `rc_file`. Wine quotes each argv element that has a space, and
    Wine's msiexec re-quotes property values with spaces, so `PROP="a b"` is passed
    as the element `PROP=a b`.
    """
    # TODO(agent): a value holding cmd metacharacters (& | < > ^ %) without a space
    # is not quoted by Wine and would be read by cmd; escape them when one needs it.
    wine, *rest = launcher
    return [
        wine,
        "cmd",
        "/c",
        *rest,
        *msi_arguments(wine_path(msi), wine_path(log)),
        *(unquote_windows_token(token) for token in raw_args),
        "&",
        "echo",
        "%ERRORLEVEL%",
        ">",
        wine_path(rc_file),
    ]


SCRIPT_RUNNERS_WINDOWS = {
    ".ps1": ["powershell", "-NoProfile", "-ExecutionPolicy", "Bypass", "-File"],
    ".bat": ["cmd", "/c"],
    ".cmd": ["cmd", "/c"],
}
SCRIPT_RUNNERS_POSIX = {".sh": ["/bin/sh"]}


def script_runner(path: Path, *, windows: bool) -> list[str] | None:
    """The interpreter prefix for a script, or None if this platform cannot run it."""
    table = SCRIPT_RUNNERS_WINDOWS if windows else SCRIPT_RUNNERS_POSIX
    return table.get(path.suffix.lower())
