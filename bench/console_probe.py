"""Benchmark 4: the real console, offscreen, with many devices reporting.

TODO(bench): measure once console/ lands -- run the console in a subprocess with
QT_QPA_PLATFORM=offscreen, point a fleet at its embedded server, sample the lag of
the shared Qt/asyncio loop and time the device list filling up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.procs import REPO_DIR


def missing() -> str | None:
    """Why the console benchmark cannot run here, or None when it can."""
    if not (REPO_DIR / "console" / "app.py").exists():
        return "console/app.py not there yet (the console has not landed)"
    return "console benchmark not written yet"


async def run(workdir: Path, settings: Any) -> dict[str, Any]:
    raise NotImplementedError
