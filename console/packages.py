"""What a dropped installer file tells about itself: type, name, version, silent args.

Pure functions, no Qt: the "Add package" dialog uses them to prefill its fields.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from protocol import InstallerType

INSTALLER_TYPES: dict[str, InstallerType] = {
    ".msi": InstallerType.MSI,
    ".exe": InstallerType.EXE,
    ".ps1": InstallerType.SCRIPT,
    ".bat": InstallerType.SCRIPT,
    ".cmd": InstallerType.SCRIPT,
    ".sh": InstallerType.SCRIPT,
    ".zip": InstallerType.ZIP,
}
"""File extensions the library accepts, and the installer type each one means."""

DEFAULT_INSTALL_ARGS: dict[InstallerType, str] = {
    InstallerType.MSI: "",  # the agent runs msiexec /i <file> /qn /norestart itself
    InstallerType.EXE: "/S",  # NSIS convention; Inno Setup wants /VERYSILENT
    InstallerType.SCRIPT: "",
    InstallerType.ZIP: "",
}

_ARCH_TOKENS = re.compile(
    r"[-_. ]?\b(x64|x86|x86_64|amd64|arm64|win64|win32|64-?bit|32-?bit)\b",
    re.IGNORECASE,
)
_NOISE_WORDS = re.compile(r"\b(setup|installer)\b", re.IGNORECASE)
_DOTTED_VERSION = re.compile(r"[-_ ]?v?(\d+(?:\.\d+)+)")
_GLUED_VERSION = re.compile(r"^(.*?[A-Za-z])(\d{3,})$")


@dataclass(frozen=True)
class PackageGuess:
    """Prefilled fields for a package, all editable by the technician."""

    name: str
    version: str
    installer_type: InstallerType
    install_args: str


def is_supported(path: Path) -> bool:
    """True when the library accepts a file with this extension."""
    return path.suffix.lower() in INSTALLER_TYPES


def guess_package(path: Path) -> PackageGuess:
    """Guess a package's fields from its file name.

    "7z2301-x64.msi" gives 7z / 2301, "Foo Setup 1.2.3.exe" gives Foo / 1.2.3,
    "node-v20.11.0-x64.msi" gives node / 20.11.0. Raises ValueError for a file type
    the agents cannot install.
    """
    installer_type = INSTALLER_TYPES.get(path.suffix.lower())
    if installer_type is None:
        raise ValueError(f"{path.name}: not an installer the agents can run")

    stem = _ARCH_TOKENS.sub("", path.stem)
    version = ""
    dotted = _DOTTED_VERSION.search(stem)
    if dotted:
        version = dotted.group(1)
        stem = stem[: dotted.start()] + stem[dotted.end() :]
    stem = _NOISE_WORDS.sub("", stem)
    name = re.sub(r"[-_ ]+", " ", stem).strip()
    if not version:
        glued = _GLUED_VERSION.match(name)
        if glued:
            name, version = glued.group(1), glued.group(2)

    return PackageGuess(
        name=name or path.stem,
        version=version,
        installer_type=installer_type,
        install_args=DEFAULT_INSTALL_ARGS[installer_type],
    )
