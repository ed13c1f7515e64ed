"""Installing one verified package file by its `installer_type`.

Every backend ends in a `PackageResult`: success (perhaps with a reboot required) or a
failure whose message says why. Blocking work (zip extraction) runs in an executor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from agent import cmdline
from agent.config import AgentConfig
from agent.exitcodes import Outcome, interpret_exit_code
from agent.process import read_tail, run_process
from protocol import InstallerType, SoftwareItem

log = logging.getLogger(__name__)

CANCELLED_MESSAGE = "cancelled by technician"


@dataclass(frozen=True, slots=True)
class PackageResult:
    ok: bool
    message: str
    exit_code: int | None = None
    reboot_required: bool = False
    log_tail: str | None = None
    cancelled: bool = False


class InstallError(Exception):
    """A package that cannot be installed here; `str()` is for the technician."""


def safe_name(name: str) -> str:
    """A file or folder name that cannot climb out of its folder."""
    base = PureWindowsPath(PurePosixPath(name).name).name
    base = re.sub(r'[<>:"|?*\x00-\x1f]', "_", base).strip(" .")
    return base or "package"


def _zip_target(root: Path, item: SoftwareItem) -> Path:
    wanted = cmdline.split_windows_args(item.install_args)
    folder = cmdline.unquote_windows_token(wanted[0]) if wanted else item.name
    rel = PurePosixPath(folder.replace("\\", "/"))
    if rel.is_absolute() or PureWindowsPath(folder).drive or ".." in rel.parts:
        raise InstallError(
            f"zip target folder must stay inside the install root: {folder}"
        )
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()) or target == root.resolve():
        raise InstallError(
            f"zip target folder must stay inside the install root: {folder}"
        )
    return target


def extract_zip(archive: Path, target: Path) -> int:
    """Extract `archive` into `target`, refusing the whole archive if any entry would
    land outside it ("zip slip"). Returns the number of files. Blocking."""
    with zipfile.ZipFile(archive) as zf:
        base = target.resolve()
        for info in zf.infolist():
            name = info.filename.replace("\\", "/")
            dest = (base / name).resolve()
            if (
                name.startswith("/")
                or PureWindowsPath(info.filename).drive
                or not dest.is_relative_to(base)
            ):
                raise InstallError(
                    f"refused: the archive entry {info.filename!r} would be written "
                    "outside the target folder"
                )
        target.mkdir(parents=True, exist_ok=True)
        zf.extractall(target)
        return sum(1 for info in zf.infolist() if not info.is_dir())


class Installer:
    """Runs package files for one agent configuration."""

    def __init__(self, config: AgentConfig) -> None:
        self._config = config

    def _env(self, item: SoftwareItem) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self._config.extra_env)
        env["DEPLOY_INSTALL_ROOT"] = str(self._config.install_root)
        env["DEPLOY_SOFTWARE_NAME"] = item.name
        env["DEPLOY_SOFTWARE_VERSION"] = item.version
        return env

    async def install(
        self,
        item: SoftwareItem,
        file: Path,
        *,
        cancel: asyncio.Event,
        on_retry: Callable[[str], None],
    ) -> PackageResult:
        """Install `file` (already verified) as `item` says; never raises for the
        installer's own failures, only reports them."""
        try:
            if item.installer_type is InstallerType.ZIP:
                return await self._install_zip(item, file)
            return await self._run_with_retries(item, file, cancel, on_retry)
        except (InstallError, cmdline.CommandLineError) as exc:
            return PackageResult(False, str(exc))
        except OSError as exc:
            return PackageResult(False, f"cannot start the installer: {exc}")

    async def _install_zip(self, item: SoftwareItem, file: Path) -> PackageResult:
        root = self._config.install_root
        root.mkdir(parents=True, exist_ok=True)
        target = _zip_target(root, item)
        loop = asyncio.get_running_loop()
        try:
            count = await loop.run_in_executor(None, extract_zip, file, target)
        except zipfile.BadZipFile as exc:
            return PackageResult(False, f"not a valid zip archive: {exc}")
        return PackageResult(True, f"extracted {count} files to {target}")

    async def _run_with_retries(
        self,
        item: SoftwareItem,
        file: Path,
        cancel: asyncio.Event,
        on_retry: Callable[[str], None],
    ) -> PackageResult:
        delays = self._config.retry_1618_delays_s
        attempt = 0
        while True:
            result, retry = await self._run_once(item, file, cancel)
            if not retry:
                return result
            if attempt >= len(delays):
                return PackageResult(
                    False,
                    f"{result.message}; gave up after {attempt + 1} attempts",
                    exit_code=result.exit_code,
                    log_tail=result.log_tail,
                )
            delay = delays[attempt]
            attempt += 1
            message = (
                f"another installation is in progress (exit code 1618); retrying in "
                f"{delay:g} s (attempt {attempt + 1} of {len(delays) + 1})"
            )
            log.info("%s: %s", item.name, message)
            on_retry(message)
            try:
                await asyncio.wait_for(cancel.wait(), timeout=delay)
            except TimeoutError:
                continue
            return PackageResult(False, CANCELLED_MESSAGE, cancelled=True)

    async def _run_once(
        self, item: SoftwareItem, file: Path, cancel: asyncio.Event
    ) -> tuple[PackageResult, bool]:
        work = self._config.work_dir / file.parent.name
        work.mkdir(parents=True, exist_ok=True)
        output = work / "output.txt"
        msi_log = work / "msiexec.log"
        rc_file = work / "exitcode.txt"
        rc_file.unlink(missing_ok=True)
        msi_log.unlink(missing_ok=True)
        command, windows_codes, via_wine = self._command(item, file, msi_log, rc_file)

        log.info("installing %s %s from %s", item.name, item.version, file.name)
        result = await run_process(
            command,
            output=output,
            timeout_s=item.timeout_s,
            cancel=cancel,
            cwd=file.parent,
            env=self._env(item),
        )
        loop = asyncio.get_running_loop()
        tail_source = msi_log if item.installer_type is InstallerType.MSI else output
        tail = await loop.run_in_executor(None, read_tail, tail_source)
        if item.installer_type is InstallerType.MSI and not tail:
            tail = await loop.run_in_executor(None, read_tail, output)

        if result.cancelled:
            return PackageResult(False, CANCELLED_MESSAGE, cancelled=True), False
        if result.timed_out:
            message = f"timed out after {item.timeout_s} s"
            return PackageResult(False, message, log_tail=tail or None), False

        code = result.exit_code
        assert code is not None
        if via_wine:
            code = await loop.run_in_executor(None, _read_wine_exit_code, rc_file)
            if code is None:
                return PackageResult(
                    False,
                    "msiexec ended but its exit code could not be read",
                    log_tail=tail or None,
                ), False
        verdict = interpret_exit_code(code, windows_codes=windows_codes)
        if verdict.outcome is Outcome.RETRY:
            return PackageResult(False, verdict.message, exit_code=code), True
        ok = verdict.outcome is Outcome.SUCCESS
        return PackageResult(
            ok,
            verdict.message,
            exit_code=code,
            reboot_required=verdict.reboot_required,
            log_tail=None if ok else (tail or None),
        ), False

    def _command(
        self, item: SoftwareItem, file: Path, msi_log: Path, rc_file: Path
    ) -> tuple[list[str] | str, bool, bool]:
        """(command, exit codes are full Windows codes, runs through Wine)."""
        windows = self._config.windows
        kind = item.installer_type
        if kind is InstallerType.MSI:
            launcher = self._config.msiexec
            if not launcher:
                raise InstallError(
                    "no Windows Installer on this device (set --msiexec, e.g. "
                    "'wine msiexec', to install MSI packages here)"
                )
            raw = cmdline.split_windows_args(item.install_args)
            if cmdline.is_wine_launcher(launcher):
                argv = cmdline.wine_msi_argv(launcher, file, msi_log, rc_file, raw)
                return argv, True, True
            fixed = cmdline.msi_arguments(str(file), str(msi_log))
            if windows:  # pragma: no cover - Windows only
                line = cmdline.windows_command_line([*launcher, *fixed], raw)
                return line, True, False
            args = [cmdline.unquote_windows_token(t) for t in raw]
            return [*launcher, *fixed, *args], False, False
        if kind is InstallerType.EXE:
            if windows:  # pragma: no cover - Windows only
                raw = cmdline.split_windows_args(item.install_args)
                return cmdline.windows_command_line([str(file)], raw), True, False
            file.chmod(file.stat().st_mode | 0o100)
            args = cmdline.split_posix_args(item.install_args)
            return [str(file), *args], False, False
        if kind is InstallerType.SCRIPT:
            runner = cmdline.script_runner(file, windows=windows)
            if runner is None:
                platform = "Windows" if windows else "this system"
                raise InstallError(
                    f"cannot run {file.suffix or 'extensionless'} scripts on {platform}"
                )
            if windows:  # pragma: no cover - Windows only
                raw = cmdline.split_windows_args(item.install_args)
                return (
                    cmdline.windows_command_line([*runner, str(file)], raw),
                    True,
                    False,
                )
            args = cmdline.split_posix_args(item.install_args)
            return [*runner, str(file), *args], False, False
        raise InstallError(f"unknown installer type {kind}")  # pragma: no cover


def _read_wine_exit_code(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
        return int(text)
    except (FileNotFoundError, ValueError):
        return None
