"""Status ingestion: agents' reports checked in memory, written in batches.

The targets of running deployments are kept in memory (loaded from the database on
the first report of a deployment, so a restart needs no warm-up). A report is
validated and applied there under DESIGN.md's rules — progress never goes back
within an attempt, timestamps are set once, a finished target stays finished — and
the per-deployment counts move with it, without a query. One writer task then
writes every changed target in one transaction (an executemany UPDATE) about every
`interval` seconds, and only after that commit are the consoles told and the
reports acknowledged: what an agent sees acknowledged is on disk.

Only for a single server process: several servers sharing one database would each
hold their own copy of the counts. `TODO(scale-out)`: the gateway keeps the
per-report transaction (`Repository.apply_report`) when Redis is configured.

Everything here runs on the server's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

import protocol
from protocol import DeploymentStatus, TargetStatus
from server.errors import ConflictError, EnvironmentFault, NotFoundError
from server.models import utcnow
from server.repository import (
    SENT_TO_AGENT,
    Change,
    KeyedLocks,
    Report,
    Repository,
    aggregate_status,
    log_finished,
    outcome,
    report_changes,
)

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 0.1
"""Seconds between two batch writes under load (the first write after a quiet
spell goes out at once)."""

_Key = tuple[int, int]


@dataclass(slots=True)
class TargetState:
    """One target as the database will hold it after the next write."""

    id: int
    deployment_id: int
    device_id: int
    hostname: str
    status: TargetStatus
    progress: float
    attempt: int
    message: str | None
    exit_code: int | None
    reboot_required: bool | None
    started_at: datetime | None
    completed_at: datetime | None
    log_tail: str | None
    agent_status: str | None = None
    written: asyncio.Future | None = None
    """Resolved when the write holding this target's latest change has committed."""

    def row(self) -> dict[str, Any]:
        """The columns the batch UPDATE writes, by primary key."""
        return {
            "id": self.id,
            "status": self.status.value,
            "progress_percent": self.progress,
            "message": self.message,
            "exit_code": self.exit_code,
            "reboot_required": self.reboot_required,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "log_tail": self.log_tail,
        }

    def update(self) -> dict[str, Any]:
        """The `software_deployment_update` payload (with the extra fields)."""
        return {
            "deployment_id": self.deployment_id,
            "device_id": self.device_id,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "exit_code": self.exit_code,
            "reboot_required": self.reboot_required,
            "attempt": self.attempt,
            "agent_status": self.agent_status,
            "hostname": self.hostname,
        }

    @property
    def share(self) -> float:
        """This target's part of the deployment's progress sum."""
        return 100.0 if self.status.terminal else self.progress


@dataclass(slots=True)
class DeploymentState:
    """A running deployment: its targets by device id and their counts."""

    id: int
    name: str
    status: DeploymentStatus
    completed_at: datetime | None
    packages: list[tuple[str, str]]
    """(name, file_name) of each package, in install order."""
    targets: dict[int, TargetState]
    counts: dict[str, int] = field(default_factory=dict)
    progress_sum: float = 0.0
    progress_sent: int | None = None
    status_sent: DeploymentStatus | None = None

    def __post_init__(self) -> None:
        self.counts = {s.value: 0 for s in TargetStatus}
        for target in self.targets.values():
            self.counts[target.status.value] += 1
            self.progress_sum += target.share
        self.counts["total"] = len(self.targets)
        self.status_sent = self.status

    @property
    def progress(self) -> float:
        total = self.counts["total"]
        return round(min(self.progress_sum / total, 100.0), 1) if total else 0.0

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status.value,
            "completed_at": self.completed_at,
        }

    def update(self) -> dict[str, Any]:
        return {
            "deployment_id": self.id,
            "deployment_name": self.name,
            "status": self.status.value,
            "progress": self.progress,
            "counts": dict(self.counts),
        }


class StatusIngest:
    """The in-memory targets of running deployments and their one writer task.

    Args:
        repository: where batches are written and deployments loaded from.
        publish: `await publish(change)` tells consoles and listeners, after commit.
        interval: seconds between two batch writes while reports keep coming.
    """

    def __init__(
        self,
        repository: Repository,
        publish: Callable[[Change], Awaitable[None]],
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._repository = repository
        self._publish = publish
        self._interval = interval
        self._deployments: dict[int, DeploymentState] = {}
        self._locks = KeyedLocks()
        self._dirty: dict[_Key, TargetState] = {}
        self._dirty_deployments: dict[int, DeploymentState] = {}
        self._touched: dict[int, DeploymentState] = {}
        self._next_write: asyncio.Future = asyncio.get_running_loop().create_future()
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._failing = False
        self._writer: asyncio.Task | None = None

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(
            self._run(), name="status-writer"
        )

    async def stop(self) -> None:
        """Write what is left (retrying while the database refuses), then stop.

        The writer is never cancelled inside a write: we take the write lock first.
        """
        if self._writer is not None:
            async with self._write_lock:
                self._writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._writer
            self._writer = None
        while self._dirty or self._dirty_deployments:
            if not await self.flush():
                # TODO(server): a database that stays unwritable holds stop() here;
                # give up after a bound and say which targets were not written.
                await asyncio.sleep(self._interval)
        if not self._next_write.done():
            self._next_write.set_result(None)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # a bug in one batch must not stop all ingestion
                log.exception("status write failed")
            # Pace the writes: what arrives meanwhile goes into the next batch.
            await asyncio.sleep(self._interval)

    # --- reports --------------------------------------------------------------

    async def submit(self, report: Report) -> asyncio.Future:
        """Apply `report` in memory; the future resolves once it is committed.

        Raises `NotFoundError` or `ConflictError` (refusals); nothing changes then.
        """
        key = report.deployment_id
        deployment = self._deployments.get(key)
        if deployment is None or self._locks.busy(key):
            # Not in memory yet, or a cancel or retry of it is running: wait.
            async with self._locks.hold(key):
                deployment = self._deployments.get(key) or await self._load(key)
        target = deployment.targets.get(report.device_id)
        if target is None:
            raise NotFoundError("No such target: unknown deployment or device.")
        if report.attempt is not None and report.attempt != target.attempt:
            raise ConflictError(
                "Report for an earlier attempt of this target.",
                code=protocol.STALE_ATTEMPT,
            )
        if target.status.terminal:
            if target.written is not None and not target.written.done():
                return target.written  # a re-sent final not yet written: same ack
            raise ConflictError(
                "Target already finished.", code=protocol.TARGET_FINISHED
            )

        if report.download_of is not None:
            progress = _download_share(deployment, report)
            status = TargetStatus.IN_PROGRESS
        else:
            progress = report.progress
            status = protocol.target_status_for(report.status, report.failed)
        self._apply(deployment, target, status, progress, report)
        return target.written

    def _apply(
        self,
        deployment: DeploymentState,
        target: TargetState,
        status: TargetStatus,
        progress: float,
        report: Report,
    ) -> None:
        now = utcnow()
        deployment.counts[target.status.value] -= 1
        deployment.progress_sum -= target.share

        changes = report_changes(
            report,
            status,
            progress,
            progress_now=target.progress,
            started_at=target.started_at,
            completed_at=target.completed_at,
            message=target.message,
        )
        target.status = status
        target.agent_status = report.status.value
        for name, value in changes.items():
            setattr(target, name, value)

        deployment.counts[status.value] += 1
        deployment.progress_sum += target.share
        if status.terminal:
            log_finished(target, target.hostname)
            self._settle(deployment, now)
        self._mark(deployment, target)

    def _settle(self, deployment: DeploymentState, now: datetime) -> None:
        """Give the deployment its final status once no target is open."""
        status = aggregate_status(deployment.counts)
        if status is deployment.status:
            return
        deployment.status = status
        deployment.completed_at = now
        self._dirty_deployments[deployment.id] = deployment
        log.info(
            "deployment %s %s: %s",
            deployment.id,
            status.value,
            outcome(deployment.counts),
        )

    def _mark(self, deployment: DeploymentState, target: TargetState) -> None:
        self._dirty[(target.deployment_id, target.device_id)] = target
        self._touched[deployment.id] = deployment
        target.written = self._next_write
        self._wake.set()

    async def mark_sent(self, deployment_id: int, device_ids: list[int]) -> None:
        """Note on still-pending targets that their job went to the agent; returns
        once that note is written."""
        if not device_ids:
            return
        async with self.holding(deployment_id, flush=False):
            deployment = self._deployments.get(deployment_id)
            if deployment is None:
                deployment = await self._load(deployment_id)
            written = None
            for device_id in device_ids:
                target = deployment.targets.get(device_id)
                if (
                    target is None
                    or target.status is not TargetStatus.PENDING
                    or target.message == SENT_TO_AGENT
                ):
                    continue
                target.message = SENT_TO_AGENT
                self._mark(deployment, target)
                written = target.written
        if written is not None:
            await written

    # --- deployments ----------------------------------------------------------

    async def _load(self, deployment_id: int) -> DeploymentState:
        """The deployment from the database; the caller holds its lock."""
        loaded = await self._repository.load_deployment(deployment_id)
        if loaded is None:
            raise NotFoundError("No such target: unknown deployment or device.")
        deployment = _deployment_state(loaded)
        if deployment.status is DeploymentStatus.IN_PROGRESS:
            self._deployments[deployment_id] = deployment
        # A finished one has only final targets: answer from it, keep nothing.
        return deployment

    @contextlib.asynccontextmanager
    async def holding(
        self, deployment_id: int, *, flush: bool = True, forget: bool = False
    ) -> AsyncIterator[None]:
        """Hold reports of one deployment off while its rows change elsewhere.

        With `flush`, everything in memory is written first (so the other writer
        sees it); with `forget`, the deployment is dropped from memory afterwards
        and loaded again from the database at its next report.
        """
        async with self._locks.hold(deployment_id):
            if flush and not await self.flush():
                raise EnvironmentFault(
                    "The database cannot be written just now; try again."
                )
            yield
            if forget:
                self._deployments.pop(deployment_id, None)

    # --- the writer -----------------------------------------------------------

    async def flush(self) -> bool:
        """Write every changed target now; False if the database refused (kept)."""
        async with self._write_lock:
            if not self._dirty and not self._dirty_deployments:
                return True
            targets, self._dirty = self._dirty, {}
            deployments, self._dirty_deployments = self._dirty_deployments, {}
            touched, self._touched = self._touched, {}
            written = self._next_write
            self._next_write = asyncio.get_running_loop().create_future()
            target_rows = [t.row() for t in targets.values()]
            target_updates = [t.update() for t in targets.values()]
            deployment_rows = [d.row() for d in deployments.values()]
            # What consoles hear of each deployment is what this batch commits:
            # reports applied while it is written belong to the next batch.
            deployment_updates = [(d, d.update()) for d in touched.values()]

            try:
                await self._repository.write_batch(target_rows, deployment_rows)
            except (SQLAlchemyError, OSError) as exc:
                self._keep(targets, deployments, touched, written)
                if not self._failing:
                    log.warning(
                        "cannot write %d target status(es), will retry: %s",
                        len(target_rows),
                        exc,
                    )
                self._failing = True
                self._wake.set()
                return False
            if self._failing:
                log.info("status writes work again")
                self._failing = False

            change = Change(target_updates=target_updates)
            for deployment, update in deployment_updates:
                if self._news(deployment, update):
                    change.deployment_updates.append(update)
            try:
                await self._publish(change)
            finally:
                written.set_result(None)
            for deployment, update in deployment_updates:
                if update["status"] != DeploymentStatus.IN_PROGRESS.value:
                    # Finished, and all of it is on disk now: nothing to keep.
                    self._deployments.pop(deployment.id, None)
            return True

    def _keep(self, targets, deployments, touched, written) -> None:
        """After a failed write: keep its changes for the next one."""
        for key, target in targets.items():
            self._dirty.setdefault(key, target)
        for key, deployment in deployments.items():
            self._dirty_deployments.setdefault(key, deployment)
        for key, deployment in touched.items():
            self._touched.setdefault(key, deployment)
        later = self._next_write
        later.add_done_callback(lambda _f: written.done() or written.set_result(None))

    @staticmethod
    def _news(deployment: DeploymentState, update: dict[str, Any]) -> bool:
        """Whether `update` is worth a `deployment_update`: its status or whole
        percent moved since the last one sent (which it then becomes)."""
        status = DeploymentStatus(update["status"])
        rounded = int(update["progress"])
        if deployment.status_sent is status and deployment.progress_sent == rounded:
            return False
        deployment.status_sent = status
        deployment.progress_sent = rounded
        return True


def _download_share(deployment: DeploymentState, report: Report) -> float:
    """A package's download is the first half of that package's share of 100 %."""
    count = len(deployment.packages)
    for index, names in enumerate(deployment.packages):
        if report.download_of in names:
            return (index + report.progress / 200) / count * 100
    raise ConflictError("That package is not part of this deployment.")


def _deployment_state(loaded: dict[str, Any]) -> DeploymentState:
    return DeploymentState(
        id=loaded["id"],
        name=loaded["deployment_name"],
        status=DeploymentStatus(loaded["status"]),
        completed_at=loaded["completed_at"],
        packages=loaded["packages"],
        targets={
            t["device_id"]: TargetState(
                id=t["id"],
                deployment_id=loaded["id"],
                device_id=t["device_id"],
                hostname=t["hostname"],
                status=TargetStatus(t["status"]),
                progress=t["progress_percent"] or 0.0,
                attempt=t["attempt"],
                message=t["message"],
                exit_code=t["exit_code"],
                reboot_required=t["reboot_required"],
                started_at=t["started_at"],
                completed_at=t["completed_at"],
                log_tail=t["log_tail"],
            )
            for t in loaded["targets"]
        },
    )
