"""The headless demo, run once for this module: real agent processes, real sockets,
real downloads, real installers; then what they put on disk is checked."""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from server.demo import (
    AgentDirs,
    DemoFleet,
    msi_skip_reason,
    run_headless_demo,
    samples_dir,
)
from tests.e2e.conftest import install_count, running_server, unpacked_files

pytestmark = pytest.mark.asyncio(loop_scope="module")

AGENTS = 3


@dataclass
class DemoRun:
    exit_code: int
    output: list[str]
    base_dir: Path
    agent_dirs: dict[str, AgentDirs]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def demo_run(tmp_path_factory) -> AsyncIterator[DemoRun]:
    data_dir = tmp_path_factory.mktemp("server-data")
    base_dir = tmp_path_factory.mktemp("demo-agents")
    args = argparse.Namespace(demo_agents=AGENTS, demo_timeout=150, demo_dir=base_dir)
    output = io.StringIO()

    async with running_server(data_dir) as server:
        with contextlib.redirect_stdout(output):
            exit_code = await run_headless_demo(server, args)

    # The same layout the demo used, to find each agent's folders.
    layout = DemoFleet("http://unused", "unused", AGENTS, base_dir=base_dir)
    yield DemoRun(
        exit_code, output.getvalue().splitlines(), base_dir, layout.agent_dirs
    )
    # The Wine prefix alone is ~700 MB: do not leave it to pytest's kept temp dirs.
    shutil.rmtree(base_dir, ignore_errors=True)


async def test_headless_demo_exits_0_when_every_target_succeeds(demo_run):
    assert demo_run.exit_code == 0, "\n".join(demo_run.output)


async def test_headless_demo_prints_a_success_line_per_demo_agent(demo_run):
    for agent_id in demo_run.agent_dirs:
        lines = [line for line in demo_run.output if agent_id in line]
        assert len(lines) == 1, demo_run.output
        assert "success" in lines[0]
        assert "exit 0" in lines[0]


async def test_headless_demo_summary_counts_every_target(demo_run):
    assert f"{AGENTS} of {AGENTS} targets succeeded" in demo_run.output[-1]


async def test_script_sample_put_its_application_in_place_on_every_agent(demo_run):
    for dirs in demo_run.agent_dirs.values():
        app = dirs.install_root / "HelloDeploy"
        assert (app / "VERSION").read_text().strip() == "1.0.0"
        assert (app / "bin" / "hello-deploy").is_file()


async def test_script_sample_ran_exactly_once_on_every_agent(demo_run):
    counts = {a: install_count(d) for a, d in demo_run.agent_dirs.items()}

    assert set(counts.values()) == {1}, counts


async def test_portable_zip_is_unpacked_on_every_agent(demo_run):
    source = samples_dir() / "portable" / "HelloPortable" / "hello_portable.py"

    for dirs in demo_run.agent_dirs.values():
        found = unpacked_files(dirs, "hello_portable.py")
        assert len(found) == 1, found
        assert found[0].read_bytes() == source.read_bytes()


@pytest.mark.wine
@pytest.mark.skipif(msi_skip_reason() is not None, reason=str(msi_skip_reason()))
async def test_msi_sample_is_installed_through_wine_msiexec(demo_run):
    installed = (
        demo_run.base_dir / "wineprefix" / "drive_c" / "Program Files" / "HelloMsi"
    )

    assert (installed / "README.txt").read_text().startswith("Hello MSI 1.0.0")


@pytest.mark.wine
@pytest.mark.skipif(msi_skip_reason() is not None, reason=str(msi_skip_reason()))
async def test_headless_demo_deploys_the_msi_where_wine_is_present(demo_run):
    agent_lines = [line for line in demo_run.output if "demo-agent-1" in line]

    assert "Hello MSI" in agent_lines[0]
    assert not any("skipped" in line for line in demo_run.output)
