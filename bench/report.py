"""Turn the raw figures of a run into rows with peer ratios, and print them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """One reported number: where it sits in the raw results and what it is beside."""

    benchmark: str
    metric: str
    unit: str
    better: str
    """"lower" or "higher"."""
    peers: tuple[str, ...]
    goal: str = ""
    goal_ratio: float | None = None
    """The goal as ours/peer against the first peer (e.g. 1.5 for "within 1.5x")."""
    goal_value: float | None = None
    """The goal as an absolute value of ours."""


SOCKET_PEERS = ("node", "bare_python")

FIGURES: tuple[Figure, ...] = (
    Figure(
        "registration",
        "all_registered_s",
        "s",
        "lower",
        SOCKET_PEERS,
        "<= 1.5x node",
        goal_ratio=1.5,
    ),
    Figure("registration", "p50_s", "s", "lower", SOCKET_PEERS),
    Figure("registration", "errors", "count", "lower", SOCKET_PEERS),
    Figure("registration", "cpu_s_per_1000", "CPU s", "lower", SOCKET_PEERS),
    Figure("fanout", "api_call_s", "s", "lower", SOCKET_PEERS),
    Figure("fanout", "job_p50_s", "s", "lower", SOCKET_PEERS),
    Figure(
        "fanout",
        "job_p99_s",
        "s",
        "lower",
        SOCKET_PEERS,
        "<= 1.5x node",
        goal_ratio=1.5,
    ),
    Figure("fanout", "job_last_s", "s", "lower", SOCKET_PEERS),
    Figure("fanout", "all_success_s", "s", "lower", SOCKET_PEERS),
    Figure(
        "ingestion",
        "events_per_s",
        "events/s",
        "higher",
        ("sqlite_ceiling", *SOCKET_PEERS),
        ">= 5000/s",
        goal_value=5000,
    ),
    Figure("ingestion", "drain_s", "s", "lower", SOCKET_PEERS),
    Figure("console", "events_per_s", "events/s", "higher", ()),
    Figure("console", "lag_p50_ms", "ms", "lower", ()),
    Figure("console", "lag_p99_ms", "ms", "lower", (), "< 50 ms", goal_value=50),
    Figure("console", "lag_max_ms", "ms", "lower", ()),
    Figure("console", "device_list_s", "s", "lower", ()),
    *(
        Figure(
            "downloads",
            f"c{n}_mb_per_s",
            "MB/s",
            "higher",
            ("nginx",),
            ">= 0.5x nginx",
            goal_ratio=0.5,
        )
        for n in (1, 8, 32)
    ),
    *(
        Figure("downloads", f"c{n}_cpu_s_per_gb", "CPU s/GB", "lower", ("nginx",))
        for n in (1, 8, 32)
    ),
    Figure("downloads", "resume_ok", "bool", "higher", ("nginx",)),
    Figure(
        "memory",
        "kb_per_agent",
        "KB",
        "lower",
        SOCKET_PEERS,
        "<= 50 KB",
        goal_value=50,
    ),
)

FIGURE_KEYS = tuple(f"{f.benchmark}.{f.metric}" for f in FIGURES)


def flatten(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw figures of one server ({benchmark: {...}}) as {"benchmark.metric": value}."""
    flat: dict[str, Any] = {}
    for benchmark, values in raw.items():
        if not isinstance(values, dict):
            continue
        for metric, value in values.items():
            if benchmark == "downloads" and isinstance(value, dict):
                for sub, sub_value in value.items():
                    flat[f"downloads.{metric}_{sub}"] = sub_value
            elif not isinstance(value, dict | list):
                flat[f"{benchmark}.{metric}"] = value
    return flat


def build_rows(
    ours: dict[str, Any], peers: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """One row per figure: ours, each peer's value and ours/peer, and the goal."""
    ours_flat = flatten(ours)
    peers_flat = {name: flatten(raw) for name, raw in peers.items()}
    rows = []
    for figure in FIGURES:
        key = f"{figure.benchmark}.{figure.metric}"
        value = ours_flat.get(key)
        row: dict[str, Any] = {
            "key": key,
            "benchmark": figure.benchmark,
            "metric": figure.metric,
            "unit": figure.unit,
            "better": figure.better,
            "ours": value,
            "peers": {},
            "ratios": {},
            "goal": figure.goal or None,
            "meets_goal": None,
        }
        for peer in figure.peers:
            peer_value = peers_flat.get(peer, {}).get(key)
            row["peers"][peer] = peer_value
            row["ratios"][peer] = _ratio(value, peer_value)
        row["meets_goal"] = _meets(figure, value, row["ratios"])
        rows.append(row)
    return rows


def _ratio(ours: Any, peer: Any) -> float | None:
    if isinstance(ours, bool) or isinstance(peer, bool):
        return None
    if not isinstance(ours, int | float) or not isinstance(peer, int | float):
        return None
    if peer == 0:
        return None
    return ours / peer


def _meets(figure: Figure, value: Any, ratios: dict[str, float | None]) -> bool | None:
    if figure.goal_value is not None and isinstance(value, int | float):
        if figure.better == "lower":
            return value <= figure.goal_value
        return value >= figure.goal_value
    if figure.goal_ratio is not None and figure.peers:
        ratio = ratios.get(figure.peers[0])
        if ratio is None:
            return None
        if figure.better == "lower":
            return ratio <= figure.goal_ratio
        return ratio >= figure.goal_ratio
    return None


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


def heading(result: dict[str, Any]) -> str:
    """One line above the table: the run's size and what the agents ran on.

    The client matters to every socket figure: on two shared cores the fleet's
    clients compete with the server under test for CPU.
    """
    settings = result.get("settings", {})
    fleet = result.get("fleet") or {}
    if fleet.get("client") == "node":
        client = (
            f"node {fleet.get('node') or '?'} "
            f"socket.io-client {fleet.get('socket_io_client') or '?'}"
        )
    else:
        client = f"python-socketio {fleet.get('python_socketio') or '?'}"
    return (
        f"## {result.get('mode', '?')} run, {settings.get('agents', '?')} agents in "
        f"{settings.get('processes', '?')} fleet processes, fleet client: {client}"
    )


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table (also valid Markdown) of every row."""
    peer_names: list[str] = []
    for row in rows:
        for name in row["peers"]:
            if name not in peer_names:
                peer_names.append(name)
    header = ["figure", "unit", "ours"]
    for name in peer_names:
        header += [name, f"x {name}"]
    header += ["goal", "met"]
    lines = [header]
    for row in rows:
        cells = [row["key"], row["unit"], _fmt(row["ours"])]
        for name in peer_names:
            if name in row["peers"]:
                ratio = row["ratios"][name]
                cells += [
                    _fmt(row["peers"][name]),
                    "-" if ratio is None else f"{ratio:.2f}",
                ]
            else:
                cells += ["", ""]
        cells += [row["goal"] or "", _fmt(row["meets_goal"]) if row["goal"] else ""]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append(
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
            + " |"
        )
        if index == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
