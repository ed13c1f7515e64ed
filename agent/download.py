"""Downloading a package file: streamed, resumed with Range, checked before use.

The file grows as `<sha256>.part` in the downloads folder; only after its size and
sha256 match is it renamed into place. A file that does not match is deleted and
never run.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
WRITE_BATCH = 1024 * 1024
PROGRESS_INTERVAL_S = 0.3


class DownloadError(Exception):
    """The package could not be downloaded; `str()` is meant for the technician."""


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _already_there(dest: Path, size: int) -> bool:
    dest.parent.mkdir(parents=True, exist_ok=True)
    return dest.exists() and dest.stat().st_size == size


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


async def download_file(
    session: aiohttp.ClientSession,
    url: str,
    *,
    token: str,
    dest: Path,
    sha256: str,
    size: int,
    name: str,
    on_progress: Callable[[float], None] | None = None,
    attempts: int = 8,
    backoff_s: float = 1.0,
) -> Path:
    """Download `url` to `dest`, resuming after dropped connections.

    `on_progress(fraction)` is called at most every ~0.3 s and once at the end.
    Returns `dest`; raises `DownloadError` with a clear message on failure.
    """
    loop = asyncio.get_running_loop()
    if await loop.run_in_executor(None, _already_there, dest, size):
        log.debug("package %s already downloaded", name)
        return dest
    part = dest.with_name(dest.name + ".part")
    last_report = 0.0

    def report(done: int, *, force: bool = False) -> None:
        nonlocal last_report
        now = time.monotonic()
        if on_progress and (force or now - last_report >= PROGRESS_INTERVAL_S):
            last_report = now
            on_progress(min(1.0, done / size) if size else 1.0)

    failures = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have == size:
            break
        try:
            await _fetch_range(session, url, token, part, have, report, loop)
        except DownloadError:
            raise
        except OSError as exc:
            # TODO(agent): no test fills a disk yet (needs a tiny mounted tmpfs).
            if exc.errno == errno.ENOSPC:
                part.unlink(missing_ok=True)
                raise DownloadError(
                    f"disk full on this device while downloading {name} "
                    f"({size} bytes needed)"
                ) from None
            if isinstance(exc, aiohttp.ClientError | ConnectionError):
                failures = await _back_off(
                    name, url, exc, failures, attempts, backoff_s
                )
                continue
            raise DownloadError(f"cannot write {name}: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures = await _back_off(name, url, exc, failures, attempts, backoff_s)
            continue
        new_have = part.stat().st_size if part.exists() else 0
        if new_have < size and new_have == have:
            failures = await _back_off(
                name, url, "no data received", failures, attempts, backoff_s
            )

    report(size, force=True)
    actual = await loop.run_in_executor(None, _sha256_of, part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{name}: downloaded file does not match its sha256 "
            f"(expected {sha256[:12]}…, got {actual[:12]}…); deleted, not run"
        )
    part.replace(dest)
    return dest


async def _back_off(
    name: str, url: str, reason: object, failures: int, attempts: int, base: float
) -> int:
    failures += 1
    if failures >= attempts:
        raise DownloadError(
            f"download of {name} failed after {failures} attempts: {reason}"
        )
    delay = min(30.0, base * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
    log.info(
        "download of %s interrupted (%s); resuming in %.1f s [%s]",
        name,
        reason,
        delay,
        url,
    )
    await asyncio.sleep(delay)
    return failures


async def _fetch_range(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    part: Path,
    have: int,
    report: Callable[..., None],
    loop: asyncio.AbstractEventLoop,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    if have:
        headers["Range"] = f"bytes={have}-"
    async with session.get(url, headers=headers) as resp:
        if resp.status in (401, 403):
            raise DownloadError(
                f"the server refused the download ({resp.status}): check the "
                "enrollment token"
            )
        if resp.status == 404:
            raise DownloadError("the package file is not on the server (404)")
        if resp.status == 416:
            await loop.run_in_executor(None, _remove, part)
            return
        if resp.status not in (200, 206):
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=resp.reason or ""
            )
        if resp.status == 200 and have:
            log.debug("server ignored Range; starting %s over", url)
            await loop.run_in_executor(None, _remove, part)
            have = 0
        buffer = bytearray()
        done = have
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                buffer += chunk
                done += len(chunk)
                if len(buffer) >= WRITE_BATCH:
                    await loop.run_in_executor(None, _append, part, bytes(buffer))
                    buffer.clear()
                report(done)
        finally:
            # Keep what arrived before a dropped connection; the next Range goes on.
            if buffer:
                await loop.run_in_executor(None, _append, part, bytes(buffer))
