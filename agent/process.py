"""Running one installer: no stdin, output to a file, timeout, cancel, tree kill.

Output goes to a file rather than a pipe: an installer that leaves a background child
holding the pipe open cannot make the agent wait forever, and the technician finds the
whole output on the device. Only a bounded tail is read back and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

TAIL_BYTES = 3000


@dataclass(frozen=True, slots=True)
class ProcessResult:
    exit_code: int | None
    """None when the process was killed by us (timeout or cancel)."""
    timed_out: bool = False
    cancelled: bool = False


def kill_tree(pid: int) -> None:
    """Kill a process and every process it started (children first)."""
    try:
        parent = psutil.Process(pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        family = []
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    if sys.platform != "win32":
        # Children that were re-parented away are still in the session we created.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    psutil.wait_procs(family, timeout=5)


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a text file, decoded without ever failing.

    UTF-16 (with a BOM, or detected by its NUL bytes, as msiexec may write) and UTF-8
    are recognised; anything else is decoded as UTF-8 with replacement characters.
    Blocking: call it in an executor.
    """
    try:
        with path.open("rb") as f:
            head = f.read(2)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - limit))
            data = f.read()
    except FileNotFoundError:
        return ""
    utf16 = head in (b"\xff\xfe", b"\xfe\xff") or (
        len(data) >= 4 and data[1::2].count(0) > len(data) // 4
    )
    if utf16:
        if size > limit and (size - limit) % 2:
            data = data[1:]
        encoding = "utf-16-be" if head == b"\xfe\xff" else "utf-16-le"
        text = data.decode(encoding, errors="replace").lstrip("\ufeff")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n").strip()


async def run_process(
    command: list[str] | str,
    *,
    output: Path,
    timeout_s: float,
    cancel: asyncio.Event,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> ProcessResult:
    """Run `command` to its end, its timeout, or until `cancel` is set.

    `command` is an argv list, or on Windows a ready command line (msiexec parses its
    own). stdin is closed; stdout and stderr go to `output`. On timeout or cancel the
    whole process tree is killed.
    """
    loop = asyncio.get_running_loop()
    with output.open("wb") as out:
        # TODO(agent): the Windows branch (raw command line, Popen) has not run on a
        # real Windows machine yet; only its command-line building is unit tested.
        if isinstance(command, str):  # pragma: no cover - Windows only
            popen = functools.partial(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
            )
            proc = _WindowsProcess(await loop.run_in_executor(None, popen))
        else:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=sys.platform != "win32",
            )
    log.debug("started pid %s: %s", proc.pid, command)

    waiter = asyncio.ensure_future(proc.wait())
    cancelled = asyncio.ensure_future(cancel.wait())
    try:
        done, _ = await asyncio.wait(
            {waiter, cancelled},
            timeout=timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        cancelled.cancel()
        if not waiter.done():
            await loop.run_in_executor(None, kill_tree, proc.pid)
            await waiter
    if waiter in done:
        return ProcessResult(exit_code=waiter.result())
    if cancel.is_set():
        return ProcessResult(exit_code=None, cancelled=True)
    return ProcessResult(exit_code=None, timed_out=True)


class _WindowsProcess:  # pragma: no cover - Windows only
    """A Popen started from a raw command line, awaited in an executor."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid

    async def wait(self) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._popen.wait)
