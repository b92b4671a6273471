"""The cluster token: where it comes from and how a session directory gets one.

Kept apart from :mod:`freight.util.grpc_auth` (which re-exports these names) so the processes
that only read or create the token do not load gRPC for it.
"""

from __future__ import annotations

import os
import secrets

from freight.config import settings
from freight.util.private_files import write_private_file

TOKEN_FILE = "token"
STORAGE_TOKEN_SUFFIX = ".token"  # <storage>.token: the token of the cluster a store holds

__all__ = [
    "TOKEN_FILE",
    "create_token",
    "read_storage_token",
    "read_token",
    "storage_token_path",
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


def create_token(session_dir: str | os.PathLike[str]) -> str:
    """Create a new random token in ``<session_dir>/token`` (mode 0600) and return it.

    Raises ``FileExistsError`` if the session directory already has a token.
    """
    os.makedirs(session_dir, exist_ok=True)
    token = secrets.token_hex(32)
    path = os.path.join(os.fspath(session_dir), TOKEN_FILE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(token)
    return token


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
