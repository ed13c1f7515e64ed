"""How a target's state reads in the window: "downloading 40%", "failed 1603", ...

Pure functions over the server's payloads, no Qt, so the wording is tested once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol import AgentStatus, TargetStatus


class Tone(StrEnum):
    """How the progress bar is coloured."""

    IDLE = "idle"
    WAITING = "waiting"
    ACTIVE = "active"
    SUCCESS = "success"
    WARNING = "warning"
    FAILED = "failed"


_TARGET_STATUSES = {status.value: status for status in TargetStatus}
_AGENT_STATUSES = {status.value: status for status in AgentStatus}
"""Enum members by value: a dict lookup, where `TargetStatus(value)` costs a few
microseconds per report (thousands a second with a big fleet)."""


@dataclass(frozen=True, slots=True)
class TargetState:
    """The latest known state of one device within one deployment."""

    deployment_id: int
    status: TargetStatus
    progress: float = 0.0
    message: str = ""
    agent_status: AgentStatus | None = None
    exit_code: int | None = None
    reboot_required: bool = False

    @classmethod
    def from_update(cls, payload: dict[str, Any]) -> TargetState:
        """Build from a `software_deployment_update` payload or a target row.

        Reads the contract's fields plus the optional `agent_status`, `exit_code`
        and `reboot_required` a server may add; target rows (GET /api/deployments)
        name the progress `progress_percent`.
        """
        agent_status = payload.get("agent_status")
        progress = payload.get("progress", payload.get("progress_percent")) or 0.0
        status = payload["status"]
        return cls(
            int(payload["deployment_id"]),
            _TARGET_STATUSES.get(status) or TargetStatus(status),  # raises if unknown
            float(progress),
            payload.get("message") or "",
            (_AGENT_STATUSES.get(agent_status) or AgentStatus(agent_status))
            if agent_status
            else None,
            payload.get("exit_code"),
            bool(payload.get("reboot_required")),
        )

    def merged(self, newer: TargetState) -> TargetState:
        """`newer`, keeping details an update left out (exit code, reboot flag)."""
        if newer.deployment_id != self.deployment_id:
            return newer
        return TargetState(
            deployment_id=newer.deployment_id,
            status=newer.status,
            progress=newer.progress,
            message=newer.message or self.message,
            agent_status=newer.agent_status or self.agent_status,
            exit_code=self.exit_code if newer.exit_code is None else newer.exit_code,
            reboot_required=newer.reboot_required or self.reboot_required,
        )


def describe(state: TargetState | None, *, online: bool = True) -> tuple[str, Tone]:
    """The text drawn on a progress bar and the bar's tone."""
    if state is None:
        return "", Tone.IDLE

    status = state.status
    if status is TargetStatus.PENDING:
        if not online or "waiting" in state.message.lower():
            return "waiting for agent", Tone.WAITING
        return "queued", Tone.WAITING
    if status is TargetStatus.IN_PROGRESS:
        return _active_text(state), Tone.ACTIVE
    if status is TargetStatus.SUCCESS:
        if state.reboot_required:
            return "reboot required", Tone.WARNING
        return "success", Tone.SUCCESS
    if status is TargetStatus.FAILED:
        if state.exit_code is not None:
            return f"failed {state.exit_code}", Tone.FAILED
        return "failed", Tone.FAILED
    return "cancelled", Tone.IDLE


def _active_text(state: TargetState) -> str:
    percent = f"{state.progress:.0f}%"
    phase = state.agent_status
    if phase is None:
        # Download is the first half of a package's share, installing the second.
        phase = (
            AgentStatus.DOWNLOADING if state.progress < 50 else AgentStatus.INSTALLING
        )
    if phase is AgentStatus.DOWNLOADING:
        return f"downloading {percent}"
    if phase is AgentStatus.INSTALLING:
        return f"installing {percent}"
    return f"starting {percent}"


def deployment_text(status: str, progress: float) -> tuple[str, Tone]:
    """The text and tone of a whole deployment's bar."""
    tones = {
        "pending": Tone.WAITING,
        "in_progress": Tone.ACTIVE,
        "completed": Tone.SUCCESS,
        "failed": Tone.FAILED,
        "cancelled": Tone.IDLE,
    }
    tone = tones.get(status, Tone.IDLE)
    if tone is Tone.ACTIVE:
        return f"{progress:.0f}%", tone
    return status.replace("_", " "), tone
