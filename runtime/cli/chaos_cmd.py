"""`freight chaos run|replay|discover|recover|halt|status`: chaos experiments against a
freight cluster.

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
import time
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


def cmd_run(args: argparse.Namespace) -> int:
    experiment = _load(args.file)
    return _run(experiment, args, args.file, args.seed)


def run(
    experiment: dict[str, Any],
    journal_path: str,
    configuration: dict[str, Any],
    seed: Any = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Run ``experiment`` through chaoslib with ``configuration`` set over its own and write
    its Chaos Toolkit journal to ``journal_path``; the journal. ``seed`` drives every random
    choice (None: the experiment's own, else a new one); a dry run only plans. Refused while
    the harness is halted. `freight chaos run|replay` and `freight gameday run` all run
    experiments through here."""
    from chaoslib.experiment import run_experiment
    from chaoslib.log import encoder

    from freight.chaos import faults, safety
    from freight.chaos import seed as seeds

    config = experiment.setdefault("configuration", {})
    config.update(configuration)
    if dry_run:
        config["freight_dry_run"] = True
    if seed is None:  # the caller names none: the experiment's own, else a new one
        seed = config.get(seeds.KEY)
    seed = seeds.new_seed() if seed is None else seeds.seed_of({seeds.KEY: seed})
    config[seeds.KEY] = seed
    # A halted harness runs nothing: refused here, before the steady state is even probed
    # (under the stock runner each fault refuses instead).
    safety.refuse_if_halted(faults.journal_path(config))
    seeds.reset()
    safety.reset_abort()
    print(
        f"freight chaos run: seed {seed}{' (dry run: nothing is done)' if dry_run else ''}",
        file=sys.stderr,
    )
    journal: dict[str, Any] = run_experiment(experiment, settings={})
    journal["freight"] = {
        "seed": seed,
        "dry_run": dry_run,
        "fault_journal": faults.journal_path(config),
        **journal.get("freight", {}),
    }
    with open(journal_path, "w", encoding="utf-8") as f:
        json.dump(journal, f, indent=2, ensure_ascii=False, default=encoder)
    return journal


def run_file(
    path: str, journal_path: str, seed: Any = None, dry_run: bool = False, **configuration: Any
) -> dict[str, Any]:
    """:func:`run` of the experiment file ``path`` (a usage error when it is not a valid one)."""
    return run(_load(path), journal_path, configuration, seed, dry_run)


def _run(experiment: dict[str, Any], args: argparse.Namespace, source: str, seed: Any) -> int:
    """:func:`run` with the command line's settings, then tell how it went."""
    from freight.chaos import safety

    configuration: dict[str, Any] = {}
    if args.address:
        configuration["freight_address"] = args.address
    if args.fault_journal:
        configuration["freight_fault_journal"] = os.path.abspath(args.fault_journal)
    _log_to_stderr()
    journal = run(experiment, args.journal_path, configuration, seed, bool(args.dry_run))
    for step in journal.get("run") or []:
        output = step.get("output")
        if isinstance(output, dict) and output.get("dry_run") is True:
            print(f"freight chaos run: plan: {safety.plan_line(output)}")
    status, deviated = journal.get("status"), bool(journal.get("deviated"))
    stopped = (journal.get("freight") or {}).get("stopped_by")
    print(
        f"freight chaos run: {experiment.get('title', source)}: {status}"
        f"{', deviated from its steady state' if deviated else ''}"
        f"{f', stopped: {stopped}' if stopped else ''}; journal: {args.journal_path}"
    )
    if status != "completed" or deviated:
        raise access.CommandFailed(
            f"the experiment {'deviated' if deviated else status}: see {args.journal_path}"
        )
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    from freight.chaos import seed as seeds

    path = args.journal
    try:
        with open(path, encoding="utf-8") as f:
            recorded = json.load(f)
    except FileNotFoundError:
        raise access.UsageError(f"{path}: no such journal") from None
    except ValueError as e:
        raise access.UsageError(f"{path} is not a Chaos Toolkit journal (not JSON: {e})") from None
    except OSError as e:
        raise access.UsageError(f"{path} cannot be read: {e}") from None
    experiment = recorded.get("experiment") if isinstance(recorded, dict) else None
    if not isinstance(experiment, dict) or "chaoslib-version" not in recorded:
        raise access.UsageError(
            f"{path} is not a Chaos Toolkit journal (it records no experiment run by chaoslib): "
            "replay takes the journal a run wrote ('freight chaos run --journal-path', default "
            "./journal.json)"
        )
    experiment.pop("dry", None)  # the stock runner's own dry mode, recorded in its journal
    configuration = experiment.get("configuration") or {}
    seed = configuration.get(seeds.KEY, (recorded.get("freight") or {}).get("seed"))
    if seed is None:
        raise access.UsageError(
            f"{path} records no seed (its run set no freight_seed and used no freight "
            "control): its choices cannot be made again; run it with 'freight chaos run "
            "--seed N' from now on"
        )
    configuration.pop("freight_dry_run", None)  # replayed for real unless --dry-run says
    try:
        ensure_experiment_is_valid(experiment)
    except ChaosException as e:
        raise access.UsageError(f"{path} holds no valid experiment: {e}") from None
    return _run(experiment, args, path, seed)


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


def _fault_journal(path: str | None) -> str:
    """The fault journal a command names (positional JOURNAL), else the default one."""
    from freight.chaos import journal

    if path and os.path.isdir(path):
        raise access.UsageError(f"{path} is a folder; name the fault journal file in it")
    return os.path.abspath(path) if path else journal.default_path()


def _describe(i: Any) -> str:
    pid = f" (pid {i.process['pid']})" if i.process.get("pid") else ""
    return f"{i.fault} on {i.target.get('kind')} {i.target.get('id')}{pid}"


def cmd_halt(args: argparse.Namespace) -> int:
    from freight.chaos import faults, journal, safety

    path = _fault_journal(args.journal)
    if args.clear:
        if args.reason:
            raise access.UsageError("--reason goes with a halt, not with --clear")
        cleared = safety.clear_marker(path)
        if cleared is None:
            raise access.UsageError(
                f"the chaos harness is not halted for {path} (no {safety.marker_path(path)})"
                + (
                    f"; it is {found.describe()} machine-wide: clear that with `freight chaos "
                    "halt --clear` and no JOURNAL"
                    if (found := safety.halted(path)) is not None
                    else ""
                )
            )
        print(f"freight chaos halt: cleared; it was {cleared.describe()}. Faults may run again.")
        return 0
    try:
        halt, marker, reverted = faults.halt(path, args.reason or "")
    except journal.JournalError as e:
        raise access.CommandFailed(str(e)) from None
    for r in reverted:
        print(f"freight chaos halt: {_describe(r.injection)}: {r.result}")
    print(
        f"freight chaos halt: {halt.describe()}; {len(reverted)} fault(s) of {path} reverted. "
        f"Every new fault is refused until `freight chaos halt --clear` (marker {marker})."
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from freight.chaos import journal, safety, watchdog

    path = _fault_journal(args.journal)
    found = safety.halted(path)
    try:
        open_now = journal.open_injections(path)
    except journal.JournalError as e:
        raise access.CommandFailed(str(e)) from None
    print(f"fault journal: {path}")
    print(f"halted: {'no' if found is None else 'yes, ' + found.describe()}")
    watching = watchdog.running(path)
    print(
        "watchdogs: "
        + (", ".join(f"pid {w} (harness {h})" for w, h in sorted(watching.items())) or "none")
    )
    print(f"open faults: {len(open_now)}")
    now = time.time()
    for i in open_now:
        left = f", {i.expires - now:.0f} s left" if i.expires > now else ", past its expiry"
        print(f"  {_describe(i)}: {i.signal} by harness pid {i.by}{left}")
    return 0


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="plan only: probes run, each fault names its target and blast radius and does "
        "nothing (nothing is journalled)",
    )
    common.add_address_option(p)


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
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        metavar="N",
        help="the seed of every random choice (which of several matching targets a fault "
        "hits); default: the experiment's freight_seed, else a new one; printed and recorded "
        "in the journal",
    )
    _add_run_options(p)
    p.set_defaults(func=cmd_run)
    p = what.add_parser(
        "replay",
        help="run again the experiment a journal recorded, with its seed",
        description="Run again the experiment recorded in the Chaos Toolkit journal JOURNAL "
        "(written by 'freight chaos run'), with its configuration and its seed: on the same "
        "cluster it makes the same choices in the same order. Exit codes as 'freight chaos run'; "
        "2 for a file that is not such a journal.",
    )
    p.add_argument("journal", metavar="JOURNAL")
    p.add_argument(
        "--journal-path",
        default="./journal-replay.json",
        metavar="PATH",
        help="where to write the replay's own journal (default ./journal-replay.json)",
    )
    p.add_argument(
        "--fault-journal",
        default=None,
        metavar="PATH",
        help="the write-ahead journal of injections (default: the one the run recorded)",
    )
    _add_run_options(p)
    p.set_defaults(func=cmd_replay)
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
    p = what.add_parser(
        "halt",
        help="revert every fault in force and refuse new ones until cleared",
        description="Halt the chaos harness: write a halt marker (who, when, why) next to the "
        "fault journal JOURNAL (default $FREIGHT_TEMP_DIR/chaos/faults.jsonl, whose marker "
        "halts every journal on this machine), revert every fault of the journal still in "
        "force, and make every new fault refuse. Faults held by runs in other processes end "
        "early. 'freight chaos halt --clear' lets faults run again.",
    )
    p.add_argument("journal", nargs="?", default=None, metavar="JOURNAL")
    p.add_argument("--reason", default=None, metavar="TEXT", help="why, for whoever reads it")
    p.add_argument("--clear", action="store_true", help="lift the halt: faults may run again")
    p.set_defaults(func=cmd_halt)
    p = what.add_parser(
        "status",
        help="whether the harness is halted, and the faults in force",
        description="Print whether the chaos harness is halted (by whom, when, why) and every "
        "fault of the fault journal JOURNAL (default $FREIGHT_TEMP_DIR/chaos/faults.jsonl) "
        "still in force, with the harness that holds it and the time it has left, and the "
        "watchdogs that revert them should their harness die.",
    )
    p.add_argument("journal", nargs="?", default=None, metavar="JOURNAL")
    p.set_defaults(func=cmd_status)
