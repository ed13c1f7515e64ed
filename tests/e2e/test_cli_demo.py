"""`deploy-server --demo` as a technician runs it: a real process, real output."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import psutil
import pytest

DEMO_TIMEOUT_S = 240


def deploy_server_command() -> list[str]:
    script = Path(sys.executable).with_name("deploy-server")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "server.cli"]


async def start_demo(data_dir: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *deploy_server_command(),
        "--demo",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def read_until(process: asyncio.subprocess.Process, pattern: str) -> re.Match:
    """Read the demo's output line by line until one matches `pattern`."""
    assert process.stdout is not None
    while line := await process.stdout.readline():
        match = re.search(pattern, line.decode(errors="replace"))
        if match:
            return match
    raise AssertionError(f"the demo ended without printing {pattern!r}")


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def exists(path: Path) -> bool:
    return path.exists()


@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
async def test_deploy_server_demo_exits_0_with_a_success_line_per_target(tmp_path):
    process = await start_demo(tmp_path)
    async with asyncio.timeout(DEMO_TIMEOUT_S):
        stdout, _ = await process.communicate()
    output = stdout.decode(errors="replace").splitlines()

    assert process.returncode == 0, "\n".join(output)
    for n in (1, 2, 3):
        lines = [line for line in output if f"demo-agent-{n} " in line]
        assert len(lines) == 1, output
        assert re.search(r"\bsuccess\b.*\bexit 0\b.*\d+\.\d s", lines[0]), lines[0]
    assert "3 of 3 targets succeeded" in output[-1]


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT, as Ctrl-C does on POSIX")
@pytest.mark.timeout(DEMO_TIMEOUT_S + 30)
async def test_ctrl_c_during_the_demo_ends_every_agent_and_removes_its_folders(
    tmp_path,
):
    process = await start_demo(tmp_path)
    async with asyncio.timeout(DEMO_TIMEOUT_S):
        started = await read_until(process, r"demo: starting \d+ agents in (.+)$")
        base_dir = Path(started.group(1).strip())
        await read_until(process, r"agents started")
        agents = psutil.Process(process.pid).children(recursive=True)

        process.send_signal(signal.SIGINT)  # to the server only, not its agents
        await read_until(process, r"demo: interrupted")
        await process.communicate()

    assert agents, "the demo had started no agent processes"
    assert not [a.pid for a in agents if alive(a.pid)]
    assert not exists(base_dir)
