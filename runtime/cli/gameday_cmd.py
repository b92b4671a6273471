"""`freight gameday run|note`: game days, a plan of chaos experiments run in sequence against a
cluster under a workload, with go/no-go prompts, notes and a report (docs/gameday.md)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from freight.client import access

from . import common


def cmd_run(args: argparse.Namespace) -> int:
    from freight.chaos.gameday import notes, plan, report
    from freight.chaos.gameday.runner import GameDay, Prompter

    loaded = plan.load(args.plan)
    if not args.yes and not sys.stdin.isatty():
        raise access.UsageError(
            "there is no terminal to ask go/no-go on before each step: pass --yes to run every "
            "step without asking"
        )
    out_dir = args.output or f"gameday-{time.strftime('%Y%m%d-%H%M%S')}"
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise access.UsageError(
            f"--output {out_dir} already holds files (another run's report?): name an empty or "
            "new folder"
        )
    if loaded.cluster is not None and args.address:
        print("freight gameday: --address given: the plan's own cluster is not started")
    run = GameDay(loaded, out_dir, args.address, Prompter(args.yes, input)).run()
    table = report.summary_table(run)
    notes.append(run_notes(run), f"closing note: {report.verdict(run)}\n{table}", by="closing")
    run.notes = notes.read(run_notes(run))
    paths = report.write(run)
    print(f"\nfreight gameday: {run.plan.title}: {report.verdict(run)}\n")
    print(table)
    print(
        f"\nreport: {paths['markdown']}\njunit: {paths['junit']}\nchart: {paths['svg']}\n"
        f"journals: {os.path.join(run.out_dir, 'journals')}"
    )
    if not run.held:
        raise access.CommandFailed(f"not every hypothesis held: {report.verdict(run)}")
    return 0


def run_notes(run: Any) -> str:
    return os.path.join(run.out_dir, "notes.jsonl")


def cmd_note(args: argparse.Namespace) -> int:
    from freight.chaos.gameday import notes

    note, info = notes.add(" ".join(args.text))
    stamp = time.strftime("%H:%M:%S", time.gmtime(note.time))
    print(f"freight gameday note: added at {stamp} UTC to {info.get('title')!r}")
    return 0


def add_parsers(sub: Any) -> None:
    gameday = sub.add_parser(
        "gameday",
        help="run a game day: chaos experiments in sequence, with prompts, notes and a report",
        description="Game days (docs/gameday.md): a plan of Chaos Toolkit experiments run one "
        "after the other on a cluster under a checked workload, with a go/no-go before each, "
        "timestamped notes, recovery times, what was lost, the alerts and pages, and a report.",
    )
    what = gameday.add_subparsers(dest="gameday_what", metavar="WHAT", required=True)
    p = what.add_parser(
        "run",
        help="run a game day plan",
        description="Run the game day PLAN (YAML; chaos/gamedays/ ships some). Before each step "
        "it prints what the step will do and asks go? [y/N] ('n' skips the step); --yes asks "
        "nothing. Ctrl-C reverts the faults in force and writes the report so far. Exit 0 when "
        "every hypothesis held, 1 when one did not, 2 for a plan that is not valid.",
    )
    p.add_argument("plan", metavar="PLAN")
    p.add_argument("--yes", "-y", action="store_true", help="go for every step without asking")
    p.add_argument(
        "--output",
        "-o",
        metavar="DIR",
        default=None,
        help="folder for the report and journals (default ./gameday-YYYYMMDD-HHMMSS)",
    )
    common.add_address_option(p)
    p.set_defaults(func=cmd_run)
    p = what.add_parser(
        "note",
        help="add a timestamped note to the game day running here",
        description="Add TEXT, stamped now, to the game day running on this machine (under "
        "this FREIGHT_TEMP_DIR); it appears in the report's timeline.",
    )
    p.add_argument("text", nargs="+", metavar="TEXT")
    p.set_defaults(func=cmd_note)
