"""The cluster token: where it comes from and how a session directory gets one.

Kept apart from :mod:`freight.util.grpc_auth` (which re-exports these names) so the processes
that only read or create the token do not load gRPC for it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

from freight.config import settings
from freight.util.private_files import write_private_file

TOKEN_FILE = "token"
# The read-only token (docs/decisions/0060-read-only-token.md): it reads state, watches, job logs
# and service discovery, and every call that changes the cluster refuses it. It is derived from
# the admin token, so every process that knows the admin token knows it too, and a cluster
# restarted on its control store keeps it; the admin token cannot be found from it.
READONLY_TOKEN_FILE = "token.readonly"
_READONLY_KEY = b"freight read-only token v1"
STORAGE_TOKEN_SUFFIX = ".token"  # <storage>.token: the token of the cluster a store holds

__all__ = [
    "READONLY_TOKEN_FILE",
    "TOKEN_FILE",
    "create_token",
    "read_storage_token",
    "read_token",
    "read_token_file",
    "readonly_token",
    "storage_token_path",
    "write_session_tokens",
    "write_token",
]


def read_token(session_dir: str | os.PathLike[str] | None) -> str:
    """Return the cluster token: ``FREIGHT_TOKEN`` if set, else ``<session_dir>/token``."""
    token = settings.token.strip()
    if token:
        return token
    if session_dir is None:
        raise ValueError(
            "freight: no cluster token: FREIGHT_TOKEN is not set and no session directory was "
            "given to read the 'token' file from."
        )
    path = os.path.join(os.fspath(session_dir), TOKEN_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"freight: no cluster token: FREIGHT_TOKEN is not set and {path} does not exist. "
            "Start the head with `freight start --head`, or set FREIGHT_TOKEN."
        ) from None
    if not token:
        raise ValueError(f"freight: the token file {path} is empty; set FREIGHT_TOKEN instead.")
    return token


def read_token_file(session_dir: str | os.PathLike[str]) -> str:
    """The admin token in ``<session_dir>/token`` (whatever FREIGHT_TOKEN says), or ""."""
    try:
        with open(os.path.join(os.fspath(session_dir), TOKEN_FILE), encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def readonly_token(token: str) -> str:
    """The read-only token of the cluster whose admin token is ``token``."""
    return hmac.new(token.encode(), _READONLY_KEY, hashlib.sha256).hexdigest()


def create_token(session_dir: str | os.PathLike[str]) -> str:
    """Create a new random token in ``<session_dir>/token`` (mode 0600), and its read-only
    token in ``token.readonly``; return the token.

    Raises ``FileExistsError`` if the session directory already has a token.
    """
    os.makedirs(session_dir, exist_ok=True)
    token = secrets.token_hex(32)
    path = os.path.join(os.fspath(session_dir), TOKEN_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token)
    write_private_file(
        os.path.join(os.fspath(session_dir), READONLY_TOKEN_FILE), readonly_token(token)
    )
    return token


def write_session_tokens(session_dir: str | os.PathLike[str], token: str) -> None:
    """Write ``token`` and its read-only token into ``session_dir`` (mode 0600, atomically)."""
    write_token(os.path.join(os.fspath(session_dir), TOKEN_FILE), token)
    write_token(os.path.join(os.fspath(session_dir), READONLY_TOKEN_FILE), readonly_token(token))


def write_token(path: str | os.PathLike[str], token: str) -> None:
    """Write ``token`` to the file ``path`` (mode 0600, atomically)."""
    write_private_file(os.fspath(path), token)


def storage_token_path(storage: str) -> str:
    """The file next to the control store ``storage`` that keeps its cluster's token.

    The token is not in the store itself: SQLite's log and free pages keep old values, and the
    store is copied and backed up more freely than a secret should be."""
    return storage + STORAGE_TOKEN_SUFFIX


def read_storage_token(storage: str) -> str:
    """The token of the cluster whose control store is ``storage``, or "" if none is kept."""
    try:
        with open(storage_token_path(storage), encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""
