"""The job runner with real downloads from a real HTTP server and real processes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import psutil

from agent.config import AgentConfig
from agent.jobs import RESTARTED_MESSAGE, job_key
from protocol import CancelDeployment, InstallationStatus, parse_payload
from tests.agent.agent_helpers import (
    PackageServer,
    RunningAgent,
    order,
    package,
    posix_only,
    start_runner,
)

pytestmark = posix_only

INSTALL_FILES = """#!/bin/sh
set -e
mkdir -p "$DEPLOY_INSTALL_ROOT/App Ü"
echo "installed with $1" > "$DEPLOY_INSTALL_ROOT/App Ü/état.txt"
echo "done installing"
""".encode()


def marker_script(marker: Path, body: str = "") -> bytes:
    return f'#!/bin/sh\necho run >> "{marker}"\n{body}\n'.encode()


async def test_script_installs_its_files_and_reports_completed(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    item = package(
        package_server, INSTALL_FILES, file_name="set up ü.sh", install_args="'a b'"
    )
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "completed"
    assert final["completed"] == 1 and final["failed"] == 0
    installed = agent_config.install_root / "App Ü" / "état.txt"
    assert installed.read_text() == "installed with a b\n"


async def test_statuses_go_from_queued_through_download_and_install_to_done(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    job_runner.runner.submit(order(1, package(package_server, INSTALL_FILES)))
    await job_runner.reports.final(1)

    statuses = job_runner.reports.of(1)
    order_seen = [s["status"] for s in statuses]
    assert order_seen[0] == "in_progress"
    assert order_seen.index("downloading") < order_seen.index("installing")
    assert order_seen[-1] == "completed"
    progress = [s["progress"] for s in statuses]
    assert progress == sorted(progress) and progress[-1] == 100
    for status in statuses:
        clean = {k: v for k, v in status.items() if k != "_final"}
        parse_payload(InstallationStatus, clean)  # every report fits the contract


async def test_two_packages_split_progress_and_count_both(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    first = package(package_server, INSTALL_FILES, software_id=1)
    second = package(package_server, b"#!/bin/sh\nexit 0\n", software_id=2, name="B")
    job_runner.runner.submit(order(1, first, second))

    final = await job_runner.reports.final(1)

    assert final["completed"] == 2
    installing = [s for s in job_runner.reports.of(1) if s["status"] == "installing"]
    assert installing[0]["progress"] == 25.0  # first package, install half begins


async def test_failing_script_reports_its_exit_status_and_output(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    script = b"#!/bin/sh\necho 'disk quota \xff exceeded' >&2\nexit 3\n"
    job_runner.runner.submit(order(1, package(package_server, script)))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert final["exit_code"] == 3
    assert "exit code 3" in final["message"]
    assert "disk quota" in final["log_tail"]


async def test_hanging_installer_is_killed_with_its_children_at_the_timeout(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    script = f'#!/bin/sh\nsleep 600 &\necho $! > "{pid_file}"\nwait\n'.encode()
    item = package(package_server, script, timeout_s=2)
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert final["message"].endswith("timed out after 2 s")
    child = int(pid_file.read_text())
    assert not psutil.pid_exists(child) or (
        psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    )


async def test_installer_waiting_for_keyboard_input_gets_no_stdin_and_ends(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    script = b'#!/bin/sh\nprintf "Continue? "\nread answer || exit 7\nexit 0\n'
    job_runner.runner.submit(order(1, package(package_server, script, timeout_s=60)))

    final = await job_runner.reports.final(1, within=30)

    assert final["exit_code"] == 7  # read hit end-of-input instead of waiting


async def test_next_job_runs_after_one_that_timed_out(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    hang = package(package_server, b"#!/bin/sh\nsleep 600\n", timeout_s=1)
    job_runner.runner.submit(order(1, hang))
    job_runner.runner.submit(order(2, package(package_server, INSTALL_FILES)))

    assert (await job_runner.reports.final(2))["status"] == "completed"
    assert (await job_runner.reports.final(1))["status"] == "failed"


async def test_sha256_mismatch_fails_and_never_runs_the_file(
    job_runner: RunningAgent,
    package_server: PackageServer,
    agent_config: AgentConfig,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "was-run"
    item = package(package_server, marker_script(marker), sha256="0" * 64)
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert "does not match its sha256" in final["message"]
    assert not marker.exists()
    assert not any(p.is_file() for p in agent_config.downloads_dir.rglob("*"))


async def test_download_cut_halfway_resumes_with_a_range_request(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    big = INSTALL_FILES + b"# padding\n" * 300_000  # ~3 MB, several write batches
    job_runner.runner.submit(order(1, package(package_server, big, cut_halfway=True)))

    final = await job_runner.reports.final(1)

    assert final["status"] == "completed"
    assert package_server.ranges_seen[0] is None
    assert package_server.ranges_seen[1] is not None
    assert package_server.ranges_seen[1].startswith("bytes=")
    assert int(package_server.ranges_seen[1][6:].rstrip("-")) > 0


async def test_download_progress_is_throttled_not_per_chunk(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    big = INSTALL_FILES + b"#" * 8_000_000
    job_runner.runner.submit(order(1, package(package_server, big)))
    await job_runner.reports.final(1)

    ticks = job_runner.reports.progress
    assert ticks[-1]["progress"] == 100
    assert len(ticks) < 8_000_000 // (256 * 1024)


async def test_job_sent_again_after_it_finished_is_reported_not_rerun(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    job = order(1, package(package_server, marker_script(marker)))
    job_runner.runner.submit(job)
    await job_runner.reports.final(1)

    job_runner.runner.submit(job)
    await job_runner.reports.wait_for(lambda r: len(r.finals(1)) == 2)

    assert marker.read_text() == "run\n"
    assert job_runner.reports.finals(1)[1]["status"] == "completed"


async def test_job_sent_again_while_running_is_not_run_twice(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    go = tmp_path / "go"
    body = f'while [ ! -e "{go}" ]; do sleep 0.05; done'
    job = order(1, package(package_server, marker_script(marker, body)))
    job_runner.runner.submit(job)
    await job_runner.reports.wait_for(
        lambda r: any(s["status"] == "installing" for s in r.of(1))
    )

    job_runner.runner.submit(job)
    go.touch()
    await job_runner.reports.final(1)

    assert marker.read_text() == "run\n"


async def test_cancel_drops_a_queued_job(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    blocker = f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.05; done\n'.encode()
    marker = tmp_path / "queued-ran"
    job_runner.runner.submit(order(1, package(package_server, blocker)))
    job_runner.runner.submit(order(2, package(package_server, marker_script(marker))))

    job_runner.runner.cancel(CancelDeployment(deployment_id=2, device_id=1))
    go.touch()
    await job_runner.reports.final(1)

    final = await job_runner.reports.final(2)
    assert final["status"] == "failed"
    assert final["message"] == "cancelled by technician"
    await job_runner.runner.wait_idle()
    assert not marker.exists()


async def test_cancel_kills_the_running_installer_tree(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    fifo = tmp_path / "child.pid"
    os.mkfifo(fifo)
    script = f'#!/bin/sh\nsleep 600 &\necho $! > "{fifo}"\nwait\n'.encode()
    job_runner.runner.submit(order(1, package(package_server, script)))
    loop = asyncio.get_running_loop()
    child = int(await loop.run_in_executor(None, fifo.read_text))  # script is running

    job_runner.runner.cancel(CancelDeployment(deployment_id=1, device_id=1))
    final = await job_runner.reports.final(1)

    assert final["message"] == "cancelled by technician"
    assert not psutil.pid_exists(child) or (
        psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    )


async def test_zip_package_is_extracted_to_the_named_folder(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("tool ü.txt", "portable")
    item = package(
        package_server,
        buf.getvalue(),
        file_name="tool.zip",
        installer_type="zip",
        install_args='"Portable Apps\\Tool Ä"',
    )
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "completed"
    extracted = agent_config.install_root / "Portable Apps" / "Tool Ä" / "tool ü.txt"
    assert extracted.read_text() == "portable"


async def test_msi_without_windows_installer_fails_clearly(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    item = package(
        package_server, b"not really", file_name="a.msi", installer_type="msi"
    )
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert "no Windows Installer on this device" in final["message"]


async def test_killed_mid_install_reports_failed_state_unknown_after_restart(
    agent_config: AgentConfig, package_server: PackageServer, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    first = await start_runner(agent_config)
    body = "sleep 600"
    first.runner.submit(order(1, package(package_server, marker_script(marker, body))))
    await first.reports.wait_for(
        lambda r: any(s["status"] == "installing" for s in r.of(1))
    )
    # "installing" is reported as the installer starts; its first line may not
    # have run yet (a full CI run stopped the agent before it had).
    await _file_written(marker)
    await first.stop()  # the agent dies mid-install

    second = await start_runner(agent_config)
    try:
        [(final, is_final)] = second.runner.pending_reports()
        assert is_final
        assert final["status"] == "failed"
        assert final["message"] == RESTARTED_MESSAGE
        assert marker.read_text() == "run\n"
    finally:
        await second.stop()


async def test_killed_mid_download_resumes_the_download_after_restart(
    agent_config: AgentConfig, package_server: PackageServer
) -> None:
    first = await start_runner(agent_config)
    job = order(1, package(package_server, INSTALL_FILES))
    first.runner.submit(job)
    await first.stop()  # stopped before the worker got far
    first.runner.store.jobs[job_key(1, 1)].state = "running"
    first.runner.store.save()

    second = await start_runner(agent_config)
    try:
        second.runner.on_registered([1], second.runner.queued_keys())
        final = await second.reports.final(1)
        assert final["status"] == "completed"
    finally:
        await second.stop()


async def test_job_sent_with_a_higher_attempt_runs_again(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    item = package(package_server, marker_script(marker, "exit 1"))
    job_runner.runner.submit(order(1, item))
    await job_runner.reports.final(1)

    retry = order(1, item).model_copy(update={"attempt": 2})
    job_runner.runner.submit(retry)
    await job_runner.reports.wait_for(lambda r: len(r.finals(1)) == 2)

    assert marker.read_text() == "run\nrun\n"
    assert job_runner.reports.finals(1)[1]["attempt"] == 2


async def test_job_queued_before_a_restart_waits_for_the_first_registration(
    agent_config: AgentConfig, package_server: PackageServer, tmp_path: Path
) -> None:
    marker = tmp_path / "runs"
    first = await start_runner(agent_config)
    first.runner.submit(order(1, package(package_server, marker_script(marker))))
    await first.stop()  # stopped before the worker took it

    second = await start_runner(agent_config)
    try:
        await second.runner.wait_idle()
        assert not marker.exists()
        assert second.runner.store.jobs[job_key(1, 1)].state == "queued"

        second.runner.on_registered(None, second.runner.queued_keys())
        final = await second.reports.final(1)
        assert final["status"] == "completed"
    finally:
        await second.stop()


async def test_queued_job_whose_deployment_is_no_longer_open_is_dropped(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    blocker = f'#!/bin/sh\nwhile [ ! -e "{go}" ]; do sleep 0.05; done\n'.encode()
    marker = tmp_path / "queued-ran"
    job_runner.runner.submit(order(1, package(package_server, blocker)))
    job_runner.runner.submit(order(2, package(package_server, marker_script(marker))))
    await job_runner.reports.wait_for(
        lambda r: any(s["status"] == "installing" for s in r.of(1))
    )

    job_runner.runner.on_registered([1], job_runner.runner.queued_keys())
    go.touch()

    assert (await job_runner.reports.final(1))["status"] == "completed"
    await job_runner.runner.wait_idle()
    assert not marker.exists()
    assert job_runner.reports.finals(2) == []


async def test_running_job_is_not_dropped_by_the_registration_answer(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    marker = tmp_path / "runs"
    body = f'while [ ! -e "{go}" ]; do sleep 0.05; done'
    item = package(package_server, marker_script(marker, body))
    job_runner.runner.submit(order(1, item))
    await job_runner.reports.wait_for(
        lambda r: any(s["status"] == "installing" for s in r.of(1))
    )

    job_runner.runner.on_registered([], job_runner.runner.queued_keys())
    go.touch()

    assert (await job_runner.reports.final(1))["status"] == "completed"
    assert marker.read_text() == "run\n"


async def _file_written(path: Path, within: float = 30) -> None:
    """Wait until the installer process has written `path`.

    Polled: nothing signals a write by another process, and the installer is a
    real process (a shell script), not something this test can hook.
    """
    async with asyncio.timeout(within):
        while not _has_content(path):  # noqa: ASYNC110 -- no event to wait on
            await asyncio.sleep(0.01)


def _has_content(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 0
