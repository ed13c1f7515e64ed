"""Everything the server stores, and the rules for changing it.

Devices, packages, deployments and their targets live here, behind coroutines that
return plain dicts (the JSON shapes of the HTTP API). Status rules of DESIGN.md are
enforced here: progress never goes back within an attempt, timestamps are set once,
finished targets stay finished. Changes to one deployment are serialized by a lock
per deployment in this process and a row lock on the deployment (PostgreSQL) across
processes, so the counts a console sees are always consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import protocol
from protocol import DeploymentStatus, TargetStatus
from server.errors import ConflictError, InvalidRequestError, NotFoundError
from server.models import (
    Deployment,
    DeploymentSoftware,
    DeploymentTarget,
    Device,
    Software,
    utcnow,
)

log = logging.getLogger(__name__)

WAITING_FOR_AGENT = "waiting for agent to connect"
SENT_TO_AGENT = "sent to agent"
CANCELLED_BY_TECHNICIAN = "cancelled by technician"
RETRY_QUEUED = "queued again for retry"
MAX_TARGETS = 10_000
MAX_PACKAGES = 100

SERVER_NOTES = frozenset({WAITING_FOR_AGENT, SENT_TO_AGENT, RETRY_QUEUED})
_TERMINAL = [s.value for s in TargetStatus if s.terminal]
_OPEN = [TargetStatus.PENDING.value, TargetStatus.IN_PROGRESS.value]


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class Job:
    """One `install_software` to send to one agent's room."""

    agent_id: str
    device_id: int
    deployment_id: int
    payload: dict[str, Any]


@dataclass(frozen=True)
class Report:
    """An agent's report about one target, already validated and authorized."""

    deployment_id: int
    device_id: int
    status: protocol.AgentStatus
    progress: float
    failed: int | None = None
    message: str | None = None
    exit_code: int | None = None
    reboot_required: bool | None = None
    log_tail: str | None = None
    attempt: int | None = None
    download_of: str | None = None
    """Set for `software_download_progress`: the package being downloaded."""


@dataclass
class Change:
    """What a change did, for the consoles: target updates, deployment updates."""

    target_updates: list[dict[str, Any]] = field(default_factory=list)
    deployment_updates: list[dict[str, Any]] = field(default_factory=list)
    cancelled: list[tuple[str, int]] = field(default_factory=list)
    """(agent id, device id) pairs to send `cancel_deployment` to."""


class KeyedLocks:
    """One asyncio.Lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[int, tuple[asyncio.Lock, int]] = {}

    def busy(self, key: int) -> bool:
        """True while someone holds or waits for `key`'s lock."""
        return key in self._locks

    @contextlib.asynccontextmanager
    async def hold(self, key: int) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Repository:
    """The server's data. Every coroutine runs on the loop; queries never block it."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._locks = KeyedLocks()
        self._last_progress: dict[int, int] = {}
        self.jobs_epoch = 0
        """+1 after each commit that creates jobs (new deployment, retry), so a
        registration can tell whether the jobs it read may be stale."""

    @contextlib.asynccontextmanager
    async def _transaction(self, deployment_id: int) -> AsyncIterator[AsyncSession]:
        """A transaction holding this process's lock on one deployment."""
        async with (
            self._locks.hold(deployment_id),
            self._sessions() as session,
            session.begin(),
        ):
            yield session

    # --- devices --------------------------------------------------------------

    async def register_devices(
        self, regs: list[protocol.AgentRegister]
    ) -> list[tuple[dict[str, Any], list[Job]]]:
        """Record (or refresh) the devices of registering agents, in one transaction;
        they are online now. For each, in order: the device and the jobs it should be
        running (targets pending or in progress), read in the same transaction.

        An agent id that appears twice is one device, refreshed in order (the
        later registration's fields win), and both get it as the batch left it.
        """
        async with self._sessions() as session, session.begin():
            agent_ids = list({reg.agent_id for reg in regs})
            known = {
                device.agent_id: device
                for device in await session.scalars(
                    select(Device).where(Device.agent_id.in_(agent_ids))
                )
            }
            now = utcnow()
            devices: list[Device] = []
            for reg in regs:
                device = known.get(reg.agent_id)
                if device is None:
                    device = known[reg.agent_id] = Device(agent_id=reg.agent_id)
                    session.add(device)
                device.hostname = reg.hostname
                device.platform = reg.platform.value
                device.os_version = reg.os_version
                device.agent_version = reg.agent_version
                device.ip = reg.ip
                device.mac = reg.mac
                device.online = True
                device.last_seen = now
                devices.append(device)
            await session.flush()
            dicts = [device_dict(device) for device in devices]
            jobs = await _open_jobs_of(session, devices)
        return [
            (fields, jobs.get(device.id, []))
            for device, fields in zip(devices, dicts, strict=True)
        ]

    async def mark_offline_batch(
        self, agent_ids: list[str]
    ) -> list[dict[str, Any] | None]:
        """Mark these agents' devices offline in one transaction; each one's device
        as it is now, in order (None for an agent id with no device)."""
        async with self._sessions() as session, session.begin():
            now = utcnow()
            devices = {
                device.agent_id: device
                for device in await session.scalars(
                    select(Device).where(Device.agent_id.in_(set(agent_ids)))
                )
            }
            for device in devices.values():
                device.online = False
                device.last_seen = now
        return [
            device_dict(devices[agent_id]) if agent_id in devices else None
            for agent_id in agent_ids
        ]

    async def mark_all_offline(self) -> None:
        """At start: nobody is connected to a server that has just started."""
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Device).where(Device.online.is_(True)).values(online=False)
            )

    async def list_devices(self) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await session.scalars(select(Device).order_by(Device.hostname))
            return [device_dict(d) for d in rows]

    # --- software -------------------------------------------------------------

    async def add_software(self, **columns: Any) -> dict[str, Any]:
        async with self._sessions() as session, session.begin():
            software = Software(**columns, added_at=utcnow())
            session.add(software)
        return software_dict(software)

    async def list_software(self) -> list[dict[str, Any]]:
        async with self._sessions() as session:
            rows = await session.scalars(select(Software).order_by(Software.id))
            return [software_dict(s) for s in rows]

    # --- deployments ----------------------------------------------------------

    async def create_deployment(
        self,
        software_ids: Iterable[int],
        device_ids: Iterable[int],
        deployment_name: str | None = None,
    ) -> tuple[dict[str, Any], list[Job]]:
        """Store a deployment with its packages and one pending target per device."""
        software_ids = list(dict.fromkeys(software_ids))
        device_ids = list(dict.fromkeys(device_ids))
        if not software_ids:
            raise InvalidRequestError("Choose at least one package to deploy.")
        if not device_ids:
            raise InvalidRequestError("Choose at least one device to deploy to.")
        if len(software_ids) > MAX_PACKAGES or len(device_ids) > MAX_TARGETS:
            raise InvalidRequestError("Too many packages or devices in one deployment.")

        async with self._sessions() as session, session.begin():
            packages = await _fetch(session, Software, software_ids, "package")
            # Rows, not ORM objects: 4,000 Device instances took a third of the
            # time before the first job could go out.
            devices = await _fetch(
                session,
                Device,
                device_ids,
                "device",
                columns=(Device.id, Device.agent_id, Device.hostname),
            )
            now = utcnow()
            name = deployment_name or _default_name(packages, len(devices))
            deployment = Deployment(
                deployment_name=name[:255],
                status=DeploymentStatus.IN_PROGRESS.value,
                created_at=now,
                started_at=now,
            )
            session.add(deployment)
            await session.flush()
            # Bulk inserts (executemany / multi-row VALUES), no ORM object per row.
            await session.execute(
                insert(DeploymentSoftware),
                [
                    {"deployment_id": deployment.id, "software_id": s.id, "position": i}
                    for i, s in enumerate(packages)
                ],
            )
            new_target = {
                "deployment_id": deployment.id,
                "status": TargetStatus.PENDING.value,
                "progress_percent": 0.0,
                "message": WAITING_FOR_AGENT,
                "attempt": 1,
            }
            # One executemany, then the ids in one query: INSERT ... RETURNING with
            # its rows matched to the parameters is one statement per row on SQLite.
            await session.execute(
                insert(DeploymentTarget),
                [{**new_target, "device_id": d.id} for d in devices],
            )
            target_ids = dict(
                (
                    await session.execute(
                        select(DeploymentTarget.device_id, DeploymentTarget.id).where(
                            DeploymentTarget.deployment_id == deployment.id
                        )
                    )
                ).all()
            )
        self.jobs_epoch += 1
        jobs = _jobs(deployment.id, devices, packages, attempt=1)
        result = {
            **_deployment_columns(deployment),
            "software_ids": [p.id for p in packages],
            "counts": {
                **{s.value: 0 for s in TargetStatus},
                TargetStatus.PENDING.value: len(devices),
                "total": len(devices),
            },
            "progress": 0.0,
            "targets": [
                {
                    **_new_target_dict(new_target, target_ids[d.id], d.id),
                    "hostname": d.hostname,
                }
                for d in sorted(devices, key=lambda d: (d.hostname, target_ids[d.id]))
            ],
        }
        log.info(
            "deployment %s created: %d package(s) to %d device(s)",
            deployment.id,
            len(packages),
            len(devices),
        )
        return result, jobs

    async def jobs_for_device(self, device_id: int) -> list[Job]:
        """Every job this device should be running: targets pending or in progress."""
        async with self._sessions() as session:
            device = await session.get(Device, device_id)
            if device is None:
                return []
            return (await _open_jobs_of(session, [device])).get(device.id, [])

    async def mark_sent(self, deployment_id: int, device_ids: list[int]) -> Change:
        """Note on still-pending targets that their job went to the agent."""
        change = Change()
        if not device_ids:
            return change
        async with self._transaction(deployment_id) as session:
            targets = await session.scalars(
                select(DeploymentTarget).where(
                    DeploymentTarget.deployment_id == deployment_id,
                    DeploymentTarget.device_id.in_(device_ids),
                    DeploymentTarget.status == TargetStatus.PENDING.value,
                    DeploymentTarget.message != SENT_TO_AGENT,
                )
            )
            for target in targets:
                target.message = SENT_TO_AGENT
                change.target_updates.append(target_update(target))
        return change

    async def get_deployment(self, deployment_id: int) -> dict[str, Any]:
        async with self._sessions() as session:
            deployment = await session.get(Deployment, deployment_id)
            if deployment is None:
                raise NotFoundError(f"No deployment with id {deployment_id}.")
            return await _deployment_dict(session, deployment, with_targets=True)

    async def list_deployments(self, limit: int = 200) -> list[dict[str, Any]]:
        # TODO(scale): two queries per deployment; one grouped query would do.
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Deployment).order_by(Deployment.id.desc()).limit(limit)
            )
            return [
                await _deployment_dict(session, d, with_targets=False) for d in rows
            ]

    async def apply_report(self, report: Report) -> Change:
        """Record an agent's report on its target; raise if it must be refused.

        Raises `NotFoundError` (no such target) or `ConflictError` (target finished,
        report for an earlier attempt, unknown package); nothing changes then.
        """
        change = Change()
        async with self._transaction(report.deployment_id) as session:
            deployment = await session.get(
                Deployment, report.deployment_id, with_for_update=True
            )
            target = await session.scalar(
                select(DeploymentTarget)
                .where(
                    DeploymentTarget.deployment_id == report.deployment_id,
                    DeploymentTarget.device_id == report.device_id,
                )
                .with_for_update()
            )
            if deployment is None or target is None:
                raise NotFoundError("No such target: unknown deployment or device.")
            if report.attempt is not None and report.attempt != target.attempt:
                raise ConflictError(
                    "Report for an earlier attempt of this target.",
                    code=protocol.STALE_ATTEMPT,
                )
            if TargetStatus(target.status).terminal:
                raise ConflictError(
                    "Target already finished.", code=protocol.TARGET_FINISHED
                )

            if report.download_of is not None:
                progress = await _download_share(session, report)
                status = TargetStatus.IN_PROGRESS
            else:
                progress = report.progress
                status = protocol.target_status_for(report.status, report.failed)
            _apply(target, status, progress, report)
            hostname = await session.scalar(
                select(Device.hostname).where(Device.id == target.device_id)
            )
            change.target_updates.append(
                {
                    **target_update(target, agent_status=report.status.value),
                    "hostname": hostname,
                }
            )
            update_ = await self._refresh_deployment(session, deployment)
            if update_ is not None:
                change.deployment_updates.append(update_)

        if status.terminal:
            log_finished(target, hostname)
        return change

    async def load_deployment(self, deployment_id: int) -> dict[str, Any] | None:
        """A deployment with its targets (and hostnames) and packages, for the
        in-memory status ingestion; None if there is no such deployment."""
        async with self._sessions() as session:
            deployment = await session.get(Deployment, deployment_id)
            if deployment is None:
                return None
            packages = await _packages_of(session, deployment_id)
            rows = await session.execute(
                select(DeploymentTarget, Device.hostname)
                .join(Device, Device.id == DeploymentTarget.device_id)
                .where(DeploymentTarget.deployment_id == deployment_id)
            )
            targets = [
                {**target_dict(t, raw=True), "hostname": hostname}
                for t, hostname in rows
            ]
        return {
            "id": deployment.id,
            "deployment_name": deployment.deployment_name,
            "status": deployment.status,
            "completed_at": deployment.completed_at,
            "packages": [(p.name, p.file_name) for p in packages],
            "targets": targets,
        }

    async def write_batch(
        self, target_rows: list[dict[str, Any]], deployment_rows: list[dict[str, Any]]
    ) -> None:
        """Write changed targets and deployments by primary key, in one transaction
        (one executemany UPDATE per table)."""
        async with self._sessions() as session, session.begin():
            if target_rows:
                await session.execute(update(DeploymentTarget), target_rows)
            if deployment_rows:
                await session.execute(update(Deployment), deployment_rows)

    async def cancel_deployment(self, deployment_id: int) -> tuple[dict, Change]:
        """Cancel every unfinished target; the deployment becomes `cancelled`."""
        change = Change()
        async with self._transaction(deployment_id) as session:
            deployment = await session.get(
                Deployment, deployment_id, with_for_update=True
            )
            if deployment is None:
                raise NotFoundError(f"No deployment with id {deployment_id}.")
            rows = await session.execute(
                select(DeploymentTarget, Device.agent_id)
                .join(Device, Device.id == DeploymentTarget.device_id)
                .where(
                    DeploymentTarget.deployment_id == deployment_id,
                    DeploymentTarget.status.in_(_OPEN),
                )
            )
            open_targets = rows.all()
            if not open_targets:
                raise ConflictError("The deployment has already finished.")
            now = utcnow()
            for target, agent_id in open_targets:
                target.status = TargetStatus.CANCELLED.value
                target.message = CANCELLED_BY_TECHNICIAN
                target.completed_at = now
                change.target_updates.append(target_update(target))
                change.cancelled.append((agent_id, target.device_id))
            update_ = await self._refresh_deployment(
                session, deployment, force=DeploymentStatus.CANCELLED
            )
            if update_ is not None:
                change.deployment_updates.append(update_)
            result = await _deployment_dict(session, deployment, with_targets=True)
        log.info(
            "deployment %s cancelled: %d target(s) stopped",
            deployment_id,
            len(change.cancelled),
        )
        return result, change

    async def retry_deployment(
        self, deployment_id: int
    ) -> tuple[dict, Change, list[Job]]:
        """Queue every failed target again as a new attempt."""
        change = Change()
        async with self._transaction(deployment_id) as session:
            deployment = await session.get(
                Deployment, deployment_id, with_for_update=True
            )
            if deployment is None:
                raise NotFoundError(f"No deployment with id {deployment_id}.")
            rows = await session.execute(
                select(DeploymentTarget, Device)
                .join(Device, Device.id == DeploymentTarget.device_id)
                .where(
                    DeploymentTarget.deployment_id == deployment_id,
                    DeploymentTarget.status == TargetStatus.FAILED.value,
                )
            )
            failed = rows.all()
            if not failed:
                raise ConflictError("The deployment has no failed targets to retry.")
            packages = await _packages_of(session, deployment_id)
            jobs = []
            for target, device in failed:
                target.status = TargetStatus.PENDING.value
                target.attempt += 1
                target.progress_percent = 0.0
                target.message = RETRY_QUEUED
                target.exit_code = None
                target.reboot_required = None
                target.log_tail = None
                target.started_at = None
                target.completed_at = None
                change.target_updates.append(target_update(target))
                jobs.append(_job(deployment_id, device, packages, target.attempt))
            deployment.completed_at = None
            self.jobs_epoch += 1  # before the commit: safe side for registrations
            update_ = await self._refresh_deployment(session, deployment)
            if update_ is not None:
                change.deployment_updates.append(update_)
            result = await _deployment_dict(session, deployment, with_targets=True)
        log.info(
            "deployment %s: %d failed target(s) queued again", deployment_id, len(jobs)
        )
        return result, change, jobs

    async def _refresh_deployment(
        self,
        session: AsyncSession,
        deployment: Deployment,
        force: DeploymentStatus | None = None,
    ) -> dict[str, Any] | None:
        """Recompute the deployment's status; the update to send if anything moved."""
        counts, progress = await _counts(session, deployment.id)
        status = force or aggregate_status(counts)
        changed = status.value != deployment.status
        if changed:
            deployment.status = status.value
            if status is DeploymentStatus.IN_PROGRESS:
                deployment.completed_at = None
            else:
                deployment.completed_at = utcnow()
                log.info(
                    "deployment %s %s: %s", deployment.id, status.value, outcome(counts)
                )

        rounded = int(progress)
        if not changed and self._last_progress.get(deployment.id) == rounded:
            return None
        if status is DeploymentStatus.IN_PROGRESS:
            self._last_progress[deployment.id] = rounded
        else:
            self._last_progress.pop(deployment.id, None)
        return {
            "deployment_id": deployment.id,
            "deployment_name": deployment.deployment_name,
            "status": status.value,
            "progress": progress,
            "counts": counts,
        }


# --- rules --------------------------------------------------------------------


def report_changes(
    report: Report,
    status: TargetStatus,
    progress: float,
    *,
    progress_now: float,
    started_at: datetime | None,
    completed_at: datetime | None,
    message: str | None,
) -> dict[str, Any]:
    """The fields a report changes on a target, by DESIGN.md's rules (pure).

    Progress never goes back within an attempt (success is 100), `started_at` is
    set by the first report and `completed_at` by the terminal one, and a
    server note ("waiting for agent", ...) gives way to the agent's own words.
    Used by the in-memory ingestion and by the per-report transaction path alike.
    """
    changes: dict[str, Any] = {
        "progress": 100.0
        if status is TargetStatus.SUCCESS
        else max(progress_now, progress)
    }
    now = utcnow()
    if started_at is None:
        changes["started_at"] = now
    if status.terminal and completed_at is None:
        changes["completed_at"] = now
    if report.message is not None:
        changes["message"] = report.message
    elif message in SERVER_NOTES:
        changes["message"] = None
    for name in ("exit_code", "reboot_required", "log_tail"):
        value = getattr(report, name)
        if value is not None:
            changes[name] = value
    return changes


def _apply(
    target: DeploymentTarget, status: TargetStatus, progress: float, report: Report
) -> None:
    changes = report_changes(
        report,
        status,
        progress,
        progress_now=target.progress_percent or 0.0,
        started_at=target.started_at,
        completed_at=target.completed_at,
        message=target.message,
    )
    target.status = status.value
    target.progress_percent = changes.pop("progress")
    for name, value in changes.items():
        setattr(target, name, value)


def aggregate_status(counts: dict[str, int]) -> DeploymentStatus:
    if counts["pending"] or counts["in_progress"]:
        return DeploymentStatus.IN_PROGRESS
    if counts["cancelled"]:
        return DeploymentStatus.CANCELLED
    if counts["failed"]:
        return DeploymentStatus.FAILED
    return DeploymentStatus.COMPLETED


def outcome(counts: dict[str, int]) -> str:
    """A deployment's counts as a technician reads them in the activity log."""
    total = counts.get("total", sum(counts[s.value] for s in TargetStatus))
    return (
        f"{counts[TargetStatus.SUCCESS.value]} succeeded, "
        f"{counts[TargetStatus.FAILED.value]} failed, "
        f"{counts[TargetStatus.CANCELLED.value]} cancelled of {total}"
    )


async def _download_share(session: AsyncSession, report: Report) -> float:
    """A package's download is the first half of that package's share of 100 %."""
    packages = await _packages_of(session, report.deployment_id)
    for index, package in enumerate(packages):
        if report.download_of in (package.name, package.file_name):
            return (index + report.progress / 200) / len(packages) * 100
    raise ConflictError("That package is not part of this deployment.")


def log_finished(target: Any, hostname: str) -> None:
    """The INFO line for a target that has just finished (ORM row or in memory)."""
    if target.status == TargetStatus.SUCCESS:
        log.info(
            "deployment %s: %s (device %s) succeeded%s",
            target.deployment_id,
            hostname,
            target.device_id,
            " (reboot required)" if target.reboot_required else "",
        )
    else:
        log.info(
            "deployment %s: %s (device %s) %s with exit code %s: %s",
            target.deployment_id,
            hostname,
            target.device_id,
            target.status,
            target.exit_code,
            target.message,
        )


def _default_name(packages: list[Software], device_count: int) -> str:
    names = ", ".join(f"{p.name} {p.version}".strip() for p in packages)
    plural = "device" if device_count == 1 else "devices"
    return f"{names} to {device_count} {plural}"


# --- queries and shapes -------------------------------------------------------


async def _fetch(
    session: AsyncSession,
    model,
    ids: list[int],
    what: str,
    columns: tuple | None = None,
) -> list:
    """The rows of `model` with these ids, in their order (NotFoundError if one
    is missing): ORM objects, or only `columns` (rows with those attributes)."""
    if columns is None:
        found = await session.scalars(select(model).where(model.id.in_(ids)))
    else:
        found = await session.execute(select(*columns).where(model.id.in_(ids)))
    rows = {r.id: r for r in found}
    missing = [i for i in ids if i not in rows]
    if missing:
        shown = ", ".join(str(i) for i in missing[:10])
        raise NotFoundError(f"Unknown {what} id(s): {shown}.")
    return [rows[i] for i in ids]


async def _open_jobs_of(
    session: AsyncSession, devices: list[Device]
) -> dict[int, list[Job]]:
    """The jobs (targets pending or in progress) of each of these devices, by
    device id, oldest deployment first; two queries however many devices."""
    by_id = {device.id: device for device in devices}
    rows = await session.execute(
        select(
            DeploymentTarget.device_id,
            DeploymentTarget.deployment_id,
            DeploymentTarget.attempt,
        )
        .where(
            DeploymentTarget.device_id.in_(list(by_id)),
            DeploymentTarget.status.in_(_OPEN),
        )
        .order_by(DeploymentTarget.deployment_id)
    )
    open_targets = rows.all()
    packages = await _packages_of_many(
        session, {deployment_id for _, deployment_id, _ in open_targets}
    )
    jobs: dict[int, list[Job]] = {}
    for device_id, deployment_id, attempt in open_targets:
        jobs.setdefault(device_id, []).append(
            _job(deployment_id, by_id[device_id], packages[deployment_id], attempt)
        )
    return jobs


async def _packages_of_many(
    session: AsyncSession, deployment_ids: set[int]
) -> dict[int, list[Software]]:
    """Each deployment's packages in install order, by deployment id."""
    packages: dict[int, list[Software]] = {d: [] for d in deployment_ids}
    if not deployment_ids:
        return packages
    rows = await session.execute(
        select(DeploymentSoftware.deployment_id, Software)
        .join(Software, DeploymentSoftware.software_id == Software.id)
        .where(DeploymentSoftware.deployment_id.in_(deployment_ids))
        .order_by(DeploymentSoftware.deployment_id, DeploymentSoftware.position)
    )
    for deployment_id, software in rows.all():
        packages[deployment_id].append(software)
    return packages


async def _packages_of(session: AsyncSession, deployment_id: int) -> list[Software]:
    return (await _packages_of_many(session, {deployment_id}))[deployment_id]


async def _counts(
    session: AsyncSession, deployment_id: int
) -> tuple[dict[str, int], float]:
    rows = await session.execute(
        select(
            DeploymentTarget.status,
            func.count(),
            func.sum(
                case(
                    (DeploymentTarget.status.in_(_TERMINAL), 100.0),
                    else_=DeploymentTarget.progress_percent,
                )
            ),
        )
        .where(DeploymentTarget.deployment_id == deployment_id)
        .group_by(DeploymentTarget.status)
    )
    counts = {s.value: 0 for s in TargetStatus}
    done = 0.0
    for status, count, progress_sum in rows:
        counts[status] = count
        done += progress_sum or 0.0
    counts["total"] = sum(counts.values())
    progress = round(done / counts["total"], 1) if counts["total"] else 0.0
    return counts, progress


def _jobs(
    deployment_id: int, devices: list[Any], packages: list[Software], attempt: int
) -> list[Job]:
    """The same job for many devices: validated once (`_job`), then one dict per
    device that differs only in `device_id` (the package list is shared, and
    nothing changes a payload after it is made)."""
    if not devices:
        return []
    first = _job(deployment_id, devices[0], packages, attempt)
    return [
        first,
        *(
            Job(d.agent_id, d.id, deployment_id, {**first.payload, "device_id": d.id})
            for d in devices[1:]
        ),
    ]


def _job(
    deployment_id: int, device: Any, packages: list[Software], attempt: int
) -> Job:
    payload = protocol.InstallSoftware(
        deployment_id=deployment_id,
        device_id=device.id,
        attempt=attempt,
        software_list=[
            protocol.SoftwareItem(
                software_id=p.id,
                name=p.name,
                version=p.version,
                file_name=p.file_name,
                url=f"/packages/{p.sha256}",
                sha256=p.sha256,
                size=p.size,
                installer_type=p.installer_type,
                install_args=p.install_args,
                timeout_s=p.timeout_s,
            )
            for p in packages
        ],
    )
    return Job(
        device.agent_id, device.id, deployment_id, payload.model_dump(mode="json")
    )


def device_dict(device: Device) -> dict[str, Any]:
    return {
        "id": device.id,
        "device_id": device.id,
        "agent_id": device.agent_id,
        "hostname": device.hostname,
        "platform": device.platform,
        "os_version": device.os_version,
        "agent_version": device.agent_version,
        "ip": device.ip,
        "mac": device.mac,
        "online": device.online,
        "last_seen": iso(device.last_seen),
    }


def software_dict(software: Software) -> dict[str, Any]:
    return {
        "id": software.id,
        "name": software.name,
        "version": software.version,
        "file_name": software.file_name,
        "sha256": software.sha256,
        "size": software.size,
        "installer_type": software.installer_type,
        "install_args": software.install_args,
        "timeout_s": software.timeout_s,
        "added_at": iso(software.added_at),
    }


def target_dict(target: DeploymentTarget, *, raw: bool = False) -> dict[str, Any]:
    """The target's columns; timestamps as ISO text, or as datetimes with `raw`."""
    stamp = (lambda value: value) if raw else iso
    return {
        "id": target.id,
        "deployment_id": target.deployment_id,
        "device_id": target.device_id,
        "status": target.status,
        "progress_percent": target.progress_percent,
        "message": target.message,
        "exit_code": target.exit_code,
        "reboot_required": target.reboot_required,
        "started_at": stamp(target.started_at),
        "completed_at": stamp(target.completed_at),
        "log_tail": target.log_tail,
        "attempt": target.attempt,
    }


def target_update(
    target: DeploymentTarget, agent_status: str | None = None
) -> dict[str, Any]:
    """The `software_deployment_update` payload for a target (plus extra fields:
    exit code, reboot, attempt, and `agent_status`, the agent's own word)."""
    return {
        "deployment_id": target.deployment_id,
        "device_id": target.device_id,
        "status": target.status,
        "progress": target.progress_percent,
        "message": target.message,
        "exit_code": target.exit_code,
        "reboot_required": target.reboot_required,
        "attempt": target.attempt,
        "agent_status": agent_status,
    }


def _deployment_columns(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.id,
        "deployment_name": deployment.deployment_name,
        "status": deployment.status,
        "created_at": iso(deployment.created_at),
        "started_at": iso(deployment.started_at),
        "completed_at": iso(deployment.completed_at),
    }


def _new_target_dict(
    columns: dict[str, Any], target_id: int, device_id: int
) -> dict[str, Any]:
    """`target_dict` of a target just inserted with `columns`."""
    return {
        "id": target_id,
        "deployment_id": columns["deployment_id"],
        "device_id": device_id,
        "status": columns["status"],
        "progress_percent": columns["progress_percent"],
        "message": columns["message"],
        "exit_code": None,
        "reboot_required": None,
        "started_at": None,
        "completed_at": None,
        "log_tail": None,
        "attempt": columns["attempt"],
    }


async def _deployment_dict(
    session: AsyncSession, deployment: Deployment, *, with_targets: bool
) -> dict[str, Any]:
    counts, progress = await _counts(session, deployment.id)
    software_ids = await session.scalars(
        select(DeploymentSoftware.software_id)
        .where(DeploymentSoftware.deployment_id == deployment.id)
        .order_by(DeploymentSoftware.position)
    )
    result: dict[str, Any] = {
        **_deployment_columns(deployment),
        "software_ids": list(software_ids),
        "counts": counts,
        "progress": progress,
    }
    if with_targets:
        rows = await session.execute(
            select(DeploymentTarget, Device.hostname)
            .join(Device, Device.id == DeploymentTarget.device_id)
            .where(DeploymentTarget.deployment_id == deployment.id)
            .order_by(Device.hostname, DeploymentTarget.id)
        )
        result["targets"] = [
            {**target_dict(t), "hostname": hostname} for t, hostname in rows
        ]
    return result
