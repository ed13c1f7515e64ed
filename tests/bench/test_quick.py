"""`python -m bench --quick` (the CI smoke run) reports every figure, without errors.

Runs the real command in a subprocess: our server, the peers that are installed,
fleet worker processes and download clients, all on loopback. No figure is judged
here -- timing belongs in bench/README.md, not in a test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report import FIGURE_KEYS

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp_path_factory.mktemp("bench") / "quick.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    result = json.loads(out.read_text()) if out.exists() else {}
    return done, result


def test_quick_run_exits_zero_with_no_errors(quick_run):
    done, result = quick_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert result["errors"] == []


def test_quick_run_reports_every_figure_key(quick_run):
    _, result = quick_run
    assert sorted(result["figures"]) == sorted(FIGURE_KEYS)


def test_quick_run_measures_every_figure_of_ours_unless_skipped_with_reason(
    quick_run,
):
    _, result = quick_run
    missing = [
        key
        for key, row in result["figures"].items()
        if row["ours"] is None and row["benchmark"] not in result["skipped"]
    ]
    assert missing == []


def test_quick_run_gives_each_peer_a_value_or_a_skip_reason(quick_run):
    _, result = quick_run
    for row in result["figures"].values():
        for peer, value in row["peers"].items():
            assert value is not None or result["skipped"].get(peer), (row["key"], peer)


def test_quick_run_prints_the_table(quick_run):
    done, _ = quick_run
    assert "| figure" in done.stderr
    assert "registration.all_registered_s" in done.stderr
