"""API keys for the write endpoints: where they come from and how a request is checked.

A key has a name (recorded as the submitter of what it adds) and a secret. Keys are given as
``name:secret`` strings (a bare ``secret`` gets the name ``key-<first 6 hex of its SHA-256>``),
as a ``{name: secret}`` mapping, in the environment variable ``LAMKIT_DB_API_KEYS``
(comma-separated; ``LAMKIT_API_KEYS`` too) or in a file named by ``LAMKIT_DB_API_KEYS_FILE``
(one key a line, ``#`` comments). Secrets are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from fastapi import HTTPException, Request

ENV_KEYS = "LAMKIT_DB_API_KEYS"
ENV_KEYS_CLI = "LAMKIT_API_KEYS"  # the name `lam db serve` documents; read as well
ENV_KEYS_FILE = "LAMKIT_DB_API_KEYS_FILE"
HEADER = "X-API-Key"


def _parse_entry(entry: str, where: str) -> tuple[str, str]:
    entry = entry.strip()
    name, sep, secret = entry.partition(":")
    if not sep:
        name, secret = "", entry
    name, secret = name.strip(), secret.strip()
    if not secret:
        raise ValueError(f"{where}: API key entry {entry!r} has an empty secret")
    if not name:
        name = "key-" + hashlib.sha256(secret.encode()).hexdigest()[:6]
    return name, secret


def parse_keys(
    keys: Iterable[str] | Mapping[str, str] | None, where: str = "api_keys"
) -> dict[str, str]:
    """``{secret: name}`` from ``name:secret`` strings, bare secrets or a ``{name: secret}``
    mapping."""
    if keys is None:
        return {}
    if isinstance(keys, str):
        keys = [k for k in keys.split(",") if k.strip()]
    pairs: list[tuple[str, str]]
    if isinstance(keys, Mapping):
        pairs = [(str(n), str(s)) for n, s in keys.items()]
    else:
        pairs = [_parse_entry(k, where) for k in keys]
    out: dict[str, str] = {}
    for name, secret in pairs:
        if secret in out and out[secret] != name:
            raise ValueError(f"{where}: the same secret is given for {out[secret]!r} and {name!r}")
        out[secret] = name
    return out


def keys_from_file(path: str | Path) -> dict[str, str]:
    """Keys from a text file: one ``name:secret`` (or bare secret) a line, ``#`` comments."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the API key file {path}: {exc.strerror}") from exc
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return parse_keys([ln for ln in lines if ln], where=str(path))


def keys_from_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Keys from ``LAMKIT_DB_API_KEYS`` and the file named by ``LAMKIT_DB_API_KEYS_FILE``."""
    environ = os.environ if environ is None else environ
    keys = parse_keys(environ.get(ENV_KEYS_CLI), where=ENV_KEYS_CLI)
    keys.update(parse_keys(environ.get(ENV_KEYS), where=ENV_KEYS))
    if environ.get(ENV_KEYS_FILE):
        keys.update(keys_from_file(environ[ENV_KEYS_FILE]))
    return keys


class KeyChecker:
    """A FastAPI dependency: the submitter name of a valid ``X-API-Key`` header.

    No header: 401. A wrong key, or a server started without keys: 403.
    """

    def __init__(self, keys: Mapping[str, str]):
        # encoded once; compare_digest wants bytes of any length
        self._keys = [(secret.encode(), name) for secret, name in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def __call__(self, request: Request) -> str:
        given = request.headers.get(HEADER)
        if not given:
            raise HTTPException(
                401,
                f"this endpoint needs an API key in the {HEADER} header",
                headers={"WWW-Authenticate": HEADER},
            )
        if not self._keys:
            raise HTTPException(403, "this server was started without API keys: writes are off")
        probe = given.encode()
        name = None
        for secret, owner in self._keys:  # no early exit: the time does not tell which matched
            if hmac.compare_digest(probe, secret):
                name = owner
        if name is None:
            raise HTTPException(403, f"the {HEADER} header does not hold a valid key")
        return name
