"""The wire contract between server, agents and consoles: events, payloads, statuses.

This is the one place where event names and payload shapes are defined. `server/`,
`agent/` and `console/` import it; it imports nothing of theirs and nothing of Qt.
Every inbound payload is parsed with one of the models below at the boundary
(`parse_payload`), so a handler only ever sees a valid, size-bounded object.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
)

PROTOCOL_VERSION = 1

# --- event names -------------------------------------------------------------

# agent -> server
AGENT_REGISTER = "agent_register"
JOIN_ROOM = "join_room"
SOFTWARE_INSTALLATION_STATUS = "software_installation_status"
SOFTWARE_DOWNLOAD_PROGRESS = "software_download_progress"

# server -> agent (to room <agent_id>)
REGISTRATION_SUCCESS = "registration_success"
INSTALL_SOFTWARE = "install_software"
CANCEL_DEPLOYMENT = "cancel_deployment"

# server -> consoles (room "consoles")
CONSOLES_ROOM = "consoles"
SOFTWARE_DEPLOYMENT_UPDATE = "software_deployment_update"
DEVICE_UPDATE = "device_update"
DEPLOYMENT_UPDATE = "deployment_update"

# --- statuses ----------------------------------------------------------------


class AgentStatus(StrEnum):
    """What an agent reports in `software_installation_status`."""

    IN_PROGRESS = "in_progress"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    COMPLETED = "completed"
    FAILED = "failed"


class TargetStatus(StrEnum):
    """The state of one device within one deployment (`deployment_targets.status`)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_TARGET


_TERMINAL_TARGET = frozenset(
    {TargetStatus.SUCCESS, TargetStatus.FAILED, TargetStatus.CANCELLED}
)


class DeploymentStatus(StrEnum):
    """The state of a whole deployment (`deployments.status`)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class InstallerType(StrEnum):
    MSI = "msi"
    EXE = "exe"
    SCRIPT = "script"
    ZIP = "zip"


class Platform(StrEnum):
    WINDOWS = "windows"
    LINUX = "linux"
    MACOS = "macos"


def target_status_for(status: AgentStatus, failed: int | None = None) -> TargetStatus:
    """Map an agent's reported status to the target status DESIGN.md prescribes."""
    if status is AgentStatus.COMPLETED:
        return TargetStatus.FAILED if (failed or 0) > 0 else TargetStatus.SUCCESS
    if status is AgentStatus.FAILED:
        return TargetStatus.FAILED
    return TargetStatus.IN_PROGRESS


# --- bounded field types -----------------------------------------------------

MAX_ID = 128
MAX_NAME = 255
MAX_MESSAGE = 4000
MAX_ARGS = 2000

Ident = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=MAX_ID, pattern=r"^[\w.:-]+$"
    ),
]
"""An agent id or room name: letters, digits, `_ . : -`, at most 128 characters."""

_CONTROL = dict.fromkeys([*range(0x20), 0x7F], " ")
_NUL = {0: "\ufffd"}


def _single_line(value: str) -> str:
    """Control characters (newlines, NUL, escapes) become spaces: a host name or a
    package name can then neither forge a log line nor upset a database."""
    return value.translate(_CONTROL)


def _no_nul(value: str) -> str:
    """NUL becomes U+FFFD: PostgreSQL cannot store it; a message keeps its lines."""
    return value.translate(_NUL)


def _not_bool(value: Any) -> Any:
    """JSON `true` is not the number 1 (pydantic would take it as one)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


ShortText = Annotated[
    str, StringConstraints(max_length=MAX_NAME), AfterValidator(_single_line)
]
"""A single-line name: at most 255 characters, control characters made spaces."""
Message = Annotated[
    str, StringConstraints(max_length=MAX_MESSAGE), AfterValidator(_no_nul)
]
"""Free text of several lines (a status message, an installer's log tail)."""
PositiveId = Annotated[int, Strict(), Field(ge=1, le=2**53)]
"""A database id: a JSON integer, never a string, float or boolean."""
Percent = Annotated[float, BeforeValidator(_not_bool), Field(ge=0, le=100)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Payload(BaseModel):
    """Base of every payload: unknown fields are kept (others may add fields)."""

    model_config = ConfigDict(extra="allow", frozen=True, str_max_length=MAX_MESSAGE)


# --- agent -> server ---------------------------------------------------------


class AgentRegister(_Payload):
    agent_id: Ident
    hostname: ShortText = Field(min_length=1)
    platform: Platform
    os_version: ShortText = ""
    agent_version: ShortText = ""
    ip: ShortText | None = None
    mac: ShortText | None = None


class JoinRoom(_Payload):
    room: Ident


class InstallationStatus(_Payload):
    deployment_id: PositiveId
    device_id: PositiveId
    status: AgentStatus
    progress: Percent = 0
    message: Message | None = None
    software_name: ShortText | None = None
    completed: Annotated[int, Strict(), Field(ge=0, le=10_000)] | None = None
    failed: Annotated[int, Strict(), Field(ge=0, le=10_000)] | None = None
    exit_code: Annotated[int, Strict(), Field(ge=-(2**31), le=2**32)] | None = None
    reboot_required: bool | None = None
    log_tail: Message | None = None
    """Added to the contract: the installer's last output lines on failure."""
    attempt: Annotated[int, Strict(), Field(ge=1, le=10_000)] | None = None
    """Added to the contract: the `attempt` of the job this report is about; a
    report for an earlier attempt (before a retry) is refused."""


class DownloadProgress(_Payload):
    deployment_id: PositiveId
    device_id: PositiveId
    software_name: ShortText
    progress: Percent
    attempt: Annotated[int, Strict(), Field(ge=1, le=10_000)] | None = None


# --- server -> agent ---------------------------------------------------------


class RegistrationAnswer(_Payload):
    """The acknowledgement of `agent_register` (also sent as `registration_success`)."""

    ok: bool = True
    agent_id: Ident
    device_id: PositiveId
    room: Ident
    open_deployments: list[PositiveId] = []
    """Added to the contract: the deployments with a pending or in-progress target
    for this device, read when it registered. An agent drops a job it queued for any
    other deployment without running it (it was cancelled or finished meanwhile)."""


class SoftwareItem(_Payload):
    software_id: PositiveId
    name: ShortText
    version: ShortText
    file_name: ShortText
    url: Annotated[str, StringConstraints(max_length=2048)]
    sha256: Sha256
    size: Annotated[int, Field(ge=0)]
    installer_type: InstallerType
    install_args: Annotated[str, StringConstraints(max_length=MAX_ARGS)] = ""
    timeout_s: Annotated[int, Field(ge=1, le=86_400)] = 3600


class InstallSoftware(_Payload):
    deployment_id: PositiveId
    device_id: PositiveId
    software_list: Annotated[list[SoftwareItem], Field(min_length=1, max_length=100)]
    attempt: Annotated[int, Strict(), Field(ge=1, le=10_000)] = 1
    """Added to the contract: 1, then +1 each time the technician retries a failed
    target. An agent treats (deployment_id, attempt) as the job's identity: a re-sent
    job with the same attempt is not run twice, a higher attempt is a new run."""


class CancelDeployment(_Payload):
    deployment_id: PositiveId
    device_id: PositiveId


# --- server -> consoles ------------------------------------------------------


class SoftwareDeploymentUpdate(_Payload):
    deployment_id: int
    device_id: int
    status: TargetStatus
    progress: float
    message: str | None = None
    agent_status: AgentStatus | None = None
    """Added to the contract: the agent's own status of its latest report
    (downloading, installing, ...); None before the agent reported."""
    hostname: str | None = None
    """Added to the contract: the device's hostname, when the server knows it."""


class DeviceUpdate(_Payload):
    device_id: int
    agent_id: str
    hostname: str
    online: bool
    last_seen: str | None = None


class DeploymentUpdate(_Payload):
    deployment_id: int
    status: DeploymentStatus
    progress: float
    counts: dict[str, int]


# --- acknowledgements --------------------------------------------------------


def ack_ok(**fields: Any) -> dict[str, Any]:
    """A positive acknowledgement: `{"ok": true, ...fields}`."""
    return {"ok": True, **fields}


TARGET_FINISHED = "target_finished"
"""Refusal code: a report about a target that has already finished."""
STALE_ATTEMPT = "stale_attempt"
"""Refusal code: a report about an earlier attempt of a target (before a retry)."""


def ack_error(error: str, code: str | None = None) -> dict[str, Any]:
    """A refusal: `{"ok": false, "error": "..."}`; nothing was changed.

    Added to the contract: `code` (`TARGET_FINISHED`, `STALE_ATTEMPT`) for the
    refusals a client is expected to act on; the text stays for people."""
    if code is None:
        return {"ok": False, "error": error}
    return {"ok": False, "error": error, "code": code}


class PayloadError(ValueError):
    """An inbound payload that does not fit its model; `str()` is safe to send back."""


P = TypeVar("P", bound=BaseModel)

MAX_PAYLOAD_KEYS = 64


def parse_payload(model: type[P], data: Any) -> P:
    """Validate `data` against `model`, or raise `PayloadError` with a short reason.

    The reason names the offending fields but never echoes their values back, so a
    hostile payload cannot make the server reflect megabytes of junk.
    """
    if not isinstance(data, dict):
        raise PayloadError(f"{model.__name__}: payload must be a JSON object")
    if len(data) > MAX_PAYLOAD_KEYS:
        raise PayloadError(f"{model.__name__}: too many fields")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False)[:5]:
            where = ".".join(str(p) for p in err["loc"]) or "payload"
            problems.append(f"{where}: {err['msg']}")
        raise PayloadError(f"{model.__name__}: " + "; ".join(problems)) from None


__all__ = [
    "AGENT_REGISTER",
    "CANCEL_DEPLOYMENT",
    "CONSOLES_ROOM",
    "DEPLOYMENT_UPDATE",
    "DEVICE_UPDATE",
    "INSTALL_SOFTWARE",
    "JOIN_ROOM",
    "PROTOCOL_VERSION",
    "REGISTRATION_SUCCESS",
    "SOFTWARE_DEPLOYMENT_UPDATE",
    "SOFTWARE_DOWNLOAD_PROGRESS",
    "SOFTWARE_INSTALLATION_STATUS",
    "STALE_ATTEMPT",
    "TARGET_FINISHED",
    "AgentRegister",
    "AgentStatus",
    "CancelDeployment",
    "DeploymentStatus",
    "DeploymentUpdate",
    "DeviceUpdate",
    "DownloadProgress",
    "InstallSoftware",
    "InstallationStatus",
    "InstallerType",
    "JoinRoom",
    "PayloadError",
    "Platform",
    "RegistrationAnswer",
    "SoftwareDeploymentUpdate",
    "SoftwareItem",
    "TargetStatus",
    "ack_error",
    "ack_ok",
    "parse_payload",
    "target_status_for",
]
