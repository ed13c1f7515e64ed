"""The agent's connection: connect forever, register, take orders, deliver reports.

python-socketio gives up when the very first connection fails, so the client's own
reconnection is off and `Agent.run` owns the loop: connect, register, serve until the
connection drops, back off (jittered, exponential), again — forever. A refused token
is logged clearly and retried slowly.

Reports leave through one ordered outbox, and only while registered. Final statuses
are sent with an acknowledgement; one that was not acknowledged stays marked in the
job file and is sent again after the next registration.

Jobs left queued by an earlier run start only after a registration; when the
server's answer lists the deployments still open for this device
(`open_deployments`, added to the contract), queued jobs for any other deployment
are dropped (see `JobRunner.on_registered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any
from urllib.parse import urlsplit

import socketio
from socketio import exceptions as sio_errors

from agent.config import AgentConfig
from agent.inventory import inventory
from agent.jobs import JobRunner
from protocol import (
    AGENT_REGISTER,
    CANCEL_DEPLOYMENT,
    INSTALL_SOFTWARE,
    REGISTRATION_SUCCESS,
    SOFTWARE_DOWNLOAD_PROGRESS,
    SOFTWARE_INSTALLATION_STATUS,
    STALE_ATTEMPT,
    TARGET_FINISHED,
    CancelDeployment,
    InstallSoftware,
    PayloadError,
    ack_error,
    ack_ok,
    parse_payload,
)

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 15.0

# Refusals of a final status that are expected, not faults: the technician cancelled
# or retried the target while this report was on its way. Servers before the `code`
# field said so only in the text.
_EXPECTED_CODES = (TARGET_FINISHED, STALE_ATTEMPT)
_EXPECTED_TEXTS = ("already finished", "earlier attempt")


def backoff_delay(failures: int, *, base: float, cap: float) -> float:
    """Jittered exponential back-off: somewhere in [half, full] of base*2^n, capped."""
    return min(cap, base * 2 ** max(0, failures - 1)) * random.uniform(0.5, 1.0)


class Agent:
    """One agent: its job runner and its connection to the server."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.device_id: int | None = None
        self.runner = JobRunner(
            config,
            on_status=self._queue_status,
            on_download_progress=self._queue_progress,
        )
        self._sio = socketio.AsyncClient(reconnection=False, logger=False)
        self._registered = False
        self._disconnected = asyncio.Event()
        self._refusal: str | None = None
        self._outbox: asyncio.Queue[tuple[str, dict[str, Any], bool]] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._install_handlers()

    # --- main loop ------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled: the job worker, the outbox and the connect loop."""
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self.runner.recover()
        worker = asyncio.create_task(self.runner.run(), name="job-worker")
        sender = asyncio.create_task(self._send_outbox(), name="outbox")
        try:
            await self._connect_forever()
        finally:
            worker.cancel()
            sender.cancel()
            for task in (worker, sender):
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            with contextlib.suppress(Exception):  # best effort on the way out
                await asyncio.shield(self._sio.disconnect())

    async def _connect_forever(self) -> None:
        failures = 0
        refusals = 0
        url = self.config.server_url
        while True:
            self._refusal = None
            self._disconnected.clear()
            try:
                await self._sio.connect(
                    url,
                    auth={"role": "agent", "token": self.config.token},
                    wait_timeout=10,
                )
            except sio_errors.ConnectionError as exc:
                if self._refusal is not None:
                    refusals += 1
                    delay = backoff_delay(
                        refusals, base=30.0, cap=self.config.refused_backoff_cap_s
                    )
                    log.error(
                        "the server at %s refused this agent: %s; retrying in %.0f s",
                        url,
                        self._refusal,
                        delay,
                    )
                else:
                    failures += 1
                    delay = backoff_delay(
                        failures, base=1.0, cap=self.config.connect_backoff_cap_s
                    )
                    level = logging.INFO if failures < 4 else logging.WARNING
                    log.log(
                        level,
                        "cannot reach the server at %s (%s); retrying in %.1f s",
                        url,
                        exc,
                        delay,
                    )
                await asyncio.sleep(delay)
                continue

            if await self._register():
                failures = refusals = 0
                await self._disconnected.wait()
                log.info("connection to %s lost; reconnecting", url)
                delay = backoff_delay(
                    1, base=1.0, cap=self.config.connect_backoff_cap_s
                )
            else:
                failures += 1
                delay = backoff_delay(
                    failures, base=5.0, cap=self.config.connect_backoff_cap_s
                )
                with contextlib.suppress(Exception):  # already gone is fine
                    await self._sio.disconnect()
            self._registered = False
            await asyncio.sleep(delay)

    async def _register(self) -> bool:
        host = urlsplit(self.config.server_url).hostname
        loop = asyncio.get_running_loop()
        payload = await loop.run_in_executor(
            None, inventory, self.config.agent_id, host, self.config.hostname
        )
        waiting = self.runner.queued_keys()
        try:
            ack = await self._sio.call(
                AGENT_REGISTER, payload, timeout=self.config.register_timeout_s
            )
        except (sio_errors.TimeoutError, sio_errors.SocketIOError) as exc:
            log.warning("registration got no answer (%s)", exc or type(exc).__name__)
            return False
        if not isinstance(ack, dict) or not ack.get("ok"):
            error = ack.get("error") if isinstance(ack, dict) else ack
            log.error("the server refused the registration: %s", error)
            return False

        self.device_id = ack.get("device_id")
        log.info(
            "registered with %s as %s (device %s)",
            self.config.server_url,
            self.config.agent_id,
            self.device_id,
        )
        self._registered = True
        self._drain_outbox()
        self.runner.on_registered(_open_deployments(ack), waiting)
        for report, final in self.runner.pending_reports():
            self._outbox.put_nowait((SOFTWARE_INSTALLATION_STATUS, report, final))
        return True

    # --- inbound --------------------------------------------------------------

    def _install_handlers(self) -> None:
        sio = self._sio

        @sio.event
        async def connect_error(data: Any = None) -> None:
            reason = data.get("message") if isinstance(data, dict) else data
            # Only a namespace refusal sets this; network failures raise plainly.
            if self._sio.eio.state == "connected":
                self._refusal = str(reason or "connection refused")

        @sio.event
        async def disconnect(*_reason: Any) -> None:
            self._registered = False
            self._disconnected.set()

        @sio.on(REGISTRATION_SUCCESS)
        async def on_registration_success(data: Any = None) -> None:
            log.debug("registration_success: %s", data)

        @sio.on(INSTALL_SOFTWARE)
        async def on_install_software(data: Any = None) -> dict[str, Any]:
            try:
                order = parse_payload(InstallSoftware, data)
            except PayloadError as exc:
                log.warning("refused install_software: %s", exc)
                return ack_error(str(exc))
            if self.device_id is not None and order.device_id != self.device_id:
                log.warning(
                    "refused install_software for device %s (this is device %s)",
                    order.device_id,
                    self.device_id,
                )
                return ack_error("this job is for another device")
            self.runner.submit(order)
            return ack_ok()

        @sio.on(CANCEL_DEPLOYMENT)
        async def on_cancel_deployment(data: Any = None) -> dict[str, Any]:
            try:
                order = parse_payload(CancelDeployment, data)
            except PayloadError as exc:
                log.warning("refused cancel_deployment: %s", exc)
                return ack_error(str(exc))
            self.runner.cancel(order)
            return ack_ok()

    # --- outbound -------------------------------------------------------------

    def _queue_status(self, payload: dict[str, Any], final: bool) -> None:
        # Not registered: nothing is queued; the job file has the state, and
        # `pending_reports` sends it after the next registration.
        if self._registered:
            self._outbox.put_nowait((SOFTWARE_INSTALLATION_STATUS, payload, final))

    def _queue_progress(self, payload: dict[str, Any]) -> None:
        if self._registered:
            self._outbox.put_nowait((SOFTWARE_DOWNLOAD_PROGRESS, payload, False))

    def _drain_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _send_outbox(self) -> None:
        while True:
            event, payload, final = await self._outbox.get()
            if not self._registered:
                continue  # stale; finals are resent from the job file
            try:
                if final:
                    ack = await self._sio.call(event, payload, timeout=ACK_TIMEOUT_S)
                    if isinstance(ack, dict) and ack.get("ok") is False:
                        error = str(ack.get("error"))
                        expected = ack.get("code") in _EXPECTED_CODES or any(
                            t in error.lower() for t in _EXPECTED_TEXTS
                        )
                        log.log(
                            logging.INFO if expected else logging.WARNING,
                            "server refused the status of deployment %s: %s",
                            payload.get("deployment_id"),
                            error,
                        )
                    self.runner.mark_reported(payload)
                else:
                    await self._sio.emit(event, payload)
            except (sio_errors.TimeoutError, sio_errors.SocketIOError) as exc:
                log.debug("could not send %s now (%s); will resend", event, exc)


def _open_deployments(ack: dict[str, Any]) -> set[int] | None:
    """The registration answer's `open_deployments`, or None when it has none (an
    older server) or it is not a list of deployment ids."""
    value = ack.get("open_deployments")
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        log.warning("ignored open_deployments in the registration answer: not ids")
        return None
    return set(value)
