"""`freight status` and `freight memory`: what the cluster holds, read from its processes."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from freight.client import access
from freight.core.nodes import node_state
from freight.observe.catalogue import BYTE_RESOURCES

from . import common

PENDING_GROUPS_SHOWN = 20  # pending placement groups listed by `freight status`


def _gib(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def status_report(head_address: str, token: str, source: str = "") -> Any:
    """The cluster's status; ``source`` says how its address was found (for messages)."""
    from freight.client.head_client import HeadClient
    from freight.client.head_client import pb_module as pb

    client = HeadClient(head_address, token, source)
    try:
        st = client.call("ClusterStatus", pb.ClusterStatusRequest(), timeout=10)
    finally:
        client.close()
    _refresh_nodes(st, token)
    return st


def _refresh_nodes(st: Any, token: str) -> None:
    """Replace each node's heartbeat figures (up to a second old) with its agent's own."""
    from freight.client import agents
    from freight.client.head_client import pb_module as pb

    asked = [agents.Agent(n.node_id, n.agent_address, n.is_head_node) for n in st.nodes]
    answers = agents.ask_all(
        asked, token, lambda stub: stub.GetNodeStats(pb.GetNodeStatsRequest(), timeout=2)
    )
    fresh = {agent.node_id: reply for agent, reply, error in answers if error is None}
    available: dict[str, float] = {}
    for node in st.nodes:
        got = fresh.get(node.node_id)
        if got is not None:  # a node that does not answer keeps its heartbeat figures
            node.available.CopyFrom(got.node.available)
            node.stats.CopyFrom(got.node.stats)
        for k, v in node.available.amounts.items():
            available[k] = available.get(k, 0.0) + v
    st.available.amounts.clear()
    st.available.amounts.update(available)


def placement_group_demand(address: str | access.Target | None) -> dict[str, Any] | None:
    """Placement groups counted by state, and the first pending ones (bundles, reason), from the
    state API; None if it did not answer."""
    from freight import state

    try:
        pending = state.list_placement_groups(
            ["state=PENDING"], limit=PENDING_GROUPS_SHOWN, address=address, timeout=5
        )
        created = state.list_placement_groups(
            ["state=CREATED"], limit=1, address=address, timeout=5
        )
    except (ValueError, ConnectionError, PermissionError, OSError):
        return None
    # Two answers, two moments: a group created in between must not make a count negative.
    removed = max(0, pending.total - pending.matched - created.matched)
    return {
        "by_state": {"PENDING": pending.matched, "CREATED": created.matched, "REMOVED": removed},
        "pending": list(pending),
    }


def _bundles(bundles: list[dict[str, float]]) -> str:
    shown = ("{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(b.items())) + "}" for b in bundles)
    return ", ".join(shown)


def _is_infeasible(group: dict[str, Any]) -> bool:
    return str(group.get("pending_reason", "")).startswith("infeasible")


def render_status(
    st: Any, console: Console | None = None, placement_groups: dict[str, Any] | None = None
) -> None:
    """Print the cluster summary; ``placement_groups`` is :func:`placement_group_demand`'s."""
    console = console or common.console()
    console.print(f"[bold]freight cluster {st.cluster_name!r}[/bold]: {len(st.nodes)} node(s)")
    total, avail = dict(st.total.amounts), dict(st.available.amounts)
    res = Table(title="Resources (used / total)")
    res.add_column("resource")
    res.add_column("used", justify="right")
    res.add_column("total", justify="right")
    for k in sorted(total):
        used = total[k] - avail.get(k, 0.0)
        fmt = _gib if k in BYTE_RESOURCES else (lambda v: f"{v:g}")
        res.add_row(k, fmt(used), fmt(total[k]))
    console.print(res)
    nodes = Table(title="Nodes")
    for col in ("node", "state", "object store", "objects", "workers", "idle", "actors", "pending"):
        nodes.add_column(col)
    infeasible: list[str] = []
    for n in st.nodes:
        s = n.stats
        pending = ", ".join(f"{v} {k}" for k, v in sorted(s.pending_by_reason.items())) or "-"
        nodes.add_row(
            n.node_id[:12] + (" (head)" if n.is_head_node else ""),
            node_state(n.state, n.draining),
            f"{_gib(s.object_store_used)} / {_gib(s.object_store_capacity)}",
            str(s.num_objects),
            str(s.num_workers),
            str(s.num_idle_workers),
            str(s.num_actor_workers),
            pending,
        )
        infeasible += list(s.infeasible_shapes)
    console.print(nodes)
    for n in st.nodes:
        if n.draining:
            why = f" ({n.drain_reason})" if n.drain_reason else ""
            console.print(
                f"node {n.node_id[:12]} is draining{escape(why)}: it takes no new work "
                "(freight undrain opens it again)",
                highlight=False,
            )
    console.print(f"actors alive: {st.num_actors_alive}   jobs running: {st.num_jobs_running}")
    pending_groups = placement_groups["pending"] if placement_groups else []
    if placement_groups:
        counts = placement_groups["by_state"]
        waiting = [g for g in pending_groups if not _is_infeasible(g)]
        console.print(
            f"placement groups: {counts['CREATED']} created, {counts['PENDING']} pending "
            f"({len(pending_groups) - len(waiting)} infeasible), {counts['REMOVED']} removed"
        )
        if waiting:
            table = Table(title="Pending placement groups")
            for col in ("placement group", "name", "strategy", "bundles", "pending reason"):
                table.add_column(col)
            for g in waiting:
                table.add_row(
                    g["placement_group_id"],
                    escape(g["name"]) or "-",
                    g["strategy"],
                    escape(_bundles(g["bundles"])),
                    escape(g["pending_reason"] or "not placed yet"),
                )
            console.print(table)
        if len(pending_groups) < counts["PENDING"]:
            console.print(
                f"  ... and {counts['PENDING'] - len(pending_groups)} more pending: "
                "freight list placement_groups --filter state=PENDING"
            )
    infeasible_groups = [g for g in pending_groups if _is_infeasible(g)]
    if infeasible or infeasible_groups:
        console.print("[bold red]Infeasible demand[/bold red] (no node can ever run these):")
        for shape in sorted(set(infeasible)):
            console.print(f"  {shape}")
        for g in infeasible_groups:
            console.print(
                f"  placement group {g['placement_group_id']} ({g['strategy']}): "
                f"{escape(_bundles(g['bundles']))}: {escape(g['pending_reason'])}",
                highlight=False,
            )


def cmd_status(args: argparse.Namespace) -> int:
    target = common.target(args)
    st = status_report(target.address, target.token, target.source)
    from .state_cmd import pending_tasks_by_reason  # tasks waiting, from the state API

    pending = pending_tasks_by_reason(target)
    groups = placement_group_demand(target)
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        data = access.record(st)
        for node in data["nodes"]:
            node["state"] = node_state(node["state"], node["draining"])
        data["pending_tasks_by_reason"] = pending
        data["placement_groups"] = groups
        common.dump(data, fmt)
    else:
        render_status(st, placement_groups=groups)
        if pending:
            text = ", ".join(f"{n} {reason}" for reason, n in sorted(pending.items()))
            print(f"pending tasks: {text}")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "status", help="nodes, resources, object store, workers, pending tasks, placement groups"
    )
    common.add_address_option(p)
    common.add_output_option(p)
    p.set_defaults(func=cmd_status)
