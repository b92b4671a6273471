"""The `freight` command line."""

from __future__ import annotations

import argparse
import sys

from freight.config import settings_table

from . import cluster, demo, events_cmd, logs_cmd, memory_cmd, metrics_cmd, state_cmd, status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freight",
        description="freight: a task/actor runtime for Python, and the tools to operate it.",
        epilog="Environment settings:\n" + settings_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    cluster.add_parsers(sub)
    status.add_parsers(sub)
    memory_cmd.add_parsers(sub)
    logs_cmd.add_parsers(sub)
    events_cmd.add_parsers(sub)
    state_cmd.add_parsers(sub)
    metrics_cmd.add_parsers(sub)
    demo.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
