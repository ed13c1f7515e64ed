"""The package store: installer files in `data_dir/packages/<sha256>`.

Copying and hashing run in an executor thread, never on the event loop (a 2 GB
installer takes seconds). A file arrives under a temporary name and is renamed into
place only when complete, so a half-written package is never served. Identical
files are stored once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from server.errors import DiskFullError, InvalidRequestError

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
INCOMING_PREFIX = ".incoming-"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[float], None]


class PackageStore:
    """Content-addressed installer files. Public coroutines run on the loop."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def prepare(self) -> None:
        """Create the folder and drop leftovers of interrupted copies (blocking)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.glob(INCOMING_PREFIX + "*"):
            with contextlib.suppress(OSError):
                leftover.unlink()

    def path_for(self, sha256: str) -> Path | None:
        """The stored file for `sha256`, or None if the id is malformed or unknown."""
        if not _SHA256.match(sha256):
            return None
        path = self.root / sha256
        return path if path.is_file() else None

    def incoming_file(self) -> tuple[int, Path]:
        """A new temporary file inside the store (same file system as the blobs)."""
        fd, name = tempfile.mkstemp(prefix=INCOMING_PREFIX, dir=self.root)
        return fd, Path(name)

    async def add(
        self, source: Path, *, move: bool = False, progress: Progress | None = None
    ) -> tuple[str, int]:
        """Store `source`; return `(sha256, size)`.

        With `move=True` the source is a temporary file of ours (an upload) that is
        hashed and renamed instead of copied. `progress(fraction)` is called on the
        loop. Raises `DiskFullError` or `InvalidRequestError` (unreadable source);
        no partial file is left behind either way.
        """
        loop = asyncio.get_running_loop()

        last = 0.0

        def report(fraction: float) -> None:  # runs in the worker thread
            nonlocal last
            if progress is not None and fraction - last >= 0.01:
                last = fraction
                loop.call_soon_threadsafe(progress, min(fraction, 1.0))

        work = self._adopt if move else self._copy
        sha256, size = await loop.run_in_executor(None, work, source, report)
        if progress is not None:
            progress(1.0)
        return sha256, size

    def _copy(self, source: Path, report: Progress) -> tuple[str, int]:
        try:
            total = source.stat().st_size
            src = source.open("rb")
        except OSError as exc:
            raise InvalidRequestError(
                f"Cannot read the installer {source}: {exc.strerror}"
            ) from exc

        digest = hashlib.sha256()
        done = 0
        fd, tmp = self.incoming_file()
        try:
            with src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    dst.write(chunk)
                    done += len(chunk)
                    report(done / total if total else 1.0)
            return self._place(tmp, digest.hexdigest()), done
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _storage_error(exc, source) from exc

    def _adopt(self, tmp: Path, report: Progress) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        try:
            total = tmp.stat().st_size
            with tmp.open("rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    report(size / total if total else 1.0)
            return self._place(tmp, digest.hexdigest()), size
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _storage_error(exc, tmp) from exc

    def _place(self, tmp: Path, sha256: str) -> str:
        """Move the just-hashed file into place, also over an existing copy.

        The new file is known good (it was hashed on the way in); a stored copy
        may have been damaged on disk since, so adding the same installer again
        repairs the store. An agent mid-download keeps reading the old file (POSIX
        rename semantics); where the old file is held open (Windows), it stays.
        """
        final = self.root / sha256
        try:
            os.replace(tmp, final)
        except PermissionError:
            tmp.unlink()
            log.warning("package %s is in use; kept the stored copy", sha256)
        else:
            log.debug("package %s stored", sha256)
        return sha256


def _storage_error(exc: OSError, source: Path) -> Exception:
    if exc.errno == errno.ENOSPC:
        return DiskFullError(
            "Not enough disk space in the data folder to store the installer."
        )
    return InvalidRequestError(f"Cannot store the installer {source}: {exc.strerror}")
