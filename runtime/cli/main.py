"""The `freight` command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from freight.config import SettingsError, check_settings

# The module that defines each command; a command loads only its own module (`freight start`
# does not load the state, metrics and log tools, nor rich or yaml).
MODULES = [
    "cluster",
    "status",
    "memory_cmd",
    "logs_cmd",
    "events_cmd",
    "state_cmd",
    "metrics_cmd",
    "job_cmd",
    "runbook_cmd",
    "monitoring_cmd",
    "demo",
    "settings_cmd",
]
COMMANDS = {
    "start": "cluster",
    "stop": "cluster",
    "status": "status",
    "memory": "memory_cmd",
    "logs": "logs_cmd",
    "events": "events_cmd",
    "list": "state_cmd",
    "get": "state_cmd",
    "summary": "state_cmd",
    "timeline": "state_cmd",
    "metrics": "metrics_cmd",
    "job": "job_cmd",
    "runbook": "runbook_cmd",
    "monitoring": "monitoring_cmd",
    "demo": "demo",
    "settings": "settings_cmd",
}


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with the commands of ``modules`` (default: all of them)."""
    parser = argparse.ArgumentParser(
        prog="freight",
        description="freight: a task/actor runtime for Python, and the tools to operate it.",
        epilog="Environment settings: 'freight settings' lists every FREIGHT_* variable.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in MODULES if modules is None else modules:
        importlib.import_module(f"freight.cli.{name}").add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        # Every command first checks every FREIGHT_* variable (the modules of some read settings
        # as they load): `freight start` with a bad one stops here, before it starts anything.
        check_settings()
        return _run(sys.argv[1:] if argv is None else argv)
    except SettingsError as e:
        print(f"freight: {e}", file=sys.stderr)
        return 2


def _run(args_in: list[str]) -> int:
    command = next((a for a in args_in if not a.startswith("-")), "")
    module = COMMANDS.get(command)
    parser = build_parser([module] if module else None)
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
