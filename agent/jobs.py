"""Jobs: one `install_software` per (deployment, device), run one at a time.

Every job is kept in `state_dir/jobs.json` (written to a temporary file, then
`os.replace`d), so the agent knows after a restart what it was doing:

- a job still `queued` is held until the agent's first successful registration
  (`on_registered`): the technician may have cancelled it while the agent was off;
- a job `running` in its download phase is held the same way, then resumed from
  that download (the `.part` file is kept, nothing of that package was run yet, so
  nothing is installed twice);
- a job `running` in its install phase is reported `failed` with "agent restarted
  during installation; state unknown" (the installer may or may not have finished;
  running it again could install twice, and only the technician can judge);
- a job `done` keeps its final status, re-sent when the server sends the job again;
  only a higher `attempt` (the technician retried it) makes it run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp

from agent.config import AgentConfig
from agent.download import DownloadError, download_file
from agent.installers import CANCELLED_MESSAGE, Installer, PackageResult, safe_name
from protocol import AgentStatus, CancelDeployment, InstallSoftware, SoftwareItem

log = logging.getLogger(__name__)

RESTARTED_MESSAGE = "agent restarted during installation; state unknown"
MAX_DONE_JOBS = 1000

QUEUED, RUNNING, DONE = "queued", "running", "done"
PHASE_DOWNLOAD, PHASE_INSTALL = "download", "install"


@dataclass(slots=True)
class Job:
    deployment_id: int
    device_id: int
    software_list: list[dict[str, Any]]
    attempt: int = 1
    """The server's attempt number: a higher one for the same target is a new run."""
    state: str = QUEUED
    index: int = 0
    """The package being (or next to be) worked on."""
    phase: str = PHASE_DOWNLOAD
    completed: int = 0
    failed: int = 0
    reboot_required: bool = False
    failures: list[str] = field(default_factory=list)
    last_status: dict[str, Any] = field(default_factory=dict)
    reported: bool = False
    """True once the server acknowledged the final status."""
    finished_at: float = 0.0

    @property
    def key(self) -> str:
        return job_key(self.deployment_id, self.device_id)

    @property
    def items(self) -> list[SoftwareItem]:
        return [SoftwareItem.model_validate(s) for s in self.software_list]


def job_key(deployment_id: int, device_id: int) -> str:
    return f"{deployment_id}:{device_id}"


class JobStore:
    """The jobs, kept in one JSON file written atomically."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.jobs: dict[str, Job] = {}

    def load(self) -> None:
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            broken = self._path.with_suffix(".broken")
            log.error(
                "job state %s unreadable (%s); kept as %s", self._path, exc, broken
            )
            with contextlib.suppress(OSError):
                os.replace(self._path, broken)
            return
        for data in raw.get("jobs", []):
            job = Job(**data)
            self.jobs[job.key] = job

    def save(self) -> None:
        done = sorted(
            (j for j in self.jobs.values() if j.state == DONE),
            key=lambda j: j.finished_at,
        )
        for old in done[: max(0, len(done) - MAX_DONE_JOBS)]:
            del self.jobs[old.key]
        tmp = self._path.with_suffix(".tmp")
        payload = {"version": 1, "jobs": [asdict(j) for j in self.jobs.values()]}
        tmp.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self._path)


# (event payload, is final) -> None; the connection decides how to deliver it.
StatusSink = Callable[[dict[str, Any], bool], None]
ProgressSink = Callable[[dict[str, Any]], None]


class JobRunner:
    """Queues jobs and runs them one at a time on a single worker task."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        on_status: StatusSink,
        on_download_progress: ProgressSink,
    ) -> None:
        self._config = config
        self._on_status = on_status
        self._on_download_progress = on_download_progress
        self.store = JobStore(config.state_dir / "jobs.json")
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._installer = Installer(config)
        self._current: str | None = None
        self._cancel = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._held: list[str] = []
        """Jobs from an earlier run, waiting for the first registration."""
        self._registered_once = False

    # --- lifecycle ------------------------------------------------------------

    def recover(self) -> None:
        """Load the job file and settle what an earlier run left behind."""
        self.store.load()
        for job in self.store.jobs.values():
            if job.state == QUEUED:
                self._held.append(job.key)
            elif job.state == RUNNING and job.phase == PHASE_DOWNLOAD:
                log.info(
                    "deployment %s was downloading when the agent stopped; it goes "
                    "on after the server confirms it is still open",
                    job.deployment_id,
                )
                job.state = QUEUED
                self._held.append(job.key)
            elif job.state == RUNNING:
                log.warning("deployment %s: %s", job.deployment_id, RESTARTED_MESSAGE)
                job.failed += 1
                job.failures.append(RESTARTED_MESSAGE)
                self._finish(job, message=RESTARTED_MESSAGE)
        self.store.save()

    async def run(self) -> None:
        """The worker: takes queued jobs one by one, forever."""
        while True:
            key = await self._queue.get()
            job = self.store.jobs.get(key)
            if job is None or job.state != QUEUED:
                if self._queue.empty():
                    self._idle.set()
                continue
            self._idle.clear()
            self._current = key
            self._cancel = asyncio.Event()
            try:
                async with aiohttp.ClientSession() as session:
                    await self._run_job(job, session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "deployment %s: job failed unexpectedly", job.deployment_id
                )
                job.failed += 1
                job.failures.append("internal agent error (see the agent log)")
                self._finish(job, message="internal agent error (see the agent log)")
            finally:
                self._current = None
                if self._queue.empty():
                    self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def queued_keys(self) -> set[str]:
        """The jobs waiting to start; take this before asking to register, and give
        it to `on_registered`, so a job sent after the server's answer is kept."""
        return {k for k, j in self.store.jobs.items() if j.state == QUEUED}

    def on_registered(
        self, open_deployments: Collection[int] | None, candidates: Collection[str]
    ) -> None:
        """The server accepted the registration: settle what waited for it.

        With `open_deployments` (the deployments the server still considers open
        for this device), every job among `candidates` that has not started and whose
        deployment is not open is dropped silently: the server already knows how it
        ended. Without it (an older server) nothing is dropped. Then the jobs held
        since the agent started are queued.
        """
        if open_deployments is not None:
            open_ids = set(open_deployments)
            for key in candidates:
                job = self.store.jobs.get(key)
                if (
                    job is None
                    or job.state != QUEUED
                    or key == self._current
                    or job.deployment_id in open_ids
                ):
                    continue
                del self.store.jobs[key]
                log.info(
                    "job for deployment %s dropped: no longer open on the server",
                    job.deployment_id,
                )
            self.store.save()

        if not self._registered_once:
            self._registered_once = True
            for key in self._held:
                job = self.store.jobs.get(key)
                if job is not None and job.state == QUEUED:
                    self._enqueue(job)
            self._held.clear()

    # --- inbound --------------------------------------------------------------

    def submit(self, order: InstallSoftware) -> None:
        """Take an `install_software`; a job already known is reported, not rerun."""
        key = job_key(order.deployment_id, order.device_id)
        job = self.store.jobs.get(key)
        retry = job is not None and job.state == DONE and order.attempt > job.attempt
        if job is not None and not retry:
            log.info(
                "deployment %s (attempt %s) sent again; it is %s here, reporting it",
                order.deployment_id,
                order.attempt,
                job.state,
            )
            if job.last_status:
                self._on_status(job.last_status, job.state == DONE)
            return

        job = Job(
            deployment_id=order.deployment_id,
            device_id=order.device_id,
            software_list=[s.model_dump(mode="json") for s in order.software_list],
            attempt=order.attempt,
        )
        self.store.jobs[key] = job
        names = ", ".join(s.name for s in order.software_list)
        log.info("deployment %s queued: %s", order.deployment_id, names)
        self._status(job, AgentStatus.IN_PROGRESS, 0, "queued on the device")
        self.store.save()
        self._enqueue(job)

    def cancel(self, order: CancelDeployment) -> None:
        """Drop a queued job or stop the running one; either ends `failed`."""
        key = job_key(order.deployment_id, order.device_id)
        job = self.store.jobs.get(key)
        if job is None:
            log.info(
                "cancel for unknown deployment %s: remembered", order.deployment_id
            )
            job = Job(order.deployment_id, order.device_id, [], reported=True)
            job.state = DONE
            job.finished_at = time.time()
            job.last_status = self._payload(
                job, AgentStatus.FAILED, 0, CANCELLED_MESSAGE
            )
            self.store.jobs[key] = job
            self.store.save()
            return
        if job.state == DONE:
            self._on_status(job.last_status, True)
        elif job.state == QUEUED:
            log.info("deployment %s cancelled while queued", job.deployment_id)
            self._finish(job, message=CANCELLED_MESSAGE, cancelled=True)
        elif self._current == key:
            log.info("deployment %s: cancelling the running job", job.deployment_id)
            self._cancel.set()

    def mark_reported(self, payload: dict[str, Any]) -> None:
        """The server acknowledged this final status: no need to send it again."""
        job = self.store.jobs.get(
            job_key(payload["deployment_id"], payload["device_id"])
        )
        if job is not None and job.state == DONE and not job.reported:
            job.reported = True
            self.store.save()

    def pending_reports(self) -> list[tuple[dict[str, Any], bool]]:
        """What to (re)send after a reconnect: unacknowledged finals, live states."""
        out = []
        for job in self.store.jobs.values():
            if not job.last_status:
                continue
            if job.state == DONE and not job.reported:
                out.append((job.last_status, True))
            elif job.state in (QUEUED, RUNNING):
                out.append((job.last_status, False))
        return out

    # --- the work -------------------------------------------------------------

    def _enqueue(self, job: Job) -> None:
        self._idle.clear()
        self._queue.put_nowait(job.key)

    async def _run_job(self, job: Job, session: aiohttp.ClientSession) -> None:
        items = job.items
        total = len(items)
        job.state = RUNNING
        self.store.save()
        log.info("deployment %s started (%d packages)", job.deployment_id, total)

        for index in range(job.index, total):
            item = items[index]
            job.index, job.phase = index, PHASE_DOWNLOAD
            self.store.save()
            result = await self._do_package(job, session, item, index, total)
            if result.cancelled:
                self._finish(job, message=CANCELLED_MESSAGE, cancelled=True)
                return
            if result.ok:
                job.completed += 1
                job.reboot_required |= result.reboot_required
                log.info(
                    "deployment %s: %s installed (%s)",
                    job.deployment_id,
                    item.name,
                    result.message,
                )
            else:
                job.failed += 1
                job.failures.append(f"{item.name}: {result.message}")
                log.warning(
                    "deployment %s: %s failed: %s",
                    job.deployment_id,
                    item.name,
                    result.message,
                )
            job.index = index + 1
            self._status(
                job,
                AgentStatus.INSTALLING,
                100 * (index + 1) / total,
                f"{item.name}: {result.message}",
                software_name=item.name,
                exit_code=result.exit_code,
                log_tail=result.log_tail,
            )
            self.store.save()
        self._finish(job)

    async def _do_package(
        self,
        job: Job,
        session: aiohttp.ClientSession,
        item: SoftwareItem,
        index: int,
        total: int,
    ) -> PackageResult:
        share = 100 / total

        def on_progress(fraction: float) -> None:
            overall = share * (index + fraction / 2)
            self._on_download_progress(
                {
                    "deployment_id": job.deployment_id,
                    "device_id": job.device_id,
                    "software_name": item.name,
                    "progress": round(100 * fraction, 1),
                    "attempt": job.attempt,
                }
            )
            self._status(
                job,
                AgentStatus.DOWNLOADING,
                overall,
                f"downloading {item.name}",
                software_name=item.name,
            )

        self._status(
            job,
            AgentStatus.DOWNLOADING,
            share * index,
            f"downloading {item.name}",
            software_name=item.name,
        )
        url = _absolute_url(self._config.server_url, item.url)
        dest = self._config.downloads_dir / item.sha256 / safe_name(item.file_name)
        download = asyncio.ensure_future(
            download_file(
                session,
                url,
                token=self._config.token,
                dest=dest,
                sha256=item.sha256,
                size=item.size,
                name=item.name,
                on_progress=on_progress,
                attempts=self._config.download_attempts,
                backoff_s=self._config.download_backoff_s,
            )
        )
        cancelled = asyncio.ensure_future(self._cancel.wait())
        try:
            await asyncio.wait(
                {download, cancelled}, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelled.cancel()
            if not download.done():
                download.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await download
        if self._cancel.is_set():
            return PackageResult(False, CANCELLED_MESSAGE, cancelled=True)
        try:
            file = download.result()
        except DownloadError as exc:
            return PackageResult(False, str(exc))

        job.phase = PHASE_INSTALL
        self.store.save()
        self._status(
            job,
            AgentStatus.INSTALLING,
            share * (index + 0.5),
            f"installing {item.name}",
            software_name=item.name,
        )

        def on_retry(message: str) -> None:
            self._status(
                job,
                AgentStatus.INSTALLING,
                share * (index + 0.5),
                f"{item.name}: {message}",
                software_name=item.name,
                exit_code=1618,
            )

        return await self._installer.install(
            item, file, cancel=self._cancel, on_retry=on_retry
        )

    # --- reporting ------------------------------------------------------------

    def _payload(
        self, job: Job, status: AgentStatus, progress: float, message: str, **extra: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "deployment_id": job.deployment_id,
            "device_id": job.device_id,
            "status": status.value,
            "progress": round(min(100.0, max(0.0, progress)), 1),
            "message": message[:4000],
            "completed": job.completed,
            "failed": job.failed,
            "reboot_required": job.reboot_required,
            "attempt": job.attempt,
        }
        for name, value in extra.items():
            if value is not None:
                payload[name] = value[-4000:] if name == "log_tail" else value
        return payload

    def _status(
        self, job: Job, status: AgentStatus, progress: float, message: str, **extra: Any
    ) -> None:
        job.last_status = self._payload(job, status, progress, message, **extra)
        self._on_status(job.last_status, False)

    def _finish(
        self, job: Job, *, message: str | None = None, cancelled: bool = False
    ) -> None:
        total = len(job.software_list)
        if cancelled or job.failed:
            status = AgentStatus.FAILED
            if message is None:
                message = f"{job.failed} of {total} failed: " + "; ".join(job.failures)
        else:
            status = AgentStatus.COMPLETED
            message = message or (
                f"{job.completed} of {total} installed"
                + ("; reboot required" if job.reboot_required else "")
            )
        last = job.last_status
        extra = {
            k: last.get(k)
            for k in ("software_name", "exit_code", "log_tail")
            if not cancelled
        }
        job.state = DONE
        job.finished_at = time.time()
        job.reported = False
        job.last_status = self._payload(job, status, 100, message, **extra)
        self.store.save()
        log.info("deployment %s %s: %s", job.deployment_id, status.value, message)
        self._on_status(job.last_status, True)


def _absolute_url(server_url: str, url: str) -> str:
    """Package urls are paths on the server the agent reached (DESIGN.md)."""
    return urljoin(server_url.rstrip("/") + "/", url)
