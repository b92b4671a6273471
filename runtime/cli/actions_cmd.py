"""`freight cancel`, `freight kill actor|worker`: act on a running cluster from any terminal.

Each is :mod:`freight.actions` on the command line: it needs the admin token (the read-only one
is refused, exit 4) and is recorded as an ``OPERATOR_ACTION`` cluster event with the role, the
caller and ``--reason`` (``freight events --kind OPERATOR_ACTION``).
"""

from __future__ import annotations

import argparse
from typing import Any

from freight import actions

from . import common


def add_reason_option(p: argparse.ArgumentParser) -> None:
    """``--reason`` on a command that acts: the cluster event of the action records it."""
    p.add_argument(
        "--reason",
        default="",
        metavar="TEXT",
        help="why (recorded in the action's cluster event: freight events --kind OPERATOR_ACTION)",
    )


def _done(result: actions.ActionResult) -> int:
    print(result.message)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    return _done(
        actions.cancel_task(
            args.task_id,
            force=args.force,
            recursive=args.recursive,
            reason=args.reason,
            address=args.address,
        )
    )


def cmd_kill_actor(args: argparse.Namespace) -> int:
    return _done(
        actions.kill_actor(
            args.actor_id, no_restart=args.no_restart, reason=args.reason, address=args.address
        )
    )


def cmd_kill_worker(args: argparse.Namespace) -> int:
    return _done(
        actions.kill_worker(
            args.worker_id, force=args.force, reason=args.reason, address=args.address
        )
    )


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "cancel",
        help="cancel a task by id, from any terminal",
        description="Cancel the task TASK_ID names (its id or a unique prefix, as 'freight get "
        "task' takes): a pending task never runs; a running one gets TaskCancelledError "
        "(KeyboardInterrupt in its code); --force kills its worker (not for actor tasks). "
        "The task's owner does it: the task ends shortly after this command returns, and its "
        "result raises TaskCancelledError. Exit 1 if the task had already ended or is unknown.",
    )
    p.add_argument("task_id", metavar="TASK_ID")
    p.add_argument("--force", action="store_true", help="kill the worker running it (SIGKILL)")
    p.add_argument(
        "--recursive",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cancel the tasks it submitted too (default: yes)",
    )
    add_reason_option(p)
    common.add_address_option(p)
    p.set_defaults(func=cmd_cancel)

    kill = sub.add_parser("kill", help="kill an actor or a worker process")
    what = kill.add_subparsers(dest="kill_what", metavar="WHAT", required=True)
    p = what.add_parser(
        "actor",
        help="kill an actor at once (as freight.kill)",
        description="Kill the actor ACTOR_ID names (its id or a unique prefix): its calls in "
        "flight and later calls raise ActorDiedError. An actor that has restarts left "
        "(max_restarts) restarts, as after a crash, unless --no-restart is given.",
    )
    p.add_argument("actor_id", metavar="ACTOR_ID")
    p.add_argument(
        "--no-restart",
        action="store_true",
        help="it stays dead even if it has restarts left",
    )
    add_reason_option(p)
    common.add_address_option(p)
    p.set_defaults(func=cmd_kill_actor)
    p = what.add_parser(
        "worker",
        help="stop a worker process; its tasks are retried as after a crash",
        description="Stop the worker process WORKER_ID names (its id or a unique prefix; "
        "'freight list workers' shows them), on whichever node runs it: asked to exit at once, "
        "or with --force killed with SIGKILL. Its running tasks fail as after a worker crash and "
        "are retried under their max_retries; an actor on it restarts under its max_restarts.",
    )
    p.add_argument("worker_id", metavar="WORKER_ID")
    p.add_argument("--force", action="store_true", help="SIGKILL it")
    add_reason_option(p)
    common.add_address_option(p)
    p.set_defaults(func=cmd_kill_worker)
