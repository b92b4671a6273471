"""The `freight` command line."""

from __future__ import annotations

import argparse
import importlib
import sys

from freight.client import access
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
    "actions_cmd",
    "runbook_cmd",
    "monitoring_cmd",
    "demo",
    "settings_cmd",
    "node_cmd",
    "top_cmd",
    "chaos_cmd",
    "gameday_cmd",
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
    "cancel": "actions_cmd",
    "kill": "actions_cmd",
    "runbook": "runbook_cmd",
    "monitoring": "monitoring_cmd",
    "demo": "demo",
    "settings": "settings_cmd",
    "drain": "node_cmd",
    "undrain": "node_cmd",
    "top": "top_cmd",
    "chaos": "chaos_cmd",
    "gameday": "gameday_cmd",
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


# Options whose value may begin with "-" ("--since -5m"): argparse would take it for an option.
_DASH_VALUE_OPTIONS = ("--since", "--until")


def _join_dash_values(args: list[str]) -> list[str]:
    out: list[str] = []
    for arg in args:
        if out and out[-1] in _DASH_VALUE_OPTIONS and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    try:
        # Every command first checks every FREIGHT_* variable (the modules of some read settings
        # as they load): `freight start` with a bad one stops here, before it starts anything.
        check_settings()
        return _run(_join_dash_values(sys.argv[1:] if argv is None else list(argv)))
    except SettingsError as e:
        print(f"freight: {e}", file=sys.stderr)
        return access.EXIT_USAGE


def _run(args_in: list[str]) -> int:
    command = next((a for a in args_in if not a.startswith("-")), "")
    module = COMMANDS.get(command)
    parser = build_parser([module] if module else None)
    args = parser.parse_args(args_in)
    if not getattr(args, "func", None):
        parser.print_help()
        return access.EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return _broken_pipe()
    except Exception as e:  # the one mapping of errors to messages and exit codes
        code = exit_code(e)
        if code is None:
            raise  # a bug: its traceback is what helps
        print(f"freight {command}: {e}", file=sys.stderr)
        return code


def exit_code(e: BaseException) -> int | None:
    """The documented exit code of an error a command may end with (docs/cli.md); None for an
    error that is a bug."""
    from freight.core.filters import FilterError

    if isinstance(e, access.UsageError | FilterError):
        return access.EXIT_USAGE
    if isinstance(e, ConnectionError):
        return access.EXIT_UNREACHABLE
    if isinstance(e, PermissionError):
        return access.EXIT_DENIED
    if isinstance(e, access.NotFound | access.CommandFailed):
        return access.EXIT_FAILED
    return None


def _broken_pipe() -> int:
    """The reader of our output went away (`freight list tasks | head -1`): no traceback, and
    nothing more written (Python would complain again when it flushes stdout at exit)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return access.EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
