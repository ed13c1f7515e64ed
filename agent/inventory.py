"""What the agent tells the server about its device when it registers."""

from __future__ import annotations

import platform
import socket
import sys

import psutil

from agent import __version__
from protocol import Platform

_PLATFORMS = {"win32": Platform.WINDOWS, "darwin": Platform.MACOS}


def device_platform() -> Platform:
    return _PLATFORMS.get(sys.platform, Platform.LINUX)


def os_version() -> str:
    if sys.platform == "win32":  # pragma: no cover - Windows only
        return f"Windows {platform.release()} ({platform.version()})"
    if sys.platform == "darwin":  # pragma: no cover - macOS only
        return f"macOS {platform.mac_ver()[0]}"
    try:
        name = platform.freedesktop_os_release().get("PRETTY_NAME", "Linux")
    except OSError:
        name = "Linux"
    return f"{name} (kernel {platform.release()})"


def primary_address(server_host: str | None = None) -> tuple[str | None, str | None]:
    """(ip, mac) of the interface that carries traffic to the server, if known.

    The route is found by "connecting" a UDP socket (no packet is sent); its local
    address is then matched to an interface through psutil.
    """
    ip = None
    if server_host:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect((server_host, 9))
                ip = probe.getsockname()[0]
        except OSError:
            ip = None
    interfaces = psutil.net_if_addrs()
    fallback: tuple[str | None, str | None] = (ip, None)
    for addrs in interfaces.values():
        ipv4 = [a.address for a in addrs if a.family == socket.AF_INET]
        macs = [a.address for a in addrs if a.family == psutil.AF_LINK]
        mac = next((m for m in macs if m and m != "00:00:00:00:00:00"), None)
        if ip and ip in ipv4:
            return ip, mac
        if fallback[1] is None and mac and ipv4 and not ipv4[0].startswith("127."):
            fallback = (ip or ipv4[0], mac)
    return fallback


def inventory(
    agent_id: str, server_host: str | None, hostname: str | None = None
) -> dict[str, object]:
    """The `agent_register` payload for this device; `hostname` overrides the name."""
    ip, mac = primary_address(server_host)
    payload: dict[str, object] = {
        "agent_id": agent_id,
        "hostname": hostname or socket.gethostname() or "unknown",
        "platform": device_platform().value,
        "os_version": os_version()[:255],
        "agent_version": __version__,
    }
    if ip:
        payload["ip"] = ip
    if mac:
        payload["mac"] = mac.replace("-", ":").lower()
    return payload
