"""`freight runbook [NAME]`: the runbook of an alert, in the terminal.

Each alert's ``runbook_url`` is the same page under ``FREIGHT_RUNBOOK_BASE_URL``; this command
reads the copy installed with freight, so it works with no network.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from . import oncall_pack


def cmd_runbook(args: argparse.Namespace) -> int:
    if not args.name:
        names = oncall_pack.runbook_names()
        if not names:
            print("freight runbook: no runbooks are installed", file=sys.stderr)
            return 1
        for name in names:
            print(f"{name:<40} {oncall_pack.runbook_url(name)}")
        return 0
    name = args.name.removesuffix(".md")
    try:
        text = oncall_pack.runbook_text(name)
    except LookupError as e:
        print(f"freight runbook: {e}", file=sys.stderr)
        return 1
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.markdown import Markdown

        Console().print(Markdown(text))
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "runbook",
        help="print the runbook of an alert (no NAME: list them)",
        description="Print the runbook of alert NAME (rich Markdown on a terminal, plain text "
        "otherwise); with no NAME, list the runbooks and their URLs.",
    )
    p.add_argument(
        "name", nargs="?", default="", metavar="NAME", help="alert name, e.g. FreightHeadDown"
    )
    p.set_defaults(func=cmd_runbook)
