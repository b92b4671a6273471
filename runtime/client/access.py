"""How a client finds a freight cluster and talks to it: the one address resolver, the one
mapping of gRPC failures to errors people can act on, record decoding, and the exit codes of
the ``freight`` command.

Every client (the CLI, :mod:`freight.state`, the inspector, the chaos harness) resolves a cluster
the same way, first match wins:

1. the address it was given (``--address`` / ``address=``): ``HOST:PORT``, or ``auto`` for 4;
2. (in a program) the cluster the program is connected to;
3. ``FREIGHT_ADDRESS``;
4. the newest live cluster on this machine, including the private ones programs started with
   ``init()`` (as ``ray status`` finds the cluster ``ray.init()`` started).

The token is ``FREIGHT_TOKEN`` when set, else the ``token`` file of the cluster's session folder
on this machine. Nothing here imports the head's modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from freight import _launcher
from freight.config import settings
from freight.util.tokens import read_token

# Exit codes of every `freight` command (docs/cli.md).
EXIT_OK = 0
EXIT_FAILED = 1  # the command ran and failed: not found, refused by the cluster, a job failed
EXIT_USAGE = 2  # a bad option, argument, filter or setting: nothing was done
EXIT_UNREACHABLE = 3  # no cluster found, or it did not answer
EXIT_DENIED = 4  # the token is wrong, or its role may not do this
EXIT_PARTIAL = 5  # printed what answered; a warning names the nodes that did not
EXIT_BROKEN_PIPE = 141  # the reader of the output went away (128 + SIGPIPE, as `yes | head`)


class UsageError(ValueError):
    """The request itself is wrong (an address, a filter, an option): fix it and retry."""


class ClusterNotFound(ConnectionError):
    """No cluster was named and none runs on this machine."""


class ClusterUnreachable(ConnectionError):
    """The cluster named did not answer."""


class AccessDenied(PermissionError):
    """The cluster refused the token, or the token's role may not do this."""


class NotFound(LookupError):
    """The cluster answered, and has no such thing."""


class CommandFailed(Exception):
    """A command ran and failed in a way its message explains (exit code 1)."""


@dataclass(frozen=True)
class Target:
    """A cluster to talk to, and how it was found (for messages)."""

    address: str
    token: str
    session_dir: str  # its session folder on this machine, "" when it has none here
    source: (
        str  # "--address", "FREIGHT_ADDRESS", "this program's cluster", "newest on this machine"
    )


def live_clusters() -> list[tuple[str, dict[str, Any]]]:
    """(session dir, ``head.json``) of every live cluster this user has on this machine, newest
    first: those `freight start` started, the private ones of programs' ``init()``, and the
    folders of nodes that joined a head elsewhere (``remote``)."""
    root = settings.temp_dir
    try:
        names = os.listdir(root)
        _launcher.check_owned(os.path.realpath(root), "the session root (FREIGHT_TEMP_DIR)")
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        if not name.startswith("session_2"):
            continue
        session = os.path.join(root, name)
        info = _launcher.read_trusted_json(os.path.join(session, "head.json"))
        if info is None or not info.get("address"):
            continue
        alive = _launcher.session_alive(session) if info.get("remote") else None
        if alive is None:
            alive = _launcher.is_recorded_process(info)
        if alive:
            found.append((float(info.get("create_time") or 0.0), name, session, info))
    found.sort(reverse=True)
    return [(session, info) for _, _, session, info in found]


def resolve(address: str | None = None, *, flag: str = "--address") -> Target:
    """The cluster to talk to (see the module docstring); ``flag`` names the address option in
    messages (``--address`` for the CLI, ``address=`` for the Python API).

    Raises :class:`UsageError` for a malformed address, :class:`ClusterNotFound` when none is
    named and none runs here, :class:`AccessDenied` when the session root is not this user's own.
    """
    source = flag
    if address is None or address == "":
        connected = _connected()
        if connected is not None:
            return connected
        if settings.address:
            address, source = settings.address, "FREIGHT_ADDRESS"
        else:
            address = "auto"
    if not isinstance(address, str):
        raise UsageError(f"{flag} must be 'auto' or HOST:PORT, got {address!r}")
    address = address.strip()
    if address == "auto":
        try:
            clusters = live_clusters()
        except PermissionError as e:
            raise AccessDenied(str(e)) from None
        if not clusters:
            raise ClusterNotFound(not_found_message(flag))
        session, info = clusters[0]
        return Target(str(info["address"]), read_token(session), session, "newest on this machine")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(
            f"{source} must be HOST:PORT (for example 127.0.0.1:6380) or 'auto', got {address!r}"
        )
    session = _launcher.find_session_for(address) or ""
    token = settings.token.strip() or (read_token(session) if session else "")
    return Target(address, token, session, source)


def resolve_session(address: str | None = None, *, flag: str = "--address") -> str:
    """The session folder on this machine of the cluster ``address`` names, resolved in the
    same order as :func:`resolve` but without needing its head to run: for what outlives a
    head (its monitoring, its logs), which matters most when the head is down. ``auto`` is the
    newest live cluster, else the session `freight start --head` made last."""
    if not address:
        address = settings.address or "auto"
    if address != "auto":
        target = resolve(address, flag=flag)  # checks the form
        if target.session_dir:
            return target.session_dir
        raise ClusterNotFound(
            f"no session folder of the cluster at {target.address} is on this machine "
            f"(FREIGHT_TEMP_DIR={settings.temp_dir}); run this where its head runs."
        )
    try:
        clusters = live_clusters()
        session = clusters[0][0] if clusters else _launcher.latest_session()
    except PermissionError as e:
        raise AccessDenied(str(e)) from None
    if not session:
        raise ClusterNotFound(not_found_message(flag))
    return session


def not_found_message(flag: str = "--address") -> str:
    """The one "no cluster" message: what was tried, and what to do."""
    return (
        f"no running freight cluster found: no {flag} given, FREIGHT_ADDRESS is not set, and "
        f"no live cluster of this user is under {settings.temp_dir} (FREIGHT_TEMP_DIR). "
        f"Start one with `freight start --head`, or name one with {flag} HOST:PORT."
        if flag.startswith("--")
        else f"no running freight cluster found: no {flag} given, FREIGHT_ADDRESS is not set, "
        f"and no live cluster of this user is under {settings.temp_dir} (FREIGHT_TEMP_DIR). "
        f"Start one with `freight start --head` or init(), or pass {flag}'HOST:PORT'."
    )


def _connected() -> Target | None:
    """The cluster this program is connected to, if it is."""
    from freight import _api

    w = _api._worker
    if w is None:
        return None
    return Target(w.head_address, w.token, w.session_dir or "", "this program")


def rpc_error(e: grpc.RpcError, target: Target | str | None, what: str = "") -> Exception:
    """The error a failed gRPC call means, in words a user can act on: the one mapping every
    client uses. ``target`` is the cluster called (or its address); ``what`` names the thing
    asked for, for NOT_FOUND."""
    code = e.code() if hasattr(e, "code") else None
    details = e.details() if hasattr(e, "details") else str(e)
    if isinstance(target, str):
        target = Target(target, "", "", "--address")
    where = f"the freight cluster at {target.address}" if target else "the freight cluster"
    if target and target.source not in ("--address", "address="):
        where += f" ({target.source})"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return UsageError(details)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        hint = (
            " Set FREIGHT_TOKEN to that cluster's token (the 'token' file of its session folder "
            "on the head's machine)."
            if code == grpc.StatusCode.UNAUTHENTICATED
            else ""
        )
        return AccessDenied(f"{where} refused the request: {details}{hint}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ClusterUnreachable(
            f"{where} did not answer ({code.name}: {details}). Check the address and that its "
            "head runs (`freight status`)."
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(details or f"no {what}")
    return RuntimeError(f"{where} answered {code.name if code else 'an error'}: {details}")


def call(target: Target, fn: Callable[..., Any], request: Any, timeout: float | None) -> Any:
    """``fn(request, timeout=...)`` (a gRPC stub method), its failures mapped by
    :func:`rpc_error`."""
    try:
        return fn(request, timeout=timeout)
    except grpc.RpcError as e:
        raise rpc_error(e, target) from None


def record(message: Any) -> dict[str, Any]:
    """A protobuf message as a plain dict: the proto's snake_case field names, every field
    (defaults included, so each kind has one shape), numbers as numbers (int64 too, which
    protobuf's JSON mapping writes as strings), enums by name."""
    out: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: _value(value_field, v) for k, v in value.items()}
        elif field.is_repeated:
            out[field.name] = [_value(field, v) for v in value]
        else:
            out[field.name] = _value(field, value)
    return out


def _value(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return record(value)
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    if isinstance(value, bytes):
        return value.hex()
    return value
