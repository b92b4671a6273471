"""Choosing what a fault hits: a worker, an actor's process, a node agent or the head, named
through the state API (:mod:`freight.state`) and proven to be that very process before anything
is signalled.

A pid alone proves nothing (the process may have ended and its pid been given to another), so
each target carries the identity :func:`freight.util.process.identity` gives (pid, start time,
command line), checked against what the cluster recorded: a worker's start time from its agent's
listing, an agent's or the head's from the files they write in their session folders (the very
check `freight stop` makes). Faults act on processes of this machine only.
"""

from __future__ import annotations

import glob
import os
import random
import socket
from dataclasses import dataclass
from typing import Any

from freight import _launcher, state
from freight.client import access
from freight.config import settings
from freight.core.nodes import ALIVE
from freight.util.process import identity, is_recorded_process

from . import seed

LIMIT = 10_000  # the most rows a target is chosen among


class FaultRefused(access.CommandFailed):
    """A fault that would break the harness's promises (the last healthy node, the head without
    ``allow_head``) or that names nothing it can act on: nothing was done."""


@dataclass(frozen=True)
class ProcessTarget:
    """A process a fault acts on, as the state API named it and as this machine sees it."""

    kind: str  # "worker", "actor", "node", "head"
    id: str  # its worker, actor or node id; the head's address for the head
    node_id: str  # the node it runs on ("" for the head)
    process: dict[str, Any]  # pid, create_time, cmdline: what proves it is still that process

    @property
    def pid(self) -> int:
        return int(self.process["pid"])

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "id": self.id, "node_id": self.node_id}


def cluster(configuration: dict[str, Any] | None) -> access.Target:
    """The cluster an experiment acts on: its ``freight_address`` configuration, else what the
    one resolver finds (FREIGHT_ADDRESS, else the newest cluster on this machine)."""
    address = (configuration or {}).get("freight_address") or None
    return access.resolve(address, flag="freight_address")


def _filters(**wanted: str) -> list[tuple[str, str, str]]:
    return [(key, "=", value) for key, value in wanted.items() if value]


def one(
    kind: str,
    rows: list[dict[str, Any]],
    asked: dict[str, str],
    choose: random.Random | None,
    id_key: str,
) -> dict[str, Any]:
    """One of ``rows`` picked by ``choose`` (the run's seeded stream, :func:`seed.rng`; None:
    this process's), among them in the order of their ids, so that the same seed and the same
    cluster give the same pick whatever order the listing came in; or a refusal naming what
    was asked."""
    if not rows:
        what = ", ".join(f"{k}={v}" for k, v in asked.items() if v) or "any"
        raise FaultRefused(
            f"no {kind} matches {what} in the cluster now; `freight list {kind}s` shows them"
        )
    ordered = sorted(rows, key=lambda r: str(r.get(id_key, "")))
    return (choose or seed.rng(None, "targets")).choice(ordered)


def _local(node: dict[str, Any], kind: str) -> None:
    host = str(node.get("hostname") or "")
    if host and host != socket.gethostname():
        raise FaultRefused(
            f"the {kind} runs on host {host}, not on this one ({socket.gethostname()}): run the "
            "harness on that host"
        )


def _node_row(target: access.Target, node_id: str) -> dict[str, Any]:
    row = state.get_state("nodes", node_id, address=target) if node_id else None
    if row is None:
        raise FaultRefused(f"no node {node_id!r} in the cluster; `freight list nodes` shows them")
    return row


def _worker_process(target: access.Target, row: dict[str, Any], kind: str) -> dict[str, Any]:
    """The identity of the worker process ``row`` (a worker row) names, checked against the
    start time its agent reported."""
    pid = int(row.get("pid") or 0)
    if pid <= 0:
        raise FaultRefused(f"worker {row.get('worker_id')} has no process yet (still starting)")
    _local(_node_row(target, str(row.get("node_id") or "")), kind)
    now = identity(pid)
    claim = {"pid": pid, "create_time": row.get("start_time"), "cmdline": now.get("cmdline")}
    if not is_recorded_process(claim):
        raise FaultRefused(
            f"pid {pid} is not the process of worker {row.get('worker_id')} any more (it ended, "
            "or its pid was given to another process); nothing was signalled"
        )
    return claim


def _own_socket() -> str:
    """The owner socket of this process's driver ("" when it is none): what the workers it
    leases name as their ``lease_holder``."""
    import freight

    if not freight.is_initialized():
        return ""
    return str(freight._api._require_worker().address).split("|")[0]


def worker(
    target: access.Target,
    worker_id: str = "",
    node_id: str = "",
    actor_id: str = "",
    worker_state: str = "",
    choose: random.Random | None = None,
) -> ProcessTarget:
    """A worker process: one of those the state API lists that match every given field, picked
    by ``choose`` (see :func:`_one`)."""
    asked = {
        "worker_id": worker_id,
        "node_id": node_id,
        "actor_id": actor_id,
        "state": worker_state,
    }
    filters = [*_filters(**asked), ("pid", ">", "0")]
    rows = state.list_state("workers", filters, limit=LIMIT, address=target)
    # A pick not named by id leaves out the harness's own leases (its canary's worker): the
    # next canary would run on the worker the fault just killed.
    own = "" if worker_id else _own_socket()
    mine = [r for r in rows if own and str(r.get("lease_holder", "")).split("|")[0] == own]
    row = one("worker", [r for r in rows if r not in mine], asked, choose, "worker_id")
    process = _worker_process(target, row, "worker")
    return ProcessTarget("worker", str(row["worker_id"]), str(row["node_id"]), process)


def actor(
    target: access.Target,
    name: str = "",
    class_name: str = "",
    actor_id: str = "",
    namespace: str = "",
    choose: random.Random | None = None,
) -> ProcessTarget:
    """The process of a live actor: one of those the state API lists that match every given
    field, picked by ``choose`` (see :func:`_one`)."""
    asked = {"name": name, "class_name": class_name, "actor_id": actor_id, "namespace": namespace}
    filters = [*_filters(**asked), ("state", "=", ALIVE)]
    rows = state.list_state("actors", filters, limit=LIMIT, address=target)
    row = one("actor", list(rows), asked, choose, "actor_id")
    workers = state.list_state(
        "workers", [("worker_id", "=", str(row["worker_id"]))], limit=1, address=target
    )
    if not workers:
        raise FaultRefused(
            f"actor {row['actor_id']} has no worker process listed by its node (it is moving); "
            "try again once it is ALIVE"
        )
    process = _worker_process(target, workers[0], "actor")
    return ProcessTarget("actor", str(row["actor_id"]), str(row["node_id"]), process)


def alive_nodes(target: access.Target) -> list[dict[str, Any]]:
    """Nodes the head lists as ALIVE (not DEAD, not DRAINING: those take no work)."""
    return list(state.list_state("nodes", [("state", "=", ALIVE)], limit=LIMIT, address=target))


def node_agent(
    target: access.Target,
    node_id: str = "",
    hostname: str = "",
    choose: random.Random | None = None,
    pick_head_node: bool = True,
) -> ProcessTarget:
    """A node's agent process: one of the ALIVE nodes matching ``node_id`` (an id or a prefix)
    and ``hostname``, picked by ``choose`` (see :func:`one`), proven by the node file the
    agent wrote in its session folder here. With ``pick_head_node`` false, a pick among nodes
    not named (no ``node_id`` nor ``hostname``) leaves the head's node out: a fault that cannot
    act on it (a network fault: it shares the head's network) picks among the others."""
    named = bool(node_id or hostname)
    rows = [
        n
        for n in alive_nodes(target)
        if str(n["node_id"]).startswith(node_id)
        and (not hostname or n["hostname"] == hostname)
        and (named or pick_head_node or not n.get("is_head_node"))
    ]
    row = one("node", rows, {"node_id": node_id, "hostname": hostname}, choose, "node_id")
    _local(row, "node agent")
    nid = str(row["node_id"])
    for path in glob.glob(os.path.join(settings.temp_dir, "session_2*", "nodes", f"{nid}.json")):
        info = _launcher.read_trusted_json(path)
        if info and info.get("pid") == row.get("pid") and is_recorded_process(info):
            process = {k: info[k] for k in ("pid", "create_time", "cmdline")}
            return ProcessTarget("node", nid, nid, process)
    raise FaultRefused(
        f"no node file of node {nid} (pid {row.get('pid')}) under {settings.temp_dir} "
        "(FREIGHT_TEMP_DIR) proves which process is its agent: run the harness with the "
        "FREIGHT_TEMP_DIR the node was started with"
    )


def head(target: access.Target) -> ProcessTarget:
    """The head process of ``target``, proven by the ``head.json`` of its session folder."""
    info = (
        _launcher.read_trusted_json(os.path.join(target.session_dir, "head.json"))
        if target.session_dir
        else None
    )
    if not info or not is_recorded_process(info):
        raise FaultRefused(
            f"no live head of {target.address} has a session folder on this machine under "
            f"{settings.temp_dir} (FREIGHT_TEMP_DIR): run the harness on the head's machine"
        )
    process = {k: info[k] for k in ("pid", "create_time", "cmdline")}
    return ProcessTarget("head", target.address, "", process)
