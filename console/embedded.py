"""`EmbeddedServer`: what the console sees of the server it carries.

The console never holds a `DeployServer` itself: the server runs in a child
process (`console.server_process.ProcessServer`, what `deploy-console` uses) or on a
thread of its own (`console.server_thread.ThreadedServer`, for tests that need the
server's internals and for comparison in the benchmark). Both offer the same
interface, written here once: the properties a started server answers at once, its
listeners, and `DeployServer`'s coroutine methods, each awaited from the console's
loop and run where the server lives (`_forward`).

No Qt here: the server's child process imports this module too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import ServerConfig

log = logging.getLogger(__name__)

Listener = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class ServerInfo:
    """What the console may read about a started server without asking it."""

    port: int
    url: str
    enrollment_token: str
    admin_token: str
    tokens_generated: bool

    @classmethod
    def of(cls, server: Any) -> ServerInfo:
        """Read off a started `DeployServer` (where it runs)."""
        return cls(
            port=int(server.port or 0),
            url=server.url,
            enrollment_token=server.enrollment_token,
            admin_token=server.admin_token,
            tokens_generated=server.tokens_generated,
        )


class EmbeddedServer:
    """A `DeployServer` that runs elsewhere, awaited from the console's loop.

    Subclasses start and stop it (`start`, `stop`), run one of its coroutine
    methods by name (`_forward`) and hand its events to `_deliver` on the console
    thread. Every listener is called there, in the server's order.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._info: ServerInfo | None = None  # kept after stop, as DeployServer's
        self._running = False
        self._enrollment_token: str | None = None
        # Written on the console thread only; replaced, never changed in place, so
        # another thread may read it without a lock.
        self._listeners: tuple[Listener, ...] = ()

    # --- what the console reads -------------------------------------------------

    @property
    def port(self) -> int | None:
        return self._info.port if self._info else None

    @property
    def url(self) -> str:
        return self._require().url

    @property
    def enrollment_token(self) -> str:
        self._require()
        assert self._enrollment_token is not None
        return self._enrollment_token

    @property
    def admin_token(self) -> str:
        return self._require().admin_token

    @property
    def tokens_generated(self) -> bool:
        return self._require().tokens_generated

    @property
    def running(self) -> bool:
        """True from a successful `start()` until `stop()`."""
        return self._running

    def _require(self) -> ServerInfo:
        if self._info is None:
            raise RuntimeError("the server is not started")
        return self._info

    def _started(self, info: ServerInfo) -> None:
        self._info = info
        self._enrollment_token = info.enrollment_token
        self._running = True

    # --- lifecycle and transport: the subclass's ----------------------------------

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def _forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """`await DeployServer.<method>(*args, **kwargs)` where the server runs;
        its result or exception. A `progress` keyword is a callable to be called
        on the console thread."""
        raise NotImplementedError

    # --- listeners ------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event, payload)` on the console thread for every update
        the server sends to the consoles. Returns a function that unsubscribes;
        events not yet delivered by then are dropped for that listener."""
        self._listeners = (*self._listeners, listener)

        def unsubscribe() -> None:
            self._listeners = tuple(x for x in self._listeners if x is not listener)

        return unsubscribe

    def _deliver(self, events: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Call the listeners with each event, in order (console thread)."""
        for event, payload in events:
            # Read for each event: a listener removed during the drain hears no more.
            for listener in self._listeners:
                try:
                    listener(event, payload)
                except Exception:  # a broken listener must not stop the updates
                    log.exception("listener %r failed on %s", listener, event)

    # --- the server's interface, forwarded (see server.app.DeployServer) -----------

    async def list_devices(self) -> list[dict[str, Any]]:
        return await self._forward("list_devices")

    async def list_software(self) -> list[dict[str, Any]]:
        return await self._forward("list_software")

    async def add_software(self, path: str | Path, **options: Any) -> dict[str, Any]:
        """As `DeployServer.add_software(path, **options)` (the same keywords);
        a `progress(fraction)` callback is called on the console thread."""
        return await self._forward("add_software", path, **options)

    async def create_deployment(
        self,
        software_ids: Iterable[int],
        device_ids: Iterable[int],
        deployment_name: str | None = None,
    ) -> dict[str, Any]:
        return await self._forward(
            "create_deployment", list(software_ids), list(device_ids), deployment_name
        )

    async def get_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._forward("get_deployment", deployment_id)

    async def list_deployments(self, limit: int = 200) -> list[dict[str, Any]]:
        return await self._forward("list_deployments", limit)

    async def cancel_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._forward("cancel_deployment", deployment_id)

    async def retry_deployment(self, deployment_id: int) -> dict[str, Any]:
        return await self._forward("retry_deployment", deployment_id)

    async def regenerate_enrollment_token(self) -> str:
        token = await self._forward("regenerate_enrollment_token")
        self._enrollment_token = token
        return token

    async def wait_idle(self) -> None:
        await self._forward("wait_idle")
