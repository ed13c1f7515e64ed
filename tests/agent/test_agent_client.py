"""The agent's connection (`agent.client.Agent`) against a real Socket.IO server.

`StandInServer` is a real python-socketio server on loopback standing in for the
Deploy Console server where the test must choose the registration answer (with or
without `open_deployments`) or refuse a report; the jobs, downloads and installers
are the agent's real ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from agent.client import Agent
from agent.config import AgentConfig
from agent.jobs import JobRunner, job_key
from tests.agent.agent_helpers import (
    PackageServer,
    StandInServer,
    order,
    package,
    posix_only,
)

pytestmark = posix_only


def marker_script(marker: Path) -> bytes:
    return f'#!/bin/sh\necho run >> "{marker}"\n'.encode()


@pytest.fixture
async def stand_in(package_server: PackageServer) -> AsyncIterator[StandInServer]:
    server = StandInServer(package_server)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def config(agent_config: AgentConfig, stand_in: StandInServer) -> AgentConfig:
    return replace(agent_config, server_url=stand_in.url)


@contextlib.asynccontextmanager
async def running_agent(config: AgentConfig) -> AsyncIterator[Agent]:
    agent = Agent(config)
    task = asyncio.create_task(agent.run())
    try:
        yield agent
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def queue_before_stop(config: AgentConfig, job) -> None:
    """An earlier run of the agent took `job` and stopped before it started."""
    earlier = JobRunner(
        config, on_status=lambda *_: None, on_download_progress=lambda _: None
    )
    earlier.recover()
    earlier.submit(job)


async def test_job_cancelled_while_the_agent_was_offline_never_runs(
    config: AgentConfig,
    stand_in: StandInServer,
    package_server: PackageServer,
    tmp_path: Path,
) -> None:
    cancelled = tmp_path / "cancelled-ran"
    job = order(2, package(package_server, marker_script(cancelled)))
    queue_before_stop(config, job)
    stand_in.register_ack["open_deployments"] = []  # the technician cancelled 2
    later = tmp_path / "later-ran"

    async with running_agent(config) as agent:
        await stand_in.registered.wait()
        await stand_in.install(order(3, package(package_server, marker_script(later))))
        final = await stand_in.final(3)

        assert final["status"] == "completed"
        assert not cancelled.exists()
        assert stand_in.of(2) == []  # nothing reported: the server knows already
        assert job_key(2, 1) not in agent.runner.store.jobs


async def test_job_still_open_on_the_server_runs_after_registration(
    config: AgentConfig,
    stand_in: StandInServer,
    package_server: PackageServer,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    queue_before_stop(config, order(2, package(package_server, marker_script(marker))))
    stand_in.register_ack["open_deployments"] = [2]

    async with running_agent(config):
        final = await stand_in.final(2)

    assert final["status"] == "completed"
    assert marker.read_text() == "run\n"


async def test_registration_answer_without_open_deployments_keeps_queued_jobs(
    config: AgentConfig,
    stand_in: StandInServer,
    package_server: PackageServer,
    tmp_path: Path,
) -> None:
    marker = tmp_path / "ran"
    queue_before_stop(config, order(2, package(package_server, marker_script(marker))))
    assert "open_deployments" not in stand_in.register_ack  # an older server

    async with running_agent(config):
        final = await stand_in.final(2)

    assert final["status"] == "completed"
    assert marker.read_text() == "run\n"


class _Refusals(logging.Handler):
    """Collects the client's 'server refused the status' lines as they are logged."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "refused the status" in record.getMessage():
            self.records.append(record)
            self.seen.set()


async def test_refused_report_for_a_finished_target_is_not_a_warning(
    config: AgentConfig,
    stand_in: StandInServer,
    package_server: PackageServer,
    tmp_path: Path,
) -> None:
    stand_in.final_ack = {"ok": False, "error": "Target already finished."}
    refusals = _Refusals()
    logger = logging.getLogger("agent.client")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(refusals)
    try:
        async with running_agent(config):
            await stand_in.registered.wait()
            job = order(1, package(package_server, marker_script(tmp_path / "m")))
            await stand_in.install(job)
            await asyncio.wait_for(refusals.seen.wait(), 30)
    finally:
        logger.removeHandler(refusals)
        logger.setLevel(level)

    assert [r.levelno for r in refusals.records] == [logging.INFO]
