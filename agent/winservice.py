"""Run the agent as the Windows service "DeployAgent" (`deploy-agent --service`).

The Windows setup (`resources/installer/agent.iss`) registers the service with the
command line `deploy-agent.exe --service --config <agent.ini> --state-dir <dir>`.
The service control manager starts that process and expects it to hand its main
thread to the dispatcher; pywin32's `servicemanager` does that, calls `SvcDoRun` on a
thread of its own, and `SvcStop` on stop or shutdown. The agent's asyncio loop runs in
`SvcDoRun`; a stop cancels its main task from the dispatcher's thread through
`call_soon_threadsafe`, so a running installer is killed and its job is reported
"state unknown" on the next start, exactly as on Ctrl-C.

TODO(agent): this module has never run on Windows here (no Windows machine in CI);
only the argument handling around it is tested on Linux.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

SERVICE_NAME = "DeployAgent"
SERVICE_DISPLAY_NAME = "Deploy Console Agent"


class ServiceUnavailableError(RuntimeError):
    """`--service` was asked for where there is no Windows service manager."""


def run_service(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """Hand this process to the Windows service dispatcher; `main()` is the agent.

    Returns when the service has stopped. Raises `ServiceUnavailableError` off
    Windows or without pywin32.
    """
    try:
        import servicemanager  # type: ignore[import-not-found]
        import win32service  # type: ignore[import-not-found]
        import win32serviceutil  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ServiceUnavailableError(
            "--service needs Windows and pywin32; run the agent without --service"
        ) from exc

    class AgentService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = SERVICE_DISPLAY_NAME

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self._loop: asyncio.AbstractEventLoop | None = None
            self._task: asyncio.Task[None] | None = None
            self._started = threading.Event()

        def SvcDoRun(self) -> None:  # pywin32's method name
            self.ReportServiceStatus(win32service.SERVICE_RUNNING)
            asyncio.run(self._serve())

        async def _serve(self) -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()  # type: ignore[assignment]
            self._started.set()
            try:
                await main()
            except asyncio.CancelledError:
                log.info("service stop requested; agent stopped")

        def SvcStop(self) -> None:  # pywin32's method name
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            if self._started.wait(timeout=30) and self._loop and self._task:
                self._loop.call_soon_threadsafe(self._task.cancel)

        SvcShutdown = SvcStop

    servicemanager.Initialize()
    servicemanager.PrepareToHostSingle(AgentService)
    servicemanager.StartServiceCtrlDispatcher()
    return 0
