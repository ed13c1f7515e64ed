"""Run every benchmark against our server and its peers; print JSON and a table.

    python -m bench [--quick] [--agents N] [--peers auto|none] [--json FILE] \
        [--client auto|node|python]

`--quick` is the CI smoke run (20 agents, a 4 MB package, a few seconds per server).
Peers that are not installed are skipped with the reason in the JSON ("skipped").
`--client` picks the simulated agents' Socket.IO client (bench/fleet.py): Node's
socket.io-client spends about half the CPU per status report of python-socketio's,
CPU the server under test gets back on shared cores; `auto` (the default) takes it
when bench/peers/node/setup.sh has run.
Exit status: 0 when every benchmark ran without an error, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import console_probe, procs, report, suite
from bench.fleet import (
    client_versions,
    machine_description,
    pick_client,
    raise_fd_limit,
)

logger = logging.getLogger("bench")

# TODO(bench): every figure is one run; registration, fan-out and downloads move
# by 20-100 % between runs on 2 cores, and a repeat-and-median mode would settle it.
SKIPPABLE = frozenset({"ours", "node", "bare_python", "nginx", "console"})
"""What `--skip` takes: the servers under test and the console benchmark."""

SocketStarter = Callable[[Path, str, str, Path], Awaitable[procs.ServerProcess]]


def _write_package(folder: Path, megabytes: int) -> Path:
    """A random package file named by its sha256 (blocking; run in a thread)."""
    folder.mkdir(parents=True, exist_ok=True)
    scratch = folder / "package.tmp"
    digest = hashlib.sha256()
    with scratch.open("wb") as handle:
        for _ in range(megabytes):
            block = os.urandom(1 << 20)
            digest.update(block)
            handle.write(block)
    final = folder / digest.hexdigest()
    scratch.rename(final)
    return final


PROFILE_PATH: Path | None = None
"""Where `--profile` wants pyinstrument's report of our server (set by main)."""


async def _start_ours(
    workdir: Path, enrollment: str, admin: str, _package: Path
) -> procs.ServerProcess:
    return await procs.start_ours(workdir, enrollment, admin, profile=PROFILE_PATH)


class Run:
    """One benchmark run: its settings, temporary folder, results and problems."""

    def __init__(
        self,
        settings: suite.Settings,
        peers: str,
        workdir: Path,
        skip: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.skip = skip
        self.peers_mode = peers
        self.workdir = workdir
        self.enrollment = secrets.token_urlsafe(24)
        self.admin = secrets.token_urlsafe(24)
        self.raw: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}
        self.errors: list[str] = []
        self.package: Path | None = None

    def _peer_reason(self, name: str) -> str | None:
        """Why `name` (ours, a peer or the console) is not run, or None."""
        if name in self.skip:
            return f"skipped on request (--skip {name})"
        if name == "ours":
            return procs.ours_missing()
        if name == "console":
            return None
        if self.peers_mode == "none":
            return "peers disabled (--peers none)"
        if name == "node":
            return procs.node_peer_missing()
        if name == "nginx":
            return procs.nginx_missing()
        return None

    async def execute(self) -> None:
        self.package = await asyncio.to_thread(
            _write_package, self.workdir / "package", self.settings.package_mb
        )
        starters: list[tuple[str, SocketStarter]] = [
            ("ours", _start_ours),
            ("node", procs.start_node),
            ("bare_python", procs.start_bare_python),
        ]
        for name, starter in starters:
            await self._socket_target(name, starter)
        await self._nginx()
        await self._sqlite()
        await self._console()

    async def _socket_target(self, name: str, starter: SocketStarter) -> None:
        reason = self._peer_reason(name)
        if reason:
            self.skipped[name] = reason
            return
        assert self.package is not None
        workdir = self.workdir / name
        workdir.mkdir()
        logger.info("running the Socket.IO benchmarks against %s", name)
        try:
            server = await starter(workdir, self.enrollment, self.admin, self.package)
        except procs.ProcessStartError as exc:
            self.errors.append(f"{name}: {exc}")
            return
        try:
            figures = await suite.run_socket_suite(server, self.package, self.settings)
            self.raw[name] = figures
            if name == "ours":
                await self._downloads(name, server, figures.get("package_url"))
        except Exception as exc:  # one server's failure must not hide the others
            logger.exception("benchmarks against %s failed", name)
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
        finally:
            await server.stop()

    async def _downloads(
        self, name: str, server: procs.ServerProcess, url: str | None
    ) -> None:
        assert self.package is not None
        if url is None:
            self.errors.append(f"{name}: no package url seen in install_software")
            return
        logger.info("running the download benchmarks against %s", name)
        self.raw.setdefault(name, {})["downloads"] = await suite.run_downloads(
            server,
            url,
            self.package.name,
            self.package.stat().st_size,
            self.settings,
        )

    async def _nginx(self) -> None:
        reason = self._peer_reason("nginx")
        if reason:
            self.skipped["nginx"] = reason
            return
        assert self.package is not None
        workdir = self.workdir / "nginx-run"
        workdir.mkdir()
        try:
            server = await procs.start_nginx(workdir, self.enrollment, self.package)
        except procs.ProcessStartError as exc:
            self.errors.append(f"nginx: {exc}")
            return
        try:
            await self._downloads("nginx", server, server.extra["package_url"])
        except Exception as exc:  # reported in the JSON, the run goes on
            logger.exception("download benchmarks against nginx failed")
            self.errors.append(f"nginx: {type(exc).__name__}: {exc}")
        finally:
            await server.stop()

    async def _sqlite(self) -> None:
        settings = self.settings
        events = int(max(5_000, settings.agents * max(settings.ingest_hz) * 10))
        figures = await asyncio.to_thread(
            suite.sqlite_ceiling, self.workdir / "ceiling.db", settings.agents, events
        )
        self.raw["sqlite_ceiling"] = {"ingestion": figures}

    async def _console(self) -> None:
        reason = self._peer_reason("console") or console_probe.missing()
        if reason:
            self.skipped["console"] = reason
            return
        try:
            figures = await console_probe.run(self.workdir, self.settings)
        except Exception as exc:  # reported in the JSON, the run goes on
            logger.exception("console benchmark failed")
            self.errors.append(f"console: {type(exc).__name__}: {exc}")
            return
        self.raw.setdefault("ours", {})["console"] = figures

    def result(self, mode: str) -> dict[str, Any]:
        ours = self.raw.get("ours", {})
        peers = {name: raw for name, raw in self.raw.items() if name != "ours"}
        rows = report.build_rows(ours, peers)
        return {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": mode,
            "settings": vars(self.settings),
            "machine": machine_description(),
            "fleet": client_versions(self.settings.client),
            "limits": (
                "client and server share the same cores: the fleet's worker "
                "processes, the download clients and the server under test compete "
                "for the CPUs, so every figure is a lower bound on the server alone"
            ),
            "figures": {row["key"]: row for row in rows},
            "raw": self.raw,
            "skipped": self.skipped,
            "errors": self.errors,
        }


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke run")
    parser.add_argument("--agents", type=int, default=1000, help="full run: agents")
    parser.add_argument("--processes", type=int, help="fleet worker processes")
    parser.add_argument("--package-mb", type=int, help="download package size")
    parser.add_argument("--peers", choices=["auto", "none"], default="auto")
    parser.add_argument(
        "--client",
        choices=["auto", "node", "python"],
        default="auto",
        help="the simulated agents' Socket.IO client (auto: node when "
        "bench/peers/node/setup.sh has run, else python)",
    )
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--skip",
        default="",
        help="comma-separated: ours, node, bare_python, nginx, console",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument(
        "--profile",
        type=Path,
        help="run our server under pyinstrument; write its text report here",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    settings = (
        suite.Settings.quick() if args.quick else suite.Settings.full(args.agents)
    )
    if args.processes:
        settings.processes = args.processes
    if args.package_mb:
        settings.package_mb = args.package_mb
    settings.client = pick_client(args.client)
    skip = frozenset(filter(None, args.skip.split(",")))
    unknown = skip - SKIPPABLE
    if unknown:
        raise SystemExit(
            f"python -m bench: --skip: unknown {', '.join(sorted(unknown))} "
            f"(choose from {', '.join(sorted(SKIPPABLE))})"
        )
    workdir = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    run = Run(settings, args.peers, workdir, skip)
    try:
        await run.execute()
    finally:
        if not args.keep:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
    return run.result("quick" if args.quick else "full")


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    raise_fd_limit()
    global PROFILE_PATH
    PROFILE_PATH = args.profile.resolve() if args.profile else None
    result = asyncio.run(_main(args))
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(report.heading(result), file=sys.stderr)
    print(report.table(list(result["figures"].values())), file=sys.stderr)
    for name, reason in result["skipped"].items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    for error in result["errors"]:
        print(f"ERROR {error}", file=sys.stderr)
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
