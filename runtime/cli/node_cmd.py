"""``freight drain`` and ``freight undrain``: take a node out of scheduling and back
(:func:`freight.actions.drain_node`; docs/decisions/0068-draining-nodes.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import common


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _cmd(undrain: bool) -> Any:
    def run(args: argparse.Namespace) -> int:
        from freight import actions

        act = actions.undrain_node if undrain else actions.drain_node
        address = common.target(args).address  # a missing cluster in --address terms
        got = act(args.node_id, reason=args.reason, address=address)
        fmt = common.chosen(args)
        if common.is_structured(fmt):
            common.dump(got._asdict(), fmt)
            return 0
        node = got.node_id[:12]
        if undrain:
            print(
                f"node {node} undrained: it takes new work again"
                if got.changed
                else f"node {node} was not draining: nothing changed"
            )
        else:
            print(
                f"node {node} is draining: it takes no new tasks, actors or placement group bundles"
                if got.changed
                else f"node {node} was draining already (reason: {got.reason or 'none given'})"
            )
            if got.node_told:
                print(
                    f"running there, and going on: {_plural(got.running_tasks, 'task')}, "
                    f"{_plural(got.running_actors, 'actor')}; "
                    f"{_plural(got.waiting, 'lease request')} waiting there"
                )
            if got.open_nodes == 0:
                print(
                    "freight drain: warning: no other alive node takes new work: new tasks and "
                    "actors wait (pending: every feasible node is draining) until a node is "
                    "undrained or joins",
                    file=sys.stderr,
                )
        if not got.node_told:
            print(
                f"freight: its agent did not answer; it learns at its next heartbeat "
                f"(`freight get node {node}` shows the node)",
                file=sys.stderr,
            )
        return 0

    return run


def add_parsers(sub: Any) -> None:
    for name, undrain, text in (
        (
            "drain",
            False,
            "stop scheduling new work on a node (what runs there goes on); kubectl's cordon",
        ),
        ("undrain", True, "let a drained node take new work again"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("node_id", metavar="NODE_ID", help="the node's id or a unique prefix")
        p.add_argument(
            "--reason", default="", help="why, for the OPERATOR_ACTION event that records it"
        )
        common.add_address_option(p)
        common.add_output_option(p)
        p.set_defaults(func=_cmd(undrain))
