"""`freight start`, `freight stop`: run cluster processes that outlive the command."""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from freight import _launcher
from freight.client import access
from freight.config import settings
from freight.util.private_files import check_owned, write_private_file
from freight.util.process import is_recorded_process, signal_recorded, wait_exit
from freight.util.tokens import (
    read_storage_token,
    read_token,
    write_session_tokens,
)


def _resources(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SystemExit(f"freight start: --resources must be JSON like '{{\"disk\": 2}}': {e}")
    if not isinstance(value, dict) or not all(
        isinstance(v, (int, float)) and v >= 0 for v in value.values()
    ):
        raise SystemExit("freight start: --resources must map names to non-negative numbers.")
    return {str(k): float(v) for k, v in value.items()}


def _labels(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SystemExit(f'freight start: --labels must be JSON like \'{{"zone": "a"}}\': {e}')
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SystemExit("freight start: --labels must map label names to string values.")
    return value


def _stored_token(storage: str) -> str:
    """The token of the cluster whose control store is ``storage`` ("" for a new store), so
    that a head started on it carries that cluster on. Opening the store first also stops here,
    with the reason, when it is damaged, in use or not private."""
    from freight.util.private_files import check_owned

    try:
        check_owned(os.path.dirname(storage), "the control store's folder", private=True)
        if not os.path.exists(storage):
            return ""
        from freight.head.control_store import ControlStore
        from freight.head.server import LEGACY_TOKEN_KV

        store = ControlStore(storage)
    except (RuntimeError, OSError) as e:
        raise SystemExit(f"freight start: {e}") from None
    try:
        legacy = store.kv_get(*LEGACY_TOKEN_KV)
    finally:
        store.close()
    return read_storage_token(storage) or (legacy or b"").decode()


def cmd_start(args: argparse.Namespace) -> int:
    try:
        return _start(args)
    except (RuntimeError, TimeoutError) as e:  # a process that failed to start says why
        raise SystemExit(f"freight start: {e}") from None


def _start(args: argparse.Namespace) -> int:
    resources = _resources(args.resources)
    labels = _labels(args.labels)
    for name in ("num_cpus", "num_gpus"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise SystemExit(f"freight start: --{name.replace('_', '-')} must be >= 0.")
    if not 0 <= args.metrics_port <= 65535:
        raise SystemExit("freight start: --metrics-port must be a port number (0: any free port).")
    if args.head == bool(args.address):
        raise SystemExit("freight start: give exactly one of --head or --address HOST:PORT.")
    storage = os.path.abspath(args.storage) if args.storage else ""
    if storage and not os.path.isdir(os.path.dirname(storage)):
        raise SystemExit(
            f"freight start: --storage: the folder {os.path.dirname(storage)} does not exist; "
            f"create it first, closed to other users: `mkdir -m 700 {os.path.dirname(storage)}`."
        )
    survivor = None
    if args.head:
        token = _stored_token(storage) if storage else ""
        survivor = _surviving_agent(storage) if storage else None
    if survivor is not None:
        # This machine's agent outlived the head: the head starts alone, in the agent's
        # session, where the agent dials it; the agent re-registers at its next heartbeat.
        session_dir = survivor.session_dir
        port = _reattach_port(args.port, survivor, storage)
        if token and not settings.token:
            write_session_tokens(session_dir, token)
        _, address = _launcher.start_head(
            session_dir,
            port,
            args.cluster_name,
            attached=False,
            bind=args.bind,
            metrics_port=args.metrics_port,
            storage=storage,
        )
        _launcher.point_latest(session_dir)
        node_id = survivor.node_id
        print(
            f"freight: this machine's node agent (pid {survivor.pid}) outlived the head; the "
            "head starts alone and the agent rejoins it."
        )
    elif args.head:
        # The head and this machine's agent start side by side (the agent learns the head's
        # address from the head itself).
        session_dir = _launcher.new_session_dir()
        if token and not settings.token:
            write_session_tokens(session_dir, token)
        procs = _launcher.start_cluster(
            session_dir,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            resources=resources,
            object_store_memory=args.object_store_memory,
            attached=False,
            port=args.port,
            cluster_name=args.cluster_name,
            bind=args.bind,
            metrics_port=args.metrics_port,
            labels=labels,
            storage=storage,
        )
        _mark_started(session_dir, storage, procs.head_address)
        _launcher.point_latest(session_dir)
        address, node_id = procs.head_address, procs.node_id
    else:
        address = args.address
        head_session = _launcher.find_session_for(address) or ""
        token = settings.token or (read_token(head_session) if head_session else "")
        if not token:
            raise SystemExit(
                f"freight start: no local session knows {address}; set FREIGHT_TOKEN to the "
                "cluster's token (the 'token' file in the head's session directory)."
            )
        # A node has a session folder of its own (sockets, logs, object store), also when it
        # joins a head on this same machine.
        session_dir = _launcher.new_session_dir()
        write_session_tokens(session_dir, token)
        with open(os.path.join(session_dir, "head.json"), "w") as f:
            json.dump({"address": address, "remote": True}, f)
        _mark_started(session_dir)
        specific = args.bind not in ("", "0.0.0.0", "::", "[::]")
        _, node_id = _launcher.start_agent(
            session_dir,
            address,
            num_cpus=args.num_cpus,
            num_gpus=args.num_gpus,
            resources=resources,
            object_store_memory=args.object_store_memory,
            head_node=False,
            attached=False,
            labels=labels,
            node_ip=args.node_ip or (args.bind if specific else ""),
        )
    print(f"freight {'head' if args.head else 'node'} started.")
    print(f"  address:      {address}")
    print(f"  node:         {node_id}")
    print(f"  session dir:  {session_dir}")
    print("Connect with freight.init(address='auto') on this machine, or")
    print(f"  freight start --address {address}   on another node (with FREIGHT_TOKEN set).")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _mark_started(session_dir: str, storage: str = "", head_address: str = "") -> None:
    """Mark ``session_dir`` as one `freight start` made, the only kind `freight stop` stops;
    with the head's store and address, for a head started again on that store to find the
    agent it left."""
    info = {"started_by": "freight start", "storage": storage, "head_address": head_address}
    write_private_file(os.path.join(session_dir, _launcher.STARTED_FILE), json.dumps(info))


@dataclass(frozen=True)
class _Survivor:
    """This machine's node agent of a cluster whose head has died."""

    session_dir: str
    head_address: str  # where the agent dials its head
    node_id: str
    pid: int


def _surviving_agent(storage: str) -> _Survivor | None:
    """The agent `freight start --head --storage STORAGE` started here, if it runs on while
    that head has gone (checked as `freight stop` checks: this user's files, the very process
    they recorded)."""
    root = settings.temp_dir
    for session_dir in sorted(glob.glob(os.path.join(root, "session_2*")), reverse=True):
        started = _launcher.read_trusted_json(os.path.join(session_dir, _launcher.STARTED_FILE))
        if not started or started.get("storage") != storage or not started.get("head_address"):
            continue
        live = [
            (path, info)
            for path, info in _launcher.process_files(session_dir)
            if is_recorded_process(info)
        ]
        if any(os.path.basename(path) == "head.json" for path, _ in live):
            continue  # its head runs (and holds the store: opening it said so already)
        for _, info in live:
            if info.get("node_id"):
                return _Survivor(
                    session_dir, str(started["head_address"]), str(info["node_id"]), info["pid"]
                )
    return None


def _reattach_port(port: int, survivor: _Survivor, storage: str) -> int:
    """The port the head restarted for ``survivor`` listens on: the one the agent dials."""
    dialled = int(survivor.head_address.rpartition(":")[2])
    if port not in (0, dialled):
        raise SystemExit(
            f"freight start: this machine's node agent of the cluster on {storage} (pid "
            f"{survivor.pid}) outlived its head and dials it at {survivor.head_address}; start "
            f"the head on that port (--port {dialled}) so that the agent finds it, or stop the "
            "agent first (`freight stop`)."
        )
    return dialled


def _started_processes(root: str) -> tuple[list[str], list[dict[str, Any]]]:
    """This user's sessions under ``root`` and, of those `freight start` made, the live
    processes their files name, agents before the head (agents stop their workers)."""
    sessions, procs = [], []
    for session_dir in sorted(glob.glob(os.path.join(root, "session_2*"))):
        try:
            check_owned(session_dir, "the session folder")
        except OSError:
            continue  # another user's, or open to their writes: none of ours
        sessions.append(session_dir)
        if _launcher.read_trusted_json(os.path.join(session_dir, _launcher.STARTED_FILE)) is None:
            continue  # a program's own init() cluster: it stops that itself
        for path, info in reversed(_launcher.process_files(session_dir)):
            if is_recorded_process(info):
                if all(p["pid"] != info["pid"] for p in procs):  # a head restarted in place
                    procs.append(info)
            elif _alive(info["pid"]):
                print(
                    f"freight stop: left pid {info['pid']} alone: it is not the process "
                    f"{path} names (that one ended and its pid was given to another)."
                )
    return sessions, procs


def _stop_monitoring(sessions: list[str]) -> None:
    """Stop what `freight monitoring up` started for the clusters `freight stop` stops."""
    from .monitoring_cmd import stop_monitoring

    for session_dir in sessions:
        if _launcher.read_trusted_json(os.path.join(session_dir, _launcher.STARTED_FILE)) is None:
            continue  # a program's own init() cluster keeps running, and so does its monitoring
        stopped = stop_monitoring(session_dir)
        if stopped:
            print(f"freight stop: stopped {', '.join(stopped)} (freight monitoring).")


def cmd_stop(args: argparse.Namespace) -> int:
    if args.address is not None and args.session is not None:
        raise access.UsageError("give --address or --session, not both")
    if args.address is not None:
        return _stop_named(args.address, args.reason)
    if args.session is not None:
        return _stop_session(args.session, args)
    root = settings.temp_dir
    if not os.path.isdir(root):
        print("freight stop: stopped 0 process(es).")
        return 0
    try:
        check_owned(os.path.realpath(root), "the session root (FREIGHT_TEMP_DIR)")
    except PermissionError as e:
        raise SystemExit(f"freight stop: {e}") from None
    sessions, procs = _started_processes(root)
    _terminate(procs, args.grace)
    for session_dir in sessions:
        _launcher.remove_stale_files(session_dir)
    print(f"freight stop: stopped {len(procs)} process(es).")
    _stop_monitoring(sessions)
    return 0


def _terminate(procs: list[dict[str, Any]], grace: float) -> None:
    """SIGTERM the recorded processes; SIGKILL those still alive after ``grace`` seconds."""
    for info in procs:
        signal_recorded(info, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for info in procs:
        pid = info["pid"]
        while _alive(pid) and time.monotonic() < deadline:
            wait_exit(pid, max(0.0, deadline - time.monotonic()))
        if _alive(pid):
            signal_recorded(info, signal.SIGKILL)


def _stop_named(address: str, reason: str) -> int:
    """`freight stop --address`: the head stops every live node, records it, and stops."""
    from freight import actions

    result = actions.stop_cluster(address, reason=reason)
    session = _launcher.find_session_for(result.target)
    if session:
        _launcher.remove_stale_files(session)
    print(f"freight stop: {result.message}.")
    return 0


def _stop_session(session_dir: str, args: argparse.Namespace) -> int:
    """`freight stop --session DIR`: the cluster of one session folder on this machine, started
    by `freight start` or by a program's init(). Its head, while it answers, stops its nodes and
    records the action; the processes the folder records are then signalled as plain `freight
    stop` does (those of a head that no longer answers too)."""
    from freight import actions

    session_dir = os.path.abspath(session_dir)
    if not os.path.isfile(os.path.join(session_dir, "token")):
        raise access.UsageError(
            f"{session_dir} is not a freight session folder (no token file in it); the folders "
            f"are {settings.temp_dir}/session_* (FREIGHT_TEMP_DIR)"
        )
    try:
        check_owned(session_dir, "the session folder")
    except OSError as e:
        raise access.AccessDenied(str(e)) from None
    head = _launcher.read_trusted_json(os.path.join(session_dir, "head.json"))
    stopped_by_head = ""
    if head is not None and head.get("address") and is_recorded_process(head):
        try:
            # Its own pace to wind down (as --address waits), then the signals below.
            stopped_by_head = actions.stop_cluster(str(head["address"]), reason=args.reason).message
        except (ConnectionError, access.CommandFailed) as e:
            print(f"freight stop: the head did not stop on request ({e}); signalling it")
    procs = [info for _, info in reversed(_launcher.process_files(session_dir))]
    procs = [info for info in procs if is_recorded_process(info)]
    _terminate(procs, args.grace)
    _launcher.remove_stale_files(session_dir)
    if stopped_by_head:
        print(f"freight stop: {stopped_by_head}.")
    print(f"freight stop: stopped {len(procs)} more process(es) of {session_dir}.")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("start", help="start a head (--head) or a node agent (--address)")
    p.add_argument("--head", action="store_true", help="start the head and a node agent here")
    p.add_argument("--address", default="", help="join the cluster whose head is HOST:PORT")
    p.add_argument("--port", type=int, default=6390, help="head gRPC port (default 6390)")
    p.add_argument("--bind", default="127.0.0.1", help="address the head listens on")
    p.add_argument("--num-cpus", type=float, default=None)
    p.add_argument("--num-gpus", type=float, default=None)
    p.add_argument(
        "--resources", default=None, help="custom resources as JSON, e.g. '{\"disk\": 2}'"
    )
    p.add_argument("--object-store-memory", type=int, default=None, help="bytes")
    p.add_argument("--labels", default=None, help='node labels as JSON, e.g. \'{"zone": "a"}\'')
    p.add_argument(
        "--node-ip",
        default="",
        help="address other nodes reach this node's processes at (default: --bind)",
    )
    p.add_argument("--cluster-name", default="freight")
    p.add_argument(
        "--storage",
        default="",
        help="the head's control store (SQLite file; default: in the session directory). "
        "Started again on the file of a head that died, the head carries on its cluster: "
        "nodes, actors, jobs, placement groups and the token",
    )
    p.add_argument(
        "--metrics-port", type=int, default=0, help="the head's /metrics port (0: any free port)"
    )
    p.set_defaults(func=cmd_start)
    p = sub.add_parser(
        "stop",
        help="stop what 'freight start' started, or one cluster (--address/--session)",
        description="With no option: stop every freight process 'freight start' started on "
        "this machine (a program's own init() cluster is left to that program). With --address: "
        "stop that cluster, wherever it runs: its head asks every live node's agent to stop "
        "(workers with it), records the action as a cluster event, then stops. With --session: "
        "the cluster of that session folder on this machine (init() clusters too).",
    )
    p.add_argument("--grace", type=float, default=5.0, help="seconds before SIGKILL")
    p.add_argument(
        "--address", default=None, metavar="HOST:PORT", help="stop the cluster whose head this is"
    )
    p.add_argument(
        "--session",
        default=None,
        metavar="DIR",
        help="stop the cluster of this session folder (FREIGHT_TEMP_DIR/session_*)",
    )
    p.add_argument(
        "--reason",
        default="",
        metavar="TEXT",
        help="why (recorded in the cluster event of a stop through the head)",
    )
    p.set_defaults(func=cmd_stop)
