"""The demo's sample packages in the library, and a demo that tells what went wrong."""

from __future__ import annotations

import sys

import pytest

from server.demo import DemoError, DemoFleet, add_sample_packages


async def test_sample_packages_land_in_the_library_with_their_installer_types(server):
    added = await add_sample_packages(server)

    library = {row["name"]: row for row in await server.list_software()}
    assert {row["name"] for row in added} == set(library)
    assert library["Hello Deploy"]["installer_type"] == "script"
    assert library["Hello Portable"]["installer_type"] == "zip"


async def test_adding_the_sample_packages_again_adds_nothing_new(server):
    first = await add_sample_packages(server)
    again = await add_sample_packages(server)

    assert [row["id"] for row in again] == [row["id"] for row in first]
    assert len(await server.list_software()) == len(first)


async def test_waiting_for_an_agent_that_crashed_names_it_instead_of_hanging(
    server, tmp_path
):
    crashing_agent = [sys.executable, "-c", "raise SystemExit(3)"]
    fleet = DemoFleet(server.url, "token", 1, tmp_path, agent_command=crashing_agent)

    async with fleet:
        with pytest.raises(DemoError, match="demo-agent-1 ended with exit status 3"):
            await fleet.wait_registered(server, timeout=60)
