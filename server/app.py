"""`DeployServer`: the whole server as one object, embedded or headless."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import socketio
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from server import db
from server.config import ServerConfig
from server.errors import DataDirError, EnvironmentFault, PortInUseError
from server.gateway import AgentGateway, Listener
from server.http_api import setup_routes
from server.packages import PackageStore, Progress
from server.registry import AgentRegistry, InMemoryAgentRegistry, RedisAgentRegistry
from server.repository import Change, Repository
from server.sockets import (
    CheckedPacket,
    IndexedRedisManager,
    LibraryLog,
    LocalManager,
    WireJson,
)
from server.tokens import Tokens, load_tokens, new_token, store_enrollment_token

log = logging.getLogger(__name__)

MAX_SOCKET_MESSAGE = 1_000_000


class DeployServer:
    """Socket.IO + HTTP server, deployment executor and data, in one object.

    Everything runs on the asyncio loop that calls `start()` (in the console that is
    also the Qt loop); slow work (hashing, copying, queries) never blocks it.
    Interface (the console, the demo, the CLI and the benchmarks use these names)::

        server = DeployServer(ServerConfig(port=0, data_dir=tmp))
        await server.start()          # raises PortInUseError, DataDirError,
                                      # DatabaseTooNewError
        server.port, server.url       # after start; url is "http://127.0.0.1:<port>"
                                      # when listening on all addresses
        server.enrollment_token, server.admin_token
        unsubscribe = server.add_listener(fn)   # fn(event, payload) on the loop,
                                      # after the change is persisted, for every event
                                      # sent to room "consoles"
        await server.list_devices() / list_software() / list_deployments(limit=200)
        await server.add_software(path, name=..., version=..., installer_type=...,
                                  install_args="", timeout_s=3600, file_name=None,
                                  progress=None) -> dict
        await server.create_deployment(software_ids, device_ids,
                                       deployment_name=None) -> dict  # with targets
        await server.get_deployment(id) / cancel_deployment(id) / retry_deployment(id)
        await server.regenerate_enrollment_token() -> str
        await server.stop()           # agents see a clean disconnect; DB disposed

    Errors the caller should show a person are `server.errors.ServerError`s.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config = config or ServerConfig()
        self.port: int | None = None
        self.packages = PackageStore(self.config.packages_dir)
        self._tokens: Tokens | None = None
        self._engine: AsyncEngine | None = None
        self._runner: web.AppRunner | None = None
        self._registry: AgentRegistry | None = None
        self._repository: Repository | None = None
        self._gateway: AgentGateway | None = None
        self._sio: socketio.AsyncServer | None = None

    # --- properties -----------------------------------------------------------

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def enrollment_token(self) -> str:
        return self._require(self._tokens).enrollment

    @property
    def admin_token(self) -> str:
        return self._require(self._tokens).admin

    @property
    def tokens_generated(self) -> bool:
        """True if a token was generated at this start (show it to the person once)."""
        return self._require(self._tokens).generated

    @property
    def repository(self) -> Repository:
        return self._require(self._repository)

    @property
    def gateway(self) -> AgentGateway:
        return self._require(self._gateway)

    @staticmethod
    def _require(value):
        if value is None:
            raise RuntimeError("the server is not started")
        return value

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Prepare the data folder and database, then listen."""
        config = self.config
        loop = asyncio.get_running_loop()
        self._tokens = await loop.run_in_executor(None, self._prepare_data_dir)
        try:
            self._engine = db.create_engine(
                config.resolved_database_url(),
                busy_timeout_ms=config.sqlite_busy_timeout_ms,
            )
            await db.migrate(self._engine)
            self._repository = Repository(db.session_factory(self._engine))
            if config.redis_url:
                self._registry = RedisAgentRegistry(
                    config.redis_url, prefix=f"{config.redis_channel}:"
                )
                manager = IndexedRedisManager(
                    config.redis_url, channel=config.redis_channel
                )
            else:
                self._registry = InMemoryAgentRegistry()
                manager = None
                # TODO(scale-out): with Redis, other servers' agents are online;
                # devices of a crashed server stay "online" until they reconnect.
                await self._repository.mark_all_offline()
            self._sio = socketio.AsyncServer(
                async_mode="aiohttp",
                client_manager=manager or LocalManager(),
                max_http_buffer_size=MAX_SOCKET_MESSAGE,
                serializer=CheckedPacket,
                json=WireJson,
                # One event at a time per connection: a report's handler waits
                # for its batch to be written, and the agent's next packet is not
                # read until then. Work in flight is bounded by the number of
                # agents, and a server fed faster than it can write slows its
                # agents down instead of queueing tasks until nothing is answered.
                async_handlers=False,
                logger=LibraryLog(),
                engineio_logger=LibraryLog(),
            )
            self._gateway = AgentGateway(
                self._sio,
                self._registry,
                self._repository,
                self._tokens,
                # TODO(scale-out): in-memory ingestion needs one process per
                # database; with Redis each report is its own transaction.
                ingest_interval=None if manager else config.status_write_interval_s,
            )
            app = web.Application(client_max_size=MAX_SOCKET_MESSAGE)
            self._sio.attach(app)
            setup_routes(app, self)
            if manager is not None:
                # Start the Redis listener now rather than at the first connection.
                self._sio.manager_initialized = True
                manager.initialize()
                await _wait_subscribed(manager, config.redis_url)
            await self._listen(app)
        except BaseException:
            await self._close()
            raise
        log.info(
            "server listening on %s (data in %s; %s event loop)",
            self.url,
            config.data_dir,
            type(asyncio.get_running_loop()).__module__.split(".")[0],
        )

    def _prepare_data_dir(self) -> Tokens:
        """Create and check the data folder; load the tokens (blocking, executor)."""
        data_dir = self.config.data_dir
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            probe = data_dir / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            self.packages.prepare()
        except OSError as exc:
            raise DataDirError(
                f"The data folder {data_dir} cannot be used: {exc.strerror or exc}"
            ) from exc
        return load_tokens(
            data_dir, self.config.enrollment_token, self.config.admin_token
        )

    async def _listen(self, app: web.Application) -> None:
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"Port {self.config.port} is already used by another program; "
                    "choose another port."
                ) from exc
            raise
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop in order; every report acknowledged before is in the database.

        New connections and events are refused, handlers in flight finish (their
        reports written and acknowledged), everyone is disconnected, background
        tasks end, the status writer writes what is left, and only then are the
        listener and the database closed.
        """
        if self._gateway is not None:
            await self._gateway.close()
        await self._close()
        log.info("server stopped")

    async def _close(self) -> None:
        if self._gateway is not None:
            await self._gateway.cancel_tasks()
            if self._gateway.ingest is not None:
                await self._gateway.ingest.stop()
        if self._sio is not None:
            await self._sio.shutdown()
            manager = self._sio.manager
            if isinstance(manager, socketio.AsyncRedisManager):
                await _close_redis_manager(manager)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._registry is not None:
            await self._registry.close()
        if self._engine is not None:
            await self._engine.dispose()
        self._gateway = self._sio = self._runner = None
        self._registry = self._engine = None

    # --- the in-process interface ---------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event, payload)` for every update sent to the consoles."""
        return self.gateway.add_listener(listener)

    async def list_devices(self) -> list[dict[str, Any]]:
        return await self.repository.list_devices()

    async def list_software(self) -> list[dict[str, Any]]:
        return await self.repository.list_software()

    async def add_software(
        self,
        path: str | Path,
        *,
        name: str,
        version: str = "",
        installer_type: str,
        install_args: str = "",
        timeout_s: int = 3600,
        file_name: str | None = None,
        progress: Progress | None = None,
        move: bool = False,
    ) -> dict[str, Any]:
        """Copy the installer into the package store and add it to the library.

        Hashing and copying run in an executor; `progress(fraction)` is called on
        the loop. `move=True` takes over a temporary file of the store (uploads).
        """
        path = Path(path)
        sha256, size = await self.packages.add(path, move=move, progress=progress)
        software = await self.repository.add_software(
            name=name,
            version=version,
            file_name=file_name or path.name,
            sha256=sha256,
            size=size,
            installer_type=str(installer_type),
            install_args=install_args,
            timeout_s=timeout_s,
        )
        log.info(
            "package %s %s added (%s, %d bytes) as software %s",
            name,
            version,
            sha256[:12],
            size,
            software["id"],
        )
        return software

    async def create_deployment(
        self,
        software_ids: Iterable[int],
        device_ids: Iterable[int],
        deployment_name: str | None = None,
    ) -> dict[str, Any]:
        """Store the deployment (one transaction), send each connected agent its
        job, tell the consoles, and return the deployment; the targets are marked
        "sent to agent" right after, in a task (`wait_idle` waits for it).

        Targets whose agent is not connected wait, and are sent at registration.
        The jobs go out before the consoles hear of the deployment (the agents
        should not wait for thousands of console updates), and the deployment's
        reports wait until they have: no "pending" overtakes a target's progress.
        """
        deployment, jobs = await self.repository.create_deployment(
            software_ids, device_ids, deployment_name
        )
        async with self._holding(deployment["id"], flush=False, forget=False):
            sent = await self.gateway.emit_jobs(jobs)
            await self.gateway.publish_change(self._initial_updates(deployment))
        self.gateway.spawn(self.gateway.mark_sent(sent))
        return deployment

    def _initial_updates(self, deployment: dict[str, Any]) -> Change:
        """What consoles hear about a deployment that was just stored."""
        fields = ("device_id", "status", "message", "exit_code", "reboot_required")
        return Change(
            target_updates=[
                {
                    "deployment_id": deployment["id"],
                    **{name: t[name] for name in fields},
                    "progress": t["progress_percent"],
                    "attempt": t["attempt"],
                }
                for t in deployment["targets"]
            ],
            deployment_updates=[
                {
                    "deployment_id": deployment["id"],
                    "deployment_name": deployment["deployment_name"],
                    "status": deployment["status"],
                    "progress": deployment["progress"],
                    "counts": deployment["counts"],
                }
            ],
        )

    def _holding(
        self, deployment_id: int, *, flush: bool = True, forget: bool = True
    ) -> contextlib.AbstractAsyncContextManager:
        """Reports of this deployment wait while inside. By default for a change
        of its rows in one transaction: their in-memory copy is written first and
        reloaded afterwards (`StatusIngest.holding`)."""
        ingest = self.gateway.ingest
        if ingest is None:
            return contextlib.nullcontext()
        return ingest.holding(deployment_id, flush=flush, forget=forget)

    async def get_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self.repository.get_deployment(deployment_id)

    async def list_deployments(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self.repository.list_deployments(limit)

    async def cancel_deployment(self, deployment_id: int) -> dict[str, Any]:
        async with self._holding(deployment_id):
            deployment, change = await self.repository.cancel_deployment(deployment_id)
        await self.gateway.send_cancel(deployment_id, change)
        await self.gateway.publish_change(change)
        return deployment

    async def retry_deployment(self, deployment_id: int) -> dict[str, Any]:
        async with self._holding(deployment_id):
            _, change, jobs = await self.repository.retry_deployment(deployment_id)
        await self.gateway.publish_change(change)
        await self.gateway.send_jobs(jobs)
        return await self.repository.get_deployment(deployment_id)

    async def regenerate_enrollment_token(self) -> str:
        """A new enrollment token, stored; agents connected now stay connected."""
        tokens = self._require(self._tokens)
        token = new_token()
        await asyncio.get_running_loop().run_in_executor(
            None, store_enrollment_token, self.config.data_dir, token
        )
        tokens.enrollment = token
        log.info("enrollment token regenerated")
        return token

    async def wait_idle(self) -> None:
        """Wait for background work (jobs sent after a registration); for tests."""
        await self.gateway.wait_idle()


async def _wait_subscribed(manager: socketio.AsyncRedisManager, url: str) -> None:
    """Wait until the manager listens on its channel, so no early emit is lost.

    python-socketio subscribes in a background task and offers no event for it; we
    look at its pub/sub state on each loop turn for at most ten seconds.
    """
    # TODO(scale-out): replace the polling once python-socketio exposes readiness.
    try:
        async with asyncio.timeout(10):
            # No event to wait on (see above), so look again each 10 ms.
            while manager.pubsub is None or not manager.pubsub.subscribed:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise EnvironmentFault(f"Cannot reach Redis at {url}.") from None


async def _close_redis_manager(manager: socketio.AsyncRedisManager) -> None:
    """Stop the Redis listener task python-socketio started for this server."""
    # TODO(scale-out): python-socketio has no public close for the manager's
    # listener; cancel its task and close its connection ourselves.
    task = getattr(manager, "thread", None)
    if isinstance(task, asyncio.Task):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for attr in ("pubsub", "redis"):
        conn = getattr(manager, attr, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.aclose()
