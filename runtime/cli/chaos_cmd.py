"""`freight chaos run|discover|recover`: chaos experiments against a freight cluster.

Experiments are Chaos Toolkit files run by chaoslib itself (the same file runs with the stock
`chaos run`); their faults and probes are :mod:`freight.chaos.actions` and
:mod:`freight.chaos.probes`. docs/chaos.md tells how to write and run one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

from freight.client import access

from . import common


def _load(path: str) -> dict[str, Any]:
    """The experiment of ``path``, loaded and checked by chaoslib; a file that is not one is a
    usage error naming the file and what is wrong with it."""
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.loader import load_experiment

    if not os.path.isfile(path):
        raise access.UsageError(f"{path}: no such experiment file")
    try:
        experiment = load_experiment(path)
    except ChaosException as e:
        raise access.UsageError(f"{path} is not an experiment: {e}") from None
    except ValueError as e:  # a JSON syntax error (chaoslib leaves it to json.load)
        raise access.UsageError(f"{path} is not valid JSON: {e}") from None
    except OSError as e:
        raise access.UsageError(f"{path} cannot be read: {e}") from None
    if not isinstance(experiment, dict):
        raise access.UsageError(
            f"{path} is not an experiment: it holds a {type(experiment).__name__}, not a "
            "mapping with a title, a description and a method"
        )
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as e:
        raise access.UsageError(f"{path} is not a valid experiment: {e}") from None
    return experiment


def _log_to_stderr() -> None:
    """chaoslib tells what it does on its ``chaostoolkit`` logger: shown on stderr, so stdout
    keeps the outcome alone."""
    log = logging.getLogger("chaostoolkit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def run_file(path: str, journal_path: str, **configuration: Any) -> dict[str, Any]:
    """Load the experiment file ``path`` (a usage error when it is not a valid one), set
    ``configuration`` over its own, run it with chaoslib and write its Chaos Toolkit journal
    to ``journal_path``; the journal. `freight chaos run` and `freight gameday run` both run
    experiments through here."""
    from chaoslib.experiment import run_experiment
    from chaoslib.log import encoder

    experiment = _load(path)
    experiment.setdefault("configuration", {}).update(configuration)
    journal: dict[str, Any] = run_experiment(experiment, settings={})
    with open(journal_path, "w", encoding="utf-8") as f:
        json.dump(journal, f, indent=2, ensure_ascii=False, default=encoder)
    return journal


def cmd_run(args: argparse.Namespace) -> int:
    experiment = _load(args.file)
    configuration = {}
    if args.address:
        configuration["freight_address"] = args.address
    if args.fault_journal:
        configuration["freight_fault_journal"] = os.path.abspath(args.fault_journal)
    _log_to_stderr()
    journal = run_file(args.file, args.journal_path, **configuration)
    status, deviated = journal.get("status"), bool(journal.get("deviated"))
    print(
        f"freight chaos run: {experiment.get('title', args.file)}: {status}"
        f"{', deviated from its steady state' if deviated else ''}; journal: {args.journal_path}"
    )
    if status != "completed" or deviated:
        raise access.CommandFailed(
            f"the experiment {'deviated' if deviated else status}: see {args.journal_path}"
        )
    return 0


def cmd_discover(args: argparse.Namespace) -> int:
    from freight.chaos import discover

    common.dump(discover(discover_system=not args.no_system), args.output or "json")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from freight.chaos import faults, journal

    path = args.journal or journal.default_path()
    if args.journal and not os.path.isfile(path):
        raise access.UsageError(f"{path}: no such fault journal")
    try:
        recovered = faults.recover(path)
    except journal.JournalError as e:
        raise access.CommandFailed(str(e)) from None
    for r in recovered:
        i = r.injection
        pid = f" (pid {i.process['pid']})" if i.process.get("pid") else ""
        print(
            f"freight chaos recover: {i.fault} on {i.target.get('kind')} {i.target.get('id')}"
            f"{pid}: {r.result}"
        )
    print(f"freight chaos recover: {len(recovered)} fault(s) of {path} reverted.")
    return 0


def add_parsers(sub: Any) -> None:
    chaos = sub.add_parser(
        "chaos",
        help="run chaos experiments (Chaos Toolkit files), undo what a crashed run left",
        description="Chaos experiments against a freight cluster, in the Chaos Toolkit's format "
        "(docs/chaos.md): the same file runs with 'freight chaos run' and with the stock "
        "'chaos run'.",
    )
    what = chaos.add_subparsers(dest="chaos_what", metavar="WHAT", required=True)
    p = what.add_parser(
        "run",
        help="run an experiment file through chaoslib",
        description="Load and validate the experiment FILE (JSON or YAML) with chaoslib, run it "
        "and write its Chaos Toolkit journal. Every fault is first written with its revert to "
        "the fault journal ('freight chaos recover' undoes what a crashed run left). Exit 0 when "
        "the steady state held, 1 when it deviated or the run failed, 2 for a file that is not a "
        "valid experiment.",
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument(
        "--journal-path",
        default="./journal.json",
        metavar="PATH",
        help="where to write the run's Chaos Toolkit journal (default ./journal.json)",
    )
    p.add_argument(
        "--fault-journal",
        default=None,
        metavar="PATH",
        help="the write-ahead journal of injections (default: the experiment's "
        "freight_fault_journal, else $FREIGHT_TEMP_DIR/chaos/faults.jsonl)",
    )
    common.add_address_option(p)
    p.set_defaults(func=cmd_run)
    p = what.add_parser(
        "discover",
        help="the extension's actions and probes, and the cluster it finds",
        description="Print the Chaos Toolkit discovery of freight's extension (as 'chaos "
        "discover --no-install freight' does): every action and probe with its arguments, and "
        "the cluster found the usual way.",
    )
    p.add_argument("--no-system", action="store_true", help="leave the cluster out (no connection)")
    p.add_argument(
        "-o", "--output", choices=("json", "yaml"), default=None, help="json (default) or yaml"
    )
    p.set_defaults(func=cmd_discover)
    p = what.add_parser(
        "recover",
        help="revert the faults a crashed run left in force",
        description="Revert every fault of the fault journal JOURNAL (default "
        "$FREIGHT_TEMP_DIR/chaos/faults.jsonl) that was never marked over: SIGCONT a paused "
        "agent or worker whose harness died, only if that very process still runs. Safe to run "
        "again: it then finds nothing to do.",
    )
    p.add_argument("journal", nargs="?", default=None, metavar="JOURNAL")
    p.set_defaults(func=cmd_recover)
