"""Package downloads against a real HTTP server that serves the wrong thing.

The job runner fetches from the real `PackageServer` (aiohttp on loopback) and runs
real shell scripts; the agent's config allows 3 download attempts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from agent.config import AgentConfig
from tests.agent.agent_helpers import (
    PackageServer,
    RunningAgent,
    order,
    package,
    posix_only,
)

pytestmark = posix_only

GOOD = b"#!/bin/sh\nexit 0\n"


def marker_script(marker: Path, word: str = "run") -> bytes:
    return f'#!/bin/sh\necho {word} >> "{marker}"\n'.encode()


def claimed(data: bytes) -> dict:
    """What the job says about the package: the real file's sha256 and size."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


async def test_package_shorter_on_the_server_fails_after_the_bounded_attempts(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    real = GOOD + b"# " * 5000
    item = package(package_server, real[:100], name="short-one", **claimed(real))
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert (
        f"size mismatch: server sent 100 bytes, expected {len(real)}"
        in (final["message"])
    )
    assert f"after {agent_config.download_attempts} attempts" in final["message"]
    assert len(package_server.ranges_seen) == agent_config.download_attempts


async def test_package_longer_on_the_server_fails_after_the_bounded_attempts(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    served = GOOD + b"# trailing junk\n" * 100
    item = package(package_server, served, name="long-one", **claimed(GOOD))
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert (
        f"size mismatch: server sent {len(served)} bytes, expected {len(GOOD)}"
        in (final["message"])
    )
    assert len(package_server.ranges_seen) == agent_config.download_attempts


async def test_next_job_runs_after_a_package_of_the_wrong_size(
    job_runner: RunningAgent, package_server: PackageServer, tmp_path: Path
) -> None:
    marker = tmp_path / "second-ran"
    real = GOOD + b"#" * 1000
    wrong = package(package_server, real[:10], **claimed(real))
    job_runner.runner.submit(order(1, wrong))
    job_runner.runner.submit(order(2, package(package_server, marker_script(marker))))

    final = await job_runner.reports.final(2)

    assert final["status"] == "completed"
    assert marker.read_text() == "run\n"


async def test_resume_the_server_refuses_counts_as_a_failed_attempt(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    real = GOOD + b"#" * 1000
    item = package(package_server, real[:100], file_name="app.sh", **claimed(real))
    part = agent_config.downloads_dir / item["sha256"] / "app.sh.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(real[:500])  # left by an earlier download of another file
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "failed"
    assert package_server.ranges_seen[0] == "bytes=500-"  # answered 416
    assert len(package_server.ranges_seen) == agent_config.download_attempts
    assert f"server sent 100 bytes, expected {len(real)}" in final["message"]


async def test_zero_byte_package_downloads_and_its_installer_runs(
    job_runner: RunningAgent, package_server: PackageServer, agent_config: AgentConfig
) -> None:
    item = package(package_server, b"", file_name="empty.sh")
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert final["status"] == "completed"  # sh runs an empty script and exits 0
    downloaded = agent_config.downloads_dir / item["sha256"] / "empty.sh"
    assert downloaded.read_bytes() == b""


async def test_tampered_cached_copy_is_downloaded_again_and_never_runs(
    job_runner: RunningAgent,
    package_server: PackageServer,
    agent_config: AgentConfig,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "runs"
    good = marker_script(marker, "good")
    item = package(package_server, good, file_name="app.sh")
    job_runner.runner.submit(order(1, item))
    await job_runner.reports.final(1)
    cached = agent_config.downloads_dir / item["sha256"] / "app.sh"
    evil = marker_script(marker, "evil")
    assert len(evil) == len(good)
    cached.write_bytes(evil)

    job_runner.runner.submit(order(2, item))
    final = await job_runner.reports.final(2)

    assert final["status"] == "completed"
    assert marker.read_text() == "good\ngood\n"
    assert cached.read_bytes() == good


async def test_failure_message_names_the_package_once(
    job_runner: RunningAgent, package_server: PackageServer
) -> None:
    item = package(package_server, GOOD, name="corrupt-flip", sha256="0" * 64)
    job_runner.runner.submit(order(1, item))

    final = await job_runner.reports.final(1)

    assert "does not match its sha256" in final["message"]
    assert final["message"].count("corrupt-flip") == 1
