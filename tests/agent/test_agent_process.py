"""The real `deploy-agent` process against the real Deploy Console server."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from tests.agent.agent_helpers import (
    AgentProcess,
    posix_only,
    wait_for_device,
    wait_for_target,
)

pytestmark = posix_only

StartAgent = Callable[..., Awaitable[AgentProcess]]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
async def start_agent(tmp_path: Path) -> AsyncIterator[StartAgent]:
    agents: list[AgentProcess] = []

    async def start(
        url: str, token: str, agent_id: str = "agent-proc-1", *extra: str
    ) -> AgentProcess:
        home = tmp_path / agent_id
        argv = [
            sys.executable,
            "-m",
            "agent",
            "--server",
            url,
            "--token",
            token,
            "--state-dir",
            str(home / "state ü"),
            "--install-root",
            str(home / "Programme Ä"),
            "--agent-id",
            agent_id,
            *extra,
        ]
        agent = AgentProcess(argv)
        await agent.start()
        agents.append(agent)
        return agent

    yield start
    for agent in agents:
        await agent.stop()
        # Shown by pytest only when the test failed: what the agent said.
        print(f"--- stderr of {agent.argv} ---\n", *agent.lines, sep="", end="")


INSTALLER = """#!/bin/sh
set -e
mkdir -p "$DEPLOY_INSTALL_ROOT/$1"
echo "hello from $DEPLOY_SOFTWARE_NAME" > "$DEPLOY_INSTALL_ROOT/$1/read me ü.txt"
""".encode()


async def test_agent_started_before_the_server_registers_and_installs(
    server_factory, start_agent: StartAgent, tmp_path: Path
) -> None:
    port = free_port()
    token = "enroll-before-server"
    agent = await start_agent(f"http://127.0.0.1:{port}", token)
    await agent.wait_for_line("cannot reach the server")

    server = await server_factory(port=port, enrollment_token=token)
    device = await wait_for_device(server, "agent-proc-1")
    installer = tmp_path / "set up ü.sh"
    installer.write_bytes(INSTALLER)
    software = await server.add_software(
        installer,
        name="Tool Ü",
        version="1.0",
        installer_type="script",
        install_args="'My Tool é'",
    )
    deployment = await server.create_deployment([software["id"]], [device["id"]])

    target = await wait_for_target(server, deployment["id"])

    assert target["status"] == "success", target
    installed = (
        tmp_path / "agent-proc-1" / "Programme Ä" / "My Tool é" / "read me ü.txt"
    )
    assert installed.read_text() == "hello from Tool Ü\n"


async def test_failing_installer_ends_the_target_failed_with_its_exit_code(
    server, start_agent: StartAgent, tmp_path: Path
) -> None:
    await start_agent(server.url, server.enrollment_token)
    device = await wait_for_device(server, "agent-proc-1")
    installer = tmp_path / "broken.sh"
    installer.write_bytes(b"#!/bin/sh\necho 'cannot write registry' >&2\nexit 5\n")
    software = await server.add_software(
        installer, name="Broken", version="1", installer_type="script"
    )
    deployment = await server.create_deployment([software["id"]], [device["id"]])

    target = await wait_for_target(server, deployment["id"])

    assert target["status"] == "failed"
    assert target["exit_code"] == 5
    assert "exit code 5" in target["message"]


async def test_refused_token_is_reported_clearly_and_the_agent_keeps_running(
    server, start_agent: StartAgent
) -> None:
    agent = await start_agent(server.url, "not-the-token")

    line = await agent.wait_for_line("refused this agent")

    assert "retrying in" in line
    assert agent.proc is not None and agent.proc.returncode is None


async def test_agent_registers_again_after_the_server_restarts(
    server_factory, start_agent: StartAgent, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "server data"
    first = await server_factory(port=port, data_dir=data, enrollment_token="t0k")
    agent = await start_agent(first.url, "t0k")
    await wait_for_device(first, "agent-proc-1")
    await first.stop()
    await agent.wait_for_line("connection to")

    second = await server_factory(port=port, data_dir=data, enrollment_token="t0k")

    device = await wait_for_device(second, "agent-proc-1")
    assert device["online"]


async def test_sigterm_stops_the_agent_cleanly(server, start_agent: StartAgent) -> None:
    agent = await start_agent(server.url, server.enrollment_token)
    await wait_for_device(server, "agent-proc-1")
    assert agent.proc is not None

    agent.proc.send_signal(signal.SIGTERM)

    assert await agent.proc.wait() == 0


async def test_hostname_flag_names_the_device_the_console_lists(
    server, start_agent: StartAgent
) -> None:
    await start_agent(
        server.url, server.enrollment_token, "agent-proc-1", "--hostname", "LAB-PC 07"
    )

    device = await wait_for_device(server, "agent-proc-1")

    assert device["hostname"] == "LAB-PC 07"


async def test_agent_takes_server_and_token_from_its_config_file(
    server, tmp_path: Path
) -> None:
    config = tmp_path / "agent.ini"
    config.write_text(
        "[agent]\n"
        f"server = {server.url}\n"
        f"token = {server.enrollment_token}\n"
        f"state_dir = {tmp_path / 'state'}\n"
        "hostname = FROM-CONFIG\n",
        encoding="utf-8",
    )
    agent = AgentProcess(
        [sys.executable, "-m", "agent", "--config", str(config), "--agent-id", "ini-1"]
    )
    await agent.start()
    try:
        device = await wait_for_device(server, "ini-1")
    finally:
        await agent.stop()

    assert device["hostname"] == "FROM-CONFIG"


@pytest.mark.parametrize(
    "content", ["server = http://x\n", "[other]\nserver = http://x\n", "\0\0"]
)
def test_unusable_config_file_is_refused_with_a_clear_message(
    tmp_path: Path, content: str
) -> None:
    config = tmp_path / "agent.ini"
    config.write_text(content, encoding="utf-8")

    done = subprocess.run(
        [sys.executable, "-m", "agent", "--config", str(config), "--token", "t"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 2
    assert f"cannot use --config {config}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="tests the non-Windows refusal")
def test_service_mode_off_windows_exits_with_a_clear_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "--service",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
            "--state-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert done.returncode == 2
    assert "--service needs Windows" in done.stderr
    assert "Traceback" not in done.stderr


async def test_deployment_cancelled_while_the_agent_was_stopped_never_installs(
    server, start_agent: StartAgent, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    cancelled_ran = tmp_path / "cancelled-ran"
    busy = tmp_path / "busy.sh"
    busy.write_text(f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.1; done\n')
    queued = tmp_path / "queued.sh"
    queued.write_text(f'#!/bin/sh\necho run > "{cancelled_ran}"\n')
    later = tmp_path / "later.sh"
    later.write_bytes(b"#!/bin/sh\nexit 0\n")
    ids = []
    for script in (busy, queued, later):
        software = await server.add_software(
            script, name=script.stem, version="1", installer_type="script"
        )
        ids.append(software["id"])
    agent = await start_agent(server.url, server.enrollment_token)
    device = await wait_for_device(server, "agent-proc-1")
    try:
        first = await server.create_deployment([ids[0]], [device["id"]])
        await wait_for_target(
            server, first["id"], until=lambda t: "installing" in (t["message"] or "")
        )
        second = await server.create_deployment([ids[1]], [device["id"]])
        await wait_for_target(
            server, second["id"], until=lambda t: "queued" in (t["message"] or "")
        )
        await agent.stop()  # SIGTERM while the second is queued on the device
        await server.cancel_deployment(second["id"])

        await start_agent(server.url, server.enrollment_token)
        third = await server.create_deployment([ids[2]], [device["id"]])
        target = await wait_for_target(server, third["id"])
    finally:
        go.touch()

    assert target["status"] == "success"
    assert not cancelled_ran.exists()
    cancelled = await server.get_deployment(second["id"])
    assert cancelled["targets"][0]["status"] == "cancelled"
