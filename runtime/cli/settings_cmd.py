"""`freight settings [NAME ...]`: every FREIGHT_* setting, its value in effect and its default.

The settings are declared in :mod:`freight.config`; this command and docs/settings.md read the
same declarations. Secret settings (the token) are never printed, only whether they are set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import textwrap
from typing import Any

from freight.client import access
from freight.config import ENV_PREFIX, SETTINGS, Setting, settings

from . import common

_HIDDEN = "(hidden)"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else '""'


def _record(setting: Setting) -> dict[str, Any]:
    """One setting as JSON: real types, snake_case names."""
    is_set = bool(os.environ.get(setting.env))
    value = getattr(settings, setting.name)
    if setting.secret:
        value = _HIDDEN if is_set else ""
    return {
        "name": setting.name,
        "variable": setting.env,
        "value": value,
        "default": setting.default,
        "set": is_set,
        "type": setting.type.__name__,
        "accepted": setting.accepted,
        "meaning": setting.help,
    }


def _select(names: list[str]) -> list[Setting]:
    chosen = []
    for name in names:
        key = name.upper().removeprefix(ENV_PREFIX).lower()
        if key not in SETTINGS:
            raise LookupError(f"no setting named {name!r}; 'freight settings' lists them all")
        chosen.append(SETTINGS[key])
    return chosen


def _default_text(setting: Setting) -> str:
    return setting.shown or _text(setting.default)


def _value_text(record: dict[str, Any]) -> str:
    return _text(record["value"]) if record["set"] else "-"


def _print_table(chosen: list[Setting]) -> None:
    records = [_record(s) for s in chosen]
    header = ("VARIABLE", "VALUE", "DEFAULT", "MEANING")
    rows = [
        (r["variable"], _value_text(r), _default_text(s))
        for r, s in zip(records, chosen, strict=True)
    ]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(3)]
    width = shutil.get_terminal_size((0, 0)).columns if sys.stdout.isatty() else 0
    prefix = sum(widths) + 3 * 2
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=False)) + "  " + header[3])
    for row, record in zip(rows, records, strict=True):
        meaning = record["meaning"]
        room = width - prefix
        if width and 10 < room < len(meaning):  # a terminal: one line per setting
            meaning = meaning[: room - 3] + "..."
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + meaning)


def _print_details(chosen: list[Setting]) -> None:
    for i, setting in enumerate(chosen):
        record = _record(setting)
        if i:
            print()
        print(setting.env)
        value = _text(record["value"]) if record["set"] else f"{_default_text(setting)} (default)"
        print(f"  value:    {value}")
        print(f"  default:  {_default_text(setting)}")
        print(f"  accepted: {setting.accepted}")
        for line in textwrap.wrap(setting.help, 88, initial_indent="  ", subsequent_indent="  "):
            print(line)


def cmd_settings(args: argparse.Namespace) -> int:
    try:
        chosen = _select(args.names) if args.names else list(SETTINGS.values())
    except LookupError as e:
        raise access.UsageError(str(e)) from None
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        common.dump(common.envelope("settings", [_record(s) for s in chosen]), fmt)
    elif args.names:
        _print_details(chosen)
    else:
        _print_table(chosen)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "settings",
        help="every FREIGHT_* environment setting: value in effect, default, meaning",
        description=(
            "Every FREIGHT_* environment variable freight reads: its value in this environment\n"
            "('-' when unset, so the default applies), its default and its meaning. Name\n"
            "settings (FREIGHT_USE_TLS or use_tls) to see them in full with the values they\n"
            "accept. A value that is not valid is reported, with what is accepted, by every\n"
            "command (exit code 2)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these settings, in full")
    common.add_output_option(p)
    p.set_defaults(func=cmd_settings)
