"""On a machine without Wine the headless demo skips the MSI sample and says why."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
from pathlib import Path

import pytest

from server.demo import run_headless_demo


@pytest.fixture
def path_without_wine(tmp_path, monkeypatch) -> Path:
    """PATH with every program of this machine except Wine's (a machine without
    Wine, everything else real)."""
    if shutil.which("wixl") is None:
        pytest.skip("wixl (msitools) missing: there is no MSI sample to skip")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else []:
            link = bin_dir / program.name
            if not program.name.startswith("wine") and not link.exists():
                link.symlink_to(program)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


async def test_headless_demo_without_wine_skips_the_msi_with_a_clear_reason(
    server, path_without_wine
):
    args = argparse.Namespace(demo_agents=1, demo_timeout=120, demo_dir=None)
    output = io.StringIO()

    with contextlib.redirect_stdout(output):
        exit_code = await run_headless_demo(server, args)

    lines = output.getvalue().splitlines()
    assert exit_code == 0, lines
    skipped = [line for line in lines if "skipped: Wine not installed" in line]
    assert len(skipped) == 1
    assert "Hello MSI" in skipped[0]
    assert "1 of 1 targets succeeded" in lines[-1]
