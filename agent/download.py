"""Downloading a package file: streamed, resumed with Range, checked before use.

The file grows as `<name>.part` next to its final place; only after its size and
sha256 match is it renamed into place. A file that does not match is deleted and
never run. A copy already in place from an earlier job is checked again (size and
sha256) before it is handed out, so a copy changed on disk is fetched again.

Every way an attempt can fail — dropped connection, server error, a file of the
wrong size on the server, a resume the server refuses, a sha256 mismatch — counts
towards the same bounded number of attempts, with back-off in between; only a
refusal (401/403), a missing file (404) or a full disk ends the download at once.
Error messages do not name the package: the caller puts the name in front.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
WRITE_BATCH = 1024 * 1024
PROGRESS_INTERVAL_S = 0.3

_CONTENT_RANGE = re.compile(r"bytes\s+(?:\d+-\d+|\*)/(\d+|\*)")


class DownloadError(Exception):
    """The package could not be downloaded; `str()` is meant for the technician."""


class _AttemptFailed(Exception):
    """One attempt failed in a way a later attempt may not repeat."""


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def _check_cached(dest: Path, size: int, sha256: str) -> str:
    """'ok' when `dest` has the expected size and sha256, 'missing' when it is not
    there; a copy that does not match is deleted ('deleted'). Blocking: hashes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        actual_size = dest.stat().st_size
    except FileNotFoundError:
        return "missing"
    if actual_size == size and _sha256_of(dest) == sha256:
        return "ok"
    dest.unlink(missing_ok=True)
    return "deleted"


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def _verify_and_place(part: Path, dest: Path, sha256: str) -> str | None:
    """Move a complete `part` to `dest` if its sha256 matches; else delete it and
    return the sha256 it had. Blocking: hashes."""
    part.touch()  # a 0-byte package arrives without a single write
    actual = _sha256_of(part)
    if actual != sha256:
        part.unlink(missing_ok=True)
        return actual
    part.replace(dest)
    return None


def _size_mismatch(sent: int, size: int) -> _AttemptFailed:
    return _AttemptFailed(f"size mismatch: server sent {sent} bytes, expected {size}")


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
    Returns `dest`; raises `DownloadError` with a clear message once `attempts`
    attempts have failed or the server refuses outright.
    """
    loop = asyncio.get_running_loop()
    cached = await loop.run_in_executor(None, _check_cached, dest, size, sha256)
    if cached == "ok":
        log.debug("package %s already downloaded and verified", name)
        return dest
    if cached == "deleted":
        log.info(
            "cached copy of %s does not match its size or sha256; deleted, "
            "downloading it again [%s]",
            name,
            dest,
        )
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
        try:
            await _attempt(session, url, token, part, size, report, loop)
            report(size, force=True)
            actual = await loop.run_in_executor(
                None, _verify_and_place, part, dest, sha256
            )
            if actual is None:
                return dest
            reason: object = (
                f"downloaded file does not match its sha256 (expected "
                f"{sha256[:12]}…, got {actual[:12]}…); deleted, not run"
            )
        except _AttemptFailed as exc:
            reason = exc
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
        except OSError as exc:
            # TODO(agent): no test fills a disk yet (needs a tiny mounted tmpfs).
            if exc.errno == errno.ENOSPC:
                await loop.run_in_executor(None, _remove, part)
                raise DownloadError(
                    f"disk full on this device while downloading ({size} bytes needed)"
                ) from None
            raise DownloadError(f"cannot write the download: {exc}") from None
        failures = await _back_off(name, url, reason, failures, attempts, backoff_s)


async def _back_off(
    name: str, url: str, reason: object, failures: int, attempts: int, base: float
) -> int:
    failures += 1
    if failures >= attempts:
        raise DownloadError(f"download failed after {failures} attempts: {reason}")
    delay = min(30.0, base * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
    log.info(
        "download of %s failed (%s); attempt %d of %d in %.1f s [%s]",
        name,
        reason,
        failures + 1,
        attempts,
        delay,
        url,
    )
    await asyncio.sleep(delay)
    return failures


async def _attempt(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    part: Path,
    size: int,
    report: Callable[..., None],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """One request: returns with `part` holding exactly `size` bytes, or raises."""
    have = await loop.run_in_executor(None, _size_of, part)
    if have > size:  # left by an older agent; nothing of it can be trusted
        await loop.run_in_executor(None, _remove, part)
        have = 0
    if have == size:
        return
    await _fetch_range(session, url, token, part, have, size, report, loop)


def _declared_total(resp: aiohttp.ClientResponse, have: int) -> int | None:
    """The size of the whole file as the response states it, if it does."""
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if match and match.group(1) != "*":
        return int(match.group(1))
    if resp.content_length is None or resp.status not in (200, 206):
        return None
    return resp.content_length + (have if resp.status == 206 else 0)


async def _fetch_range(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    part: Path,
    have: int,
    size: int,
    report: Callable[..., None],
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Fetch from byte `have` on, appending to `part` until it holds `size` bytes.

    A body that ends cleanly short of `size`, runs past it, or declares another
    total is a size mismatch: `part` is deleted so the next attempt starts over.
    """
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
            total = _declared_total(resp, have)
            if total is not None and total != size:
                raise _size_mismatch(total, size)
            raise _AttemptFailed(f"the server refused to resume at byte {have} (416)")
        if resp.status not in (200, 206):
            raise aiohttp.ClientResponseError(
                resp.request_info, (), status=resp.status, message=resp.reason or ""
            )
        if resp.status == 200 and have:
            log.debug("server ignored Range; starting %s over", url)
            await loop.run_in_executor(None, _remove, part)
            have = 0
        total = _declared_total(resp, have)
        if total is not None and total != size:
            await loop.run_in_executor(None, _remove, part)
            raise _size_mismatch(total, size)

        buffer = bytearray()
        done = have
        try:
            async for chunk in resp.content.iter_chunked(CHUNK):
                buffer += chunk
                done += len(chunk)
                if done > size:
                    buffer.clear()
                    await loop.run_in_executor(None, _remove, part)
                    raise _AttemptFailed(
                        f"size mismatch: server sent more than {size} bytes, "
                        f"expected {size}"
                    )
                if len(buffer) >= WRITE_BATCH:
                    await loop.run_in_executor(None, _append, part, bytes(buffer))
                    buffer.clear()
                report(done)
        finally:
            # Keep what arrived before a dropped connection; the next Range goes on.
            if buffer:
                await loop.run_in_executor(None, _append, part, bytes(buffer))
    if done < size:  # the body ended cleanly: that is all the server has
        await loop.run_in_executor(None, _remove, part)
        raise _size_mismatch(done, size)
