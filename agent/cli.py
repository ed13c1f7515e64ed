"""`deploy-agent`: the command line of the agent that runs on every device."""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path

from agent import __version__
from agent.client import Agent
from agent.config import (
    MSIEXEC_ENV,
    AgentConfig,
    default_state_dir,
    load_agent_id,
    msiexec_launcher,
)
from protocol import JoinRoom, PayloadError, parse_payload

log = logging.getLogger(__name__)

TOKEN_ENV = "DEPLOY_ENROLLMENT_TOKEN"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploy-agent",
        description="Connect this device to a Deploy Console server and install "
        "what it sends.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="INI file with an [agent] section (server, token, state_dir, "
        "install_root, msiexec, hostname); flags given on the command line win. "
        "The Windows setup writes one for the agent service",
    )
    parser.add_argument("--server", help="server URL, http://host:port")
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"enrollment token (or the environment variable {TOKEN_ENV})",
    )
    parser.add_argument("--state-dir", type=Path, help="where the agent keeps state")
    parser.add_argument("--agent-id", help="this agent's id (default: made once)")
    parser.add_argument(
        "--hostname",
        help="the name this device reports (default: the machine's host name); "
        "lets several agents on one machine look like separate devices",
    )
    parser.add_argument(
        "--install-root",
        type=Path,
        help="where zip packages are extracted; scripts get it as DEPLOY_INSTALL_ROOT "
        "(default: <state-dir>/installed)",
    )
    parser.add_argument(
        "--msiexec",
        help=f"command that runs msiexec, e.g. 'wine msiexec' (or {MSIEXEC_ENV}); "
        "default: msiexec on Windows, none elsewhere",
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
    )
    parser.add_argument(
        "--service",
        action="store_true",
        help="run under the Windows service manager (the setup registers this)",
    )
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def setup_logging(state_dir: Path, level: str) -> None:
    """A rotating log file in the state folder, and stderr."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file_handler = logging.handlers.RotatingFileHandler(
        state_dir / "agent.log", maxBytes=1_000_000, backupCount=5, encoding="utf-8"
    )
    stderr_handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in (file_handler, stderr_handler):
        handler.setFormatter(fmt)
        root.addHandler(handler)
    for noisy in ("socketio", "engineio", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def make_config(args: argparse.Namespace) -> AgentConfig:
    state_dir: Path = (args.state_dir or default_state_dir()).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    agent_id = args.agent_id or load_agent_id(state_dir)
    install_root = (args.install_root or state_dir / "installed").resolve()
    return AgentConfig(
        server_url=args.server,
        token=args.token,
        state_dir=state_dir,
        agent_id=agent_id,
        install_root=install_root,
        msiexec=msiexec_launcher(args.msiexec),
        hostname=args.hostname,
    )


async def _run(config: AgentConfig) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None and sys.platform != "win32":
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await Agent(config).run()


_CONFIG_KEYS = {
    "server": str,
    "token": str,
    "state_dir": Path,
    "install_root": Path,
    "msiexec": str,
    "hostname": str,
    "agent_id": str,
}


def apply_config_file(args: argparse.Namespace, path: Path) -> None:
    """Fill in options not given on the command line from the `[agent]` section.

    Raises OSError when the file cannot be read and ValueError when it is not INI.
    """
    parser = configparser.ConfigParser(interpolation=None)
    with path.open(encoding="utf-8-sig") as fh:
        try:
            parser.read_file(fh)
        except configparser.Error as exc:
            raise ValueError(str(exc).splitlines()[0]) from None
    if not parser.has_section("agent"):
        raise ValueError("it has no [agent] section")
    section = parser["agent"]
    for key, kind in _CONFIG_KEYS.items():
        value = section.get(key, "").strip()
        if value and getattr(args, key, None) in (None, ""):
            setattr(args, key, kind(value))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            apply_config_file(args, args.config)
        except (OSError, ValueError) as exc:
            parser.error(f"cannot use --config {args.config}: {exc}")
    if not args.server:
        parser.error("--server is required (or `server` in the --config file)")
    if not args.token:
        parser.error(f"--token is required (or set {TOKEN_ENV})")
    if not args.server.startswith(("http://", "https://")):
        parser.error("--server must be an http:// or https:// URL")
    try:
        config = make_config(args)
    except OSError as exc:
        print(f"deploy-agent: cannot use the state folder: {exc}", file=sys.stderr)
        return 2
    try:
        parse_payload(JoinRoom, {"room": config.agent_id})
    except PayloadError:
        parser.error("--agent-id may hold only letters, digits and _ . : -")
    setup_logging(config.state_dir, args.log_level)
    log.info(
        "deploy-agent %s starting: agent %s, server %s, state %s",
        __version__,
        config.agent_id,
        config.server_url,
        config.state_dir,
    )
    if args.service:
        from agent.winservice import ServiceUnavailableError, run_service

        try:
            return run_service(lambda: _run(config))
        except ServiceUnavailableError as exc:
            log.error("%s", exc)
            return 2
    asyncio.run(_run(config))
    log.info("deploy-agent stopped")
    return 0
