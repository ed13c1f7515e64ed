"""The Socket.IO side of the server: agents and consoles connect, agents report.

Every inbound event is validated with `protocol.parse_payload` and authorized against
the `AgentRegistry` before anything is read or written; a refusal is answered with
`{"ok": false, "error": ...}`, logged once, and changes nothing. Outbound, jobs go to
the agent's room and updates to room `consoles` and to in-process listeners.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

import socketio

import protocol
from protocol import ack_error, ack_ok
from server.coalesce import Coalescer
from server.errors import ServerError
from server.ingest import StatusIngest
from server.registry import AgentRegistry
from server.repository import Change, Job, Report, Repository
from server.sockets import MALFORMED, LocalManager
from server.tokens import Tokens, tokens_match

log = logging.getLogger(__name__)

_R = TypeVar("_R", protocol.InstallationStatus, protocol.DownloadProgress)

Listener = Callable[[str, dict[str, Any]], None]

STOP_GRACE_S = 10.0
"""At stop, how long handlers and background tasks in flight may take."""

MAX_SHOWN_NAME = 60
"""How much of an unknown event's name is logged and sent back."""

AGENT = "agent"
CONSOLE = "console"


class AgentGateway:
    """Handlers of the Socket.IO events, and the sending of jobs and updates.

    All methods run on the server's event loop.
    """

    def __init__(
        self,
        sio: socketio.AsyncServer,
        registry: AgentRegistry,
        repository: Repository,
        tokens: Tokens,
        ingest_interval: float | None = None,
    ) -> None:
        """`ingest_interval` set: reports go through a `StatusIngest` writing in
        batches at that pace; None: one transaction per report (scale-out)."""
        self.sio = sio
        self.registry = registry
        self.repository = repository
        self.tokens = tokens
        self._roles: dict[str, str] = {}
        self._device_ids: dict[str, int] = {}
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task] = set()
        self.ingest: StatusIngest | None = None
        # A storm of registrations (or of disconnects, when a site's network
        # drops) is written as a few transactions, not one per agent.
        self._registrations = Coalescer(
            repository.register_devices, "device-registrations"
        )
        self._departures = Coalescer(repository.mark_offline_batch, "device-departures")
        if ingest_interval is not None:
            self.ingest = StatusIngest(repository, self.publish_change, ingest_interval)
            self.ingest.start()

        self._closing = False
        self._running = 0
        self._handlers_idle = asyncio.Event()
        self._handlers_idle.set()
        self._gone_at_stop: list[str] = []

        for event, handler in (
            ("connect", self.on_connect),
            ("disconnect", self.on_disconnect),
        ):
            sio.on(event, self._counted(event, self._from_library(event, handler)))
        for event, handler in (
            (protocol.AGENT_REGISTER, self.on_agent_register),
            (protocol.JOIN_ROOM, self.on_join_room),
            (protocol.SOFTWARE_INSTALLATION_STATUS, self.on_installation_status),
            (protocol.SOFTWARE_DOWNLOAD_PROGRESS, self.on_download_progress),
            (MALFORMED, self.on_malformed),
        ):
            sio.on(event, self._counted(event, _one_payload(event, handler)))
        sio.on("*", self._counted("*", self.on_unknown_event))

    def _counted(self, event: str, handler: Callable[..., Coroutine]) -> Callable:
        """`handler`, refused once the server is stopping, and counted while it
        runs so that `stop` can wait for the ones in flight. A failure of ours
        is logged with its traceback and answered, never left to the library."""

        async def handle(*args: Any) -> Any:
            if self._closing and event != "disconnect":
                if event == "connect":
                    raise socketio.exceptions.ConnectionRefusedError(
                        "the server is stopping"
                    )
                log.debug("%s refused: stopping", event)
                return ack_error("the server is stopping; send it again later")
            self._running += 1
            self._handlers_idle.clear()
            try:
                return await handler(*args)
            except socketio.exceptions.ConnectionRefusedError:
                raise
            except Exception:
                log.exception("handling %s failed", event)
                if event == "connect":
                    raise socketio.exceptions.ConnectionRefusedError(
                        "the server failed; see its log"
                    ) from None
                return ack_error("the server failed to handle this; see its log")
            finally:
                self._running -= 1
                if not self._running:
                    self._handlers_idle.set()

        return handle

    def _from_library(self, event: str, handler: Callable[..., Coroutine]) -> Callable:
        """`handler` of "connect" or "disconnect", refused when a client sends an
        event of that name itself: python-socketio would dispatch it here. While
        the library connects or disconnects a client, it does not count it as
        connected; a client's own event comes only from a connected one."""

        async def handle(sid: str, *args: Any) -> Any:
            if self.sio.manager.is_connected(sid, "/"):
                return _refuse(sid, event, "a reserved event name")
            return await handler(sid, *args)

        return handle

    # --- connections ----------------------------------------------------------

    async def on_connect(self, sid: str, environ: dict, auth: Any = None) -> None:
        peer = _peer(environ)
        role = auth.get("role") if isinstance(auth, dict) else None
        token = auth.get("token") if isinstance(auth, dict) else None
        if role == AGENT:
            expected = self.tokens.enrollment
        elif role == CONSOLE:
            expected = self.tokens.admin
        else:
            log.warning("connection refused from %s [%s]: no valid role", peer, sid)
            raise socketio.exceptions.ConnectionRefusedError(
                'auth must be {"role": "agent" or "console", "token": ...}'
            )
        if not tokens_match(token, expected):
            log.warning(
                "connection refused from %s [%s]: wrong %s token", peer, sid, role
            )
            raise socketio.exceptions.ConnectionRefusedError(f"wrong {role} token")

        self._roles[sid] = role
        if role == CONSOLE:
            await self.sio.enter_room(sid, protocol.CONSOLES_ROOM)
        log.debug("%s connected from %s [%s]", role, peer, sid)

    async def on_disconnect(self, sid: str, reason: Any = None) -> None:
        role = self._roles.pop(sid, None)
        if role != AGENT:
            return
        agent_id = await self.registry.unbind(sid)
        if agent_id is None:
            return  # never registered, or replaced by a newer connection
        self._device_ids.pop(agent_id, None)
        if self._closing:
            self._gone_at_stop.append(agent_id)  # one write for all, in `close`
            return
        device = await self._departures.submit(agent_id)
        log.info("agent %s disconnected [%s]: %s", agent_id, sid, reason)
        if device is not None:
            await self.publish(protocol.DEVICE_UPDATE, device)

    # --- events nobody may send -------------------------------------------------

    async def on_unknown_event(self, event: str, sid: str, *args: Any) -> dict:
        return _refuse(sid, _shown(event), "unknown event")

    async def on_malformed(self, sid: str, reason: Any) -> dict[str, Any]:
        return _refuse(sid, "a malformed message", str(reason))

    # --- agent events ---------------------------------------------------------

    async def on_agent_register(self, sid: str, data: Any) -> dict[str, Any]:
        if self._roles.get(sid) != AGENT:
            return _refuse(sid, protocol.AGENT_REGISTER, "only agents register")
        try:
            reg = protocol.parse_payload(protocol.AgentRegister, data)
        except protocol.PayloadError as exc:
            return _refuse(sid, protocol.AGENT_REGISTER, str(exc))
        bound_as = await self.registry.agent_for(sid)
        if bound_as is not None and bound_as != reg.agent_id:
            return _refuse(
                sid, protocol.AGENT_REGISTER, "this connection is another agent's"
            )
        if self._names_another_room(reg.agent_id):
            # The agent's room is named after it: "consoles", or another
            # connection's sid, would put it among the consoles or another agent.
            return _refuse(
                sid,
                protocol.AGENT_REGISTER,
                "that agent_id is reserved: choose another",
            )

        epoch = self.repository.jobs_epoch
        device, jobs = await self._registrations.submit(reg)
        old_sid = await self.registry.bind(sid, reg.agent_id)
        if old_sid is not None:
            await self._close_replaced(reg.agent_id, old_sid)
        await self.sio.enter_room(sid, reg.agent_id)
        self._device_ids[reg.agent_id] = device["id"]
        log.info(
            "agent %s registered as device %s (%s) [%s]",
            reg.agent_id,
            device["id"],
            reg.hostname,
            sid,
        )

        ack = protocol.RegistrationAnswer(
            agent_id=reg.agent_id,
            device_id=device["id"],
            room=reg.agent_id,
            open_deployments=[job.deployment_id for job in jobs],
        ).model_dump()
        # The acknowledgement goes out when this handler returns; the task below
        # runs after that, so the agent hears "registered" before its jobs.
        if self.ingest is None or self.repository.jobs_epoch != epoch:
            # Jobs may have been created after our read and before this agent was
            # in its room (or, scale-out, on another server): read them again.
            jobs = None
        self.spawn(self._after_register(sid, reg.agent_id, device, ack, jobs))
        return ack

    async def _close_replaced(self, agent_id: str, old_sid: str) -> None:
        """Close the connection `agent_id` was bound to before this registration.

        The newest registration wins: the old connection no longer acts as that agent,
        so it is closed rather than left connected and bound to nothing (its agent
        would wait for jobs that never come). Its disconnect does not mark the device
        offline: the registry no longer binds it to `agent_id`. On another server
        process (scale-out) the disconnect is carried out there.

        TODO(security): agents share one enrollment token, so any holder of it can take
        over an agent id; give each device its own credential at enrollment.
        """
        log.warning(
            "agent %s registered from a second connection; the older connection "
            "[%s] was closed (two devices sharing one agent id?)",
            agent_id,
            old_sid,
        )
        await self.sio.disconnect(old_sid)

    async def _after_register(
        self, sid: str, agent_id: str, device: dict, ack: dict, jobs: list[Job] | None
    ) -> None:
        await self.sio.emit(protocol.REGISTRATION_SUCCESS, ack, to=sid)
        await self.publish(protocol.DEVICE_UPDATE, device)
        if jobs is None:
            jobs = await self.repository.jobs_for_device(device["id"])
        if jobs:
            log.info("agent %s: sending %d waiting job(s)", agent_id, len(jobs))
        await self.send_jobs(jobs)

    async def on_join_room(self, sid: str, data: Any) -> dict[str, Any]:
        try:
            request = protocol.parse_payload(protocol.JoinRoom, data)
        except protocol.PayloadError as exc:
            return _refuse(sid, protocol.JOIN_ROOM, str(exc))
        agent_id = await self.registry.agent_for(sid)
        if agent_id is None:
            return _refuse(sid, protocol.JOIN_ROOM, "register before joining a room")
        if request.room != agent_id:
            return _refuse(
                sid, protocol.JOIN_ROOM, "an agent may join only its own room"
            )

        await self.sio.enter_room(sid, request.room)
        log.debug("agent %s [%s] rooms: %s", agent_id, sid, self.sio.rooms(sid))
        return ack_ok(room=request.room)

    # TODO(server): python-socketio runs each event in a task of its own and this
    # ack is a frame of its own: the two are most of a report's cost (see
    # bench/README.md, "Profiler findings") and bound ingestion near 5,000/s.
    async def on_installation_status(self, sid: str, data: Any) -> dict[str, Any]:
        event = protocol.SOFTWARE_INSTALLATION_STATUS
        status = await self._parse_report(sid, event, protocol.InstallationStatus, data)
        if isinstance(status, dict):
            return status

        report = Report(
            deployment_id=status.deployment_id,
            device_id=status.device_id,
            status=status.status,
            progress=status.progress,
            failed=status.failed,
            message=status.message,
            exit_code=status.exit_code,
            reboot_required=status.reboot_required,
            log_tail=status.log_tail,
            attempt=status.attempt,
        )
        return await self._record(sid, event, report)

    async def on_download_progress(self, sid: str, data: Any) -> dict[str, Any]:
        event = protocol.SOFTWARE_DOWNLOAD_PROGRESS
        progress = await self._parse_report(sid, event, protocol.DownloadProgress, data)
        if isinstance(progress, dict):
            return progress

        report = Report(
            deployment_id=progress.deployment_id,
            device_id=progress.device_id,
            status=protocol.AgentStatus.DOWNLOADING,
            progress=progress.progress,
            attempt=progress.attempt,
            download_of=progress.software_name,
        )
        return await self._record(sid, event, report)

    async def _parse_report(
        self, sid: str, event: str, model: type[_R], data: Any
    ) -> _R | dict[str, Any]:
        """The validated report, or the refusal to answer with: a payload that does
        not fit `model`, or one for a device that is not this sid's agent's."""
        try:
            report = protocol.parse_payload(model, data)
        except protocol.PayloadError as exc:
            return _refuse(sid, event, str(exc))
        refusal = await self._authorize(sid, report.device_id)
        if refusal:
            return _refuse(sid, event, refusal)
        return report

    def _names_another_room(self, agent_id: str) -> bool:
        """Whether a room named `agent_id` already means something else: the
        consoles' room, or a connection's own room (python-socketio puts every
        sid in a room named after it)."""
        return agent_id == protocol.CONSOLES_ROOM or self.sio.manager.is_connected(
            agent_id, "/"
        )

    async def _authorize(self, sid: str, device_id: int) -> str | None:
        """Why `sid` may not report for `device_id`, or None if it may."""
        agent_id = await self.registry.agent_for(sid)
        if agent_id is None:
            return "register before reporting"
        if self._device_ids.get(agent_id) != device_id:
            return "that device is not this agent's"
        return None

    async def _record(self, sid: str, event: str, report: Report) -> dict[str, Any]:
        """Apply a report; acknowledge it once it is in the database."""
        if self.ingest is None:
            try:
                change = await self.repository.apply_report(report)
            except ServerError as exc:
                return _refuse(sid, event, str(exc), exc.code)
            await self.publish_change(change)
            return ack_ok()

        try:
            written = await self.ingest.submit(report)
        except ServerError as exc:
            return _refuse(sid, event, str(exc), exc.code)
        await written
        return ack_ok()

    # --- sending --------------------------------------------------------------

    async def send_jobs(self, jobs: list[Job]) -> None:
        """Send each job to its agent's room if the agent is connected.

        A job whose agent is not connected stays pending and is sent when the agent
        registers; sent ones are marked "sent to agent" for the consoles.
        """
        await self.mark_sent(await self.emit_jobs(jobs))

    async def emit_jobs(self, jobs: list[Job]) -> dict[int, list[int]]:
        """Emit the jobs of connected agents; the device ids sent to, by deployment
        (for `mark_sent`)."""
        sent: dict[int, list[int]] = {}
        online: list[Job] = []
        for job in jobs:
            if await self.registry.is_connected(job.agent_id):
                online.append(job)
                sent.setdefault(job.deployment_id, []).append(job.device_id)
            else:
                log.debug(
                    "deployment %s: agent %s offline; job waits",
                    job.deployment_id,
                    job.agent_id,
                )
        await self._emit_each(
            (protocol.INSTALL_SOFTWARE, job.payload, job.agent_id) for job in online
        )
        if online:
            log.debug("%d job(s) sent", len(online))
        return sent

    async def mark_sent(self, sent: dict[int, list[int]]) -> None:
        """Note "sent to agent" on the still-pending targets `emit_jobs` sent."""
        for deployment_id, device_ids in sent.items():
            if self.ingest is not None:
                await self.ingest.mark_sent(deployment_id, device_ids)
            else:
                await self.publish_change(
                    await self.repository.mark_sent(deployment_id, device_ids)
                )

    async def send_cancel(self, deployment_id: int, change: Change) -> None:
        for agent_id, device_id in change.cancelled:
            await self.sio.emit(
                protocol.CANCEL_DEPLOYMENT,
                {"deployment_id": deployment_id, "device_id": device_id},
                room=agent_id,
            )

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    async def publish(self, event: str, payload: dict[str, Any]) -> None:
        """Send an update to room `consoles` and to every in-process listener."""
        await self._publish_all(event, [payload])

    async def publish_change(self, change: Change) -> None:
        await self._publish_all(
            protocol.SOFTWARE_DEPLOYMENT_UPDATE, change.target_updates
        )
        await self._publish_all(protocol.DEPLOYMENT_UPDATE, change.deployment_updates)

    async def _emit_each(self, messages: Iterable[tuple[str, Any, str]]) -> None:
        """Emit each `(event, payload, room)`, without waiting between them.

        The local manager's emit only queues packets (`LocalManager`), so one
        after another costs nothing more. A Redis manager's emit waits for Redis:
        those go together, since one after another each would wait for a turn of
        the loop, and under a flood of reports a turn is long (the last agent of
        a big deployment would hear of its job after the first had finished).
        """
        if isinstance(self.sio.manager, LocalManager):
            for event, payload, room in messages:
                await self.sio.emit(event, payload, room=room)
            return
        await asyncio.gather(
            *(
                self.sio.emit(event, payload, room=room)
                for event, payload, room in messages
            )
        )

    async def _publish_all(self, event: str, payloads: list[dict[str, Any]]) -> None:
        """`publish` each payload, in order."""
        if not payloads:
            return
        await self._emit_each(
            (event, payload, protocol.CONSOLES_ROOM) for payload in payloads
        )
        for payload in payloads:
            for listener in list(self._listeners):
                try:
                    listener(event, payload)
                except Exception:  # a broken listener must not stop the updates
                    log.exception("listener %r failed on %s", listener, event)

    # --- lifecycle ------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        """Run `coro` as a task we hold and cancel at stop; failures are logged."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def wait_idle(self) -> None:
        """Wait until every background task started so far has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop in order: refuse new connections and events, let the handlers in
        flight finish (their reports are written and acknowledged), disconnect
        everyone, mark this server's agents offline in one write, and wait for
        the background tasks. The caller then stops the writer and the database.
        """
        self._closing = True
        await self._wait_handlers()
        for sid in list(self._roles):
            await self.sio.disconnect(sid)
        await self._wait_handlers()
        await self._registrations.drain()
        await self._departures.drain()
        if self._gone_at_stop:
            await self.repository.mark_offline_batch(self._gone_at_stop)
            self._gone_at_stop.clear()
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await self.wait_idle()
        except TimeoutError:
            log.warning("stopping: %d background task(s) cancelled", len(self._tasks))
            await self.cancel_tasks()

    async def _wait_handlers(self) -> None:
        try:
            async with asyncio.timeout(STOP_GRACE_S):
                await self._handlers_idle.wait()
        except TimeoutError:
            log.warning("stopping: %d event handler(s) still running", self._running)

    async def cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _one_payload(event: str, handler: Callable[..., Coroutine]) -> Callable:
    """`handler(sid, data)` for an event that carries exactly one argument; sent
    with none or several, the event is refused instead."""

    async def handle(sid: str, *args: Any) -> Any:
        if len(args) != 1:
            return _refuse(
                sid, event, f"expected one payload argument, got {len(args)}"
            )
        return await handler(sid, args[0])

    return handle


def _shown(event: str) -> str:
    """A client's event name as it may appear in a log line or an answer."""
    return repr(event[:MAX_SHOWN_NAME])


def _refuse(
    sid: str, event: str, reason: str, code: str | None = None
) -> dict[str, Any]:
    # TODO(server): one line per refusal, without a rate limit: a client sending
    # thousands of malformed events a second floods the log (and the console's
    # activity list, which keeps the last 5,000 lines).
    log.warning("refused %s from %s: %s", event, sid, reason)
    return ack_error(reason, code)


def _peer(environ: dict) -> str:
    request = environ.get("aiohttp.request")
    return getattr(request, "remote", None) or "unknown address"
