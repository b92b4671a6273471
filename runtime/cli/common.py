"""What every `freight` command that talks to a cluster shares: the ``--address`` option (resolved
by :func:`freight.client.access.resolve`) and the one output convention (kubectl's).

``-o table|wide|json|yaml`` (``--output``): a table unless ``-o`` says otherwise, on a terminal
and in a pipe alike. JSON and YAML use snake_case field names and real numbers; every
list comes in the same envelope::

    {"kind": "tasks", "items": [...], "total": 500, "matched": 12, "returned": 12, ...}

with whatever completeness figures the source has (``warnings`` always).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from freight.client import access

FORMATS = ("table", "wide", "json", "yaml")


def add_address_option(p: argparse.ArgumentParser) -> None:
    """``--address`` on a command that talks to a cluster."""
    p.add_argument(
        "--address",
        default=None,
        metavar="HOST:PORT",
        help="the cluster's head (default: FREIGHT_ADDRESS, else the newest cluster on this "
        "machine, including programs' own init() clusters)",
    )


def target(args: argparse.Namespace) -> access.Target:
    """The cluster the command line names (see :mod:`freight.client.access`)."""
    return access.resolve(getattr(args, "address", None))


def add_output_option(p: argparse.ArgumentParser) -> None:
    """``-o/--output`` on a command that prints records."""
    p.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default=None,
        metavar="FORMAT",
        help="table (default), wide (more columns, ids and texts whole), json or yaml",
    )


def chosen(args: argparse.Namespace) -> str:
    """The format ``args`` asks for; a table unless asked (as kubectl: a script says ``-o json``,
    and gets the same output in a pipe as on a terminal)."""
    return str(getattr(args, "output", None) or "table")


def is_structured(fmt: str) -> bool:
    return fmt in ("json", "yaml")


def envelope(kind: str, items: list[Any], **meta: Any) -> dict[str, Any]:
    """The one shape of every list: ``kind``, ``items``, then completeness figures."""
    meta.setdefault("warnings", [])
    return {"kind": kind, "items": items, "returned": len(items), **meta}


def dump(data: Any, fmt: str) -> None:
    """Print ``data`` as JSON or YAML, a line at a time: one large write to a pipe whose reader
    has gone can end without an error, and the command must hear that it has."""
    if fmt == "yaml":
        import yaml

        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2, default=str) + "\n"
    write = sys.stdout.write
    for line in text.splitlines(keepends=True):
        write(line)
    sys.stdout.flush()


def console() -> Any:
    """A Rich console for tables, whose closed pipe ends the command as every closed pipe does
    (``freight.cli.main``: quietly, exit code 141), not with Rich's own exit code 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            raise BrokenPipeError

    return _Console()


def dump_line(data: Any) -> None:
    """One JSON document on one line (a streamed record of ``--watch``/``--follow``)."""
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    sys.stdout.flush()
