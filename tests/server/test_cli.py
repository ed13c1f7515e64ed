"""`deploy-server` as a real process: listens, shows new tokens once, stops cleanly."""

import asyncio
import os
import signal
import sys

import aiohttp
import pytest

from server.cli import READY_LINE

STARTUP = 30


async def _start(*args, env=None):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    lines = []
    async with asyncio.timeout(STARTUP):
        while True:
            line = (await process.stdout.readline()).decode()
            if not line:
                break
            lines.append(line.rstrip())
            if line.rstrip() == READY_LINE:
                break
    return process, lines


async def _stop(process):
    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(STARTUP):
        await process.communicate()
    return process.returncode


def _url(lines):
    [line] = [x for x in lines if x.startswith("Deploy server listening on ")]
    return line.rsplit(" ", 1)[1]


async def test_first_start_prints_address_and_new_tokens(tmp_path):
    process, lines = await _start("--data-dir", str(tmp_path))

    returncode = await _stop(process)

    assert _url(lines).startswith("http://127.0.0.1:")
    assert any("enrollment token (agents):" in line for line in lines)
    assert returncode == 0


async def test_tokens_from_environment_are_used_and_not_printed(tmp_path):
    env = {"DEPLOY_ENROLLMENT_TOKEN": "enroll-env", "DEPLOY_ADMIN_TOKEN": "admin-env"}
    process, lines = await _start("--data-dir", str(tmp_path), env=env)
    headers = {"Authorization": "Bearer admin-env"}

    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(_url(lines) + "/api/devices") as response,
    ):
        status = await response.json(), response.status

    assert await _stop(process) == 0
    assert status == ([], 200)
    assert not any("enrollment token" in line for line in lines)


async def test_port_in_use_exits_2_with_a_message(server, tmp_path):
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server.cli",
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(STARTUP):
        _, stderr = await process.communicate()

    assert process.returncode == 2
    assert "already used" in stderr.decode()
    assert "Traceback" not in stderr.decode()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_the_server_cleanly(tmp_path, signum):
    process, _ = await _start("--data-dir", str(tmp_path))

    process.send_signal(signum)
    async with asyncio.timeout(STARTUP):
        _, stderr = await process.communicate()

    assert process.returncode == 0
    assert "server stopped" in stderr.decode()
    assert "Task was destroyed" not in stderr.decode()


async def test_runs_on_uvloop_where_it_is_installed(tmp_path):
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not for Windows")
    process, _ = await _start("--data-dir", str(tmp_path))

    process.send_signal(signal.SIGINT)
    async with asyncio.timeout(STARTUP):
        _, stderr = await process.communicate()

    assert uvloop.__name__ + " event loop" in stderr.decode()


@pytest.mark.parametrize("port", ["99999", "-5", "http"])
def test_a_port_outside_0_to_65535_is_a_usage_error(port):
    """Not a silent wrap-around (99999 would listen on 34463) nor a traceback."""
    from server.cli import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--port", port])

    assert exit_info.value.code == 2
