"""`deploy-console --self-test`: prove a (frozen) console works end to end.

Offscreen: starts the embedded server on a free loopback port with the window,
starts one real agent process, adds a tiny script package, deploys it, and waits
for the agent's success. Prints one line per step; exit code 0 only if all passed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protocol import DEVICE_UPDATE, SOFTWARE_DEPLOYMENT_UPDATE, TargetStatus

AGENT_ID = "self-test-agent"
REGISTER_TIMEOUT_S = 60
DEPLOY_TIMEOUT_S = 120
MARKER = "self-test.txt"


class SelfTestFailed(Exception):
    """One step did not pass; `str()` says which and why."""


def agent_command(agent_cmd: str | None) -> list[str]:
    """The agent's argv: `--agent-cmd` split like a shell would, or this Python."""
    if not agent_cmd:
        return [sys.executable, "-m", "agent"]
    if os.name == "nt":
        return [part.strip('"') for part in shlex.split(agent_cmd, posix=False)]
    return shlex.split(agent_cmd)


def _write_sample(folder: Path) -> Path:
    """A script package that writes a marker file into the agent's install root."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.name == "nt":
        path = folder / "self-test-1.0.cmd"
        path.write_text(
            "@echo off\r\n"
            'if not exist "%DEPLOY_INSTALL_ROOT%" mkdir "%DEPLOY_INSTALL_ROOT%"\r\n'
            f'echo installed> "%DEPLOY_INSTALL_ROOT%\\{MARKER}"\r\n',
            encoding="ascii",
        )
    else:
        path = folder / "self-test-1.0.sh"
        path.write_text(
            "#!/bin/sh\nset -e\n"
            'mkdir -p "$DEPLOY_INSTALL_ROOT"\n'
            f'echo installed > "$DEPLOY_INSTALL_ROOT/{MARKER}"\n',
            encoding="ascii",
        )
    return path


async def _wait_for_event(
    server: Any,
    event: str,
    matches: Callable[[dict[str, Any]], bool],
    timeout_s: float,
) -> dict[str, Any]:
    """The first `event` payload from the server for which `matches` is true."""
    found: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    def listener(name: str, payload: dict[str, Any]) -> None:
        if name == event and not found.done() and matches(payload):
            found.set_result(payload)

    unsubscribe = server.add_listener(listener)
    try:
        return await asyncio.wait_for(found, timeout_s)
    finally:
        unsubscribe()


def _step(text: str) -> None:
    print(f"self-test: {text}", flush=True)


async def run_self_test(options: argparse.Namespace) -> int:
    """Run the self-test on the current (qasync) loop; return the exit code."""
    from console.session import ConsoleSession
    from server.config import ServerConfig

    with tempfile.TemporaryDirectory(prefix="deploy-self-test-") as tmp:
        root = Path(tmp)
        session = ConsoleSession(
            ServerConfig(host="127.0.0.1", port=0, data_dir=root / "server")
        )
        agent: asyncio.subprocess.Process | None = None
        agent_log = root / "agent.log"
        try:
            await session.start()
            session.window.show()
            server = session.server
            _step(f"server listening on {server.url} ... ok")

            argv = [
                *agent_command(options.agent_cmd),
                "--server", server.url,
                # One argument: a token may begin with "-" (token_urlsafe).
                f"--token={server.enrollment_token}",
                "--state-dir", str(root / "agent-state"),
                "--agent-id", AGENT_ID,
                "--install-root", str(root / "install-root"),
            ]  # fmt: skip
            registered = _wait_for_event(
                server,
                DEVICE_UPDATE,
                lambda p: p.get("agent_id") == AGENT_ID and p.get("online"),
                REGISTER_TIMEOUT_S,
            )
            with agent_log.open("wb") as log_file:
                agent = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                )
            _step(f"agent started: {shlex.join(argv[:-8])} (pid {agent.pid}) ... ok")
            device = await _unless_exits(agent, registered)
            _step(f"agent registered as device {device['device_id']} ... ok")

            sample = _write_sample(root / "sample")
            software = await server.add_software(
                sample,
                name="Self-test",
                version="1.0",
                installer_type="script",
                install_args="",
                timeout_s=60,
            )
            _step(f"package added: {software['name']} {software['version']} ... ok")

            deployment_id: list[int] = []
            finished = _wait_for_event(
                server,
                SOFTWARE_DEPLOYMENT_UPDATE,
                lambda p: (
                    bool(deployment_id)
                    and p["deployment_id"] == deployment_id[0]
                    and TargetStatus(p["status"]).terminal
                ),
                DEPLOY_TIMEOUT_S,
            )
            finished_task = asyncio.ensure_future(finished)
            deployment = await server.create_deployment(
                [software["id"]], [device["device_id"]], deployment_name="Self-test"
            )
            deployment_id.append(int(deployment["id"]))
            session.window.show_deployment(deployment)
            _step(f"deployment {deployment['id']} created ... ok")

            result = await finished_task
            if result["status"] != TargetStatus.SUCCESS:
                raise SelfTestFailed(
                    f"target ended {result['status']}: {result.get('message')}"
                )
            _step("agent reported success ... ok")

            marker = root / "install-root" / MARKER
            if not marker.exists():
                raise SelfTestFailed(f"the package did not write {marker}")
            _step("installed file found ... ok")

            session.window.flush_updates()
            row = session.window.devices.device(int(device["device_id"]))
            if row is None or row.target is None or row.target.status != "success":
                raise SelfTestFailed("the window's device row does not show success")
            _step("window shows the device's success ... ok")
        except (SelfTestFailed, TimeoutError, OSError) as exc:
            _step(f"FAILED: {type(exc).__name__}: {exc}")
            _print_tail(agent_log)
            return 1
        except Exception as exc:  # any other failure is a failed self-test too
            _step(f"FAILED: {type(exc).__name__}: {exc}")
            _print_tail(agent_log)
            return 1
        finally:
            await _stop_agent(agent)
            await session.stop()
    _step("passed")
    return 0


async def _unless_exits(
    agent: asyncio.subprocess.Process, waiting: Any
) -> dict[str, Any]:
    """Await `waiting`, but fail at once if the agent process exits first."""
    wanted = asyncio.ensure_future(waiting)
    exited = asyncio.ensure_future(agent.wait())
    try:
        await asyncio.wait({wanted, exited}, return_when=asyncio.FIRST_COMPLETED)
        if wanted.done():
            return wanted.result()
        raise SelfTestFailed(f"the agent exited with code {exited.result()}")
    finally:
        for future in (wanted, exited):
            future.cancel()
        await asyncio.gather(wanted, exited, return_exceptions=True)


async def _stop_agent(agent: asyncio.subprocess.Process | None) -> None:
    if agent is None or agent.returncode is not None:
        return
    agent.terminate()
    try:
        await asyncio.wait_for(agent.wait(), 10)
    except TimeoutError:
        agent.kill()
        await agent.wait()


def _print_tail(path: Path, lines: int = 30) -> None:
    if not path.exists():
        return
    tail = path.read_text("utf-8", errors="replace").splitlines()[-lines:]
    for line in tail:
        print(f"  agent: {line}", flush=True)
