"""The enrollment token (agents) and admin token (consoles, HTTP API).

Tokens given in `ServerConfig` win; the others are generated once with `secrets` and
kept in `data_dir/tokens.json` (readable by the owner only), so agents installed with
a token keep working after a restart.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from server.errors import DataDirError

log = logging.getLogger(__name__)

TOKENS_FILE = "tokens.json"


@dataclass
class Tokens:
    enrollment: str
    admin: str
    generated: bool = False
    """True when at least one token was made just now (the CLI shows them once)."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def tokens_match(given: object, expected: str) -> bool:
    """Constant-time comparison that also refuses non-strings and empty tokens."""
    if not isinstance(given, str) or not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def load_tokens(data_dir: Path, enrollment: str | None, admin: str | None) -> Tokens:
    """The tokens to use: given ones, else stored ones, else new ones (then stored).

    Runs blocking file I/O; call it from an executor (or at start, before serving).
    """
    path = data_dir / TOKENS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataDirError(f"Cannot read the tokens file {path}: {exc}") from exc

    generated = False
    tokens: dict[str, str] = {}
    to_store = dict(stored)
    for kind, given in (("enrollment", enrollment), ("admin", admin)):
        if given:
            tokens[kind] = given  # from a flag or env var: it stays there
            continue
        value = stored.get(kind)
        if not isinstance(value, str) or not value:
            value = new_token()
            to_store[kind] = value
            generated = True
        tokens[kind] = value

    if generated:
        save_tokens(data_dir, to_store)
    return Tokens(tokens["enrollment"], tokens["admin"], generated)


def save_tokens(data_dir: Path, tokens: dict[str, str]) -> None:
    """Write `tokens.json` atomically with owner-only permissions."""
    path = data_dir / TOKENS_FILE
    tmp = path.with_suffix(".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(tokens, fh, indent=2)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise DataDirError(f"Cannot write the tokens file {path}: {exc}") from exc


def store_enrollment_token(data_dir: Path, token: str) -> None:
    """Persist a regenerated enrollment token next to the stored admin token."""
    path = data_dir / TOKENS_FILE
    stored: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        stored = json.loads(path.read_text(encoding="utf-8"))
    save_tokens(data_dir, {**stored, "enrollment": token})
