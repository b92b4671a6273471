"""`freight job submit|list|status|logs|stop`: drivers that the head runs (like `ray job`).

``submit`` asks the head to start the command after ``--`` as the job's driver; it prints the job
id, then follows the driver's output until the job ends and exits 0 if it SUCCEEDED, 1 otherwise
(``--no-wait``: print the id and return). Every call carries the cluster token; the cluster is
``--address``, else ``FREIGHT_ADDRESS``, else the newest cluster started on this machine.

Exit codes are every command's (docs/cli.md): 0 done, 1 failed (unknown job, job not SUCCEEDED),
2 bad usage (missing entrypoint, bad label, an input the head refused), 3 no cluster or it did
not answer, 4 token refused.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import grpc

from freight.client import access
from freight.core.jobs import SUCCEEDED, job_summary, parse_label
from freight.protocol.generated import freight_pb2 as pb
from freight.protocol.generated import freight_pb2_grpc as pb_grpc
from freight.util.grpc_auth import sync_channel

from . import common
from .actions_cmd import add_reason_option

CALL_TIMEOUT_S = 30.0


class HeadJobs:
    """The head's job RPCs, their failures mapped as every client maps them
    (:func:`freight.client.access.rpc_error`)."""

    def __init__(self, address: str | None) -> None:
        self.target = access.resolve(address)
        self._channel = sync_channel(self.target.address, self.target.token)
        self._stub = pb_grpc.HeadServiceStub(self._channel)

    def call(self, method: str, request: Any, timeout: float | None = CALL_TIMEOUT_S) -> Any:
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            raise self._error(e) from None

    def logs(self, job_id: str, follow: bool) -> Iterator[bytes]:
        """The job's output in chunks; with ``follow``, until the job ends."""
        stream = self._stub.JobLogs(pb.JobLogsRequest(job_id=job_id, follow=follow))
        try:
            for chunk in stream:
                yield chunk.data
        except grpc.RpcError as e:
            raise self._error(e) from None
        finally:
            stream.cancel()

    def job(self, job_id: str) -> pb.JobInfo:
        reply = self.call("GetJob", pb.GetJobRequest(job_id=job_id))
        if not reply.found:
            raise access.NotFound(f"no job {job_id!r} (`freight job list` shows the jobs)")
        return reply.job

    def _error(self, e: grpc.RpcError) -> Exception:
        error = access.rpc_error(e, self.target)
        if isinstance(error, access.NotFound):
            return access.NotFound(f"{error} (`freight job list` shows the jobs)")
        return error

    def close(self) -> None:
        self._channel.close()


# ---- output ------------------------------------------------------------------------------------


def _time(t: float | None) -> str:
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "-"


def _print_list(jobs: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"jobs ({len(jobs)})")
    for col in ("job", "kind", "state", "exit", "started", "ended", "labels", "entrypoint"):
        table.add_column(col)
    for j in jobs:
        entry = j["entrypoint"] if len(j["entrypoint"]) <= 60 else j["entrypoint"][:57] + "..."
        exit_code = "-" if j["exit_code"] is None else str(j["exit_code"])
        table.add_row(
            j["job_id"], j["kind"], j["state"], exit_code, _time(j["start_time"]),
            _time(j["end_time"]), _labels(j["labels"]), entry or "-",
        )  # fmt: skip
    common.console().print(table)


def _print_status(j: dict[str, Any]) -> None:
    exit_code = "" if j["exit_code"] is None else f" (exit code {j['exit_code']})"
    print(f"job {j['job_id']}: {j['state']}{exit_code}")
    rows = [
        ("kind", j["kind"]),
        ("entrypoint", j["entrypoint"] or "-"),
        ("labels", _labels(j["labels"])),
        ("started", _time(j["start_time"])),
        ("ended", _time(j["end_time"])),
        ("driver pid", j["driver_pid"] or "-"),
        ("message", j["message"] or "-"),
        ("log", j["log_path"] or "-"),
    ]
    for key, value in rows:
        print(f"  {key + ':':<12}{value}")


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


# ---- commands ----------------------------------------------------------------------------------


def _run(name: str, args: argparse.Namespace) -> int:
    head: HeadJobs | None = None
    try:
        head = HeadJobs(args.address)
        return int(COMMANDS[name](head, args))
    except KeyboardInterrupt:
        print(f"freight job {name}: interrupted", file=sys.stderr)
        return 130
    finally:
        if head is not None:
            head.close()


def _entrypoint(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    argv = list(args.entrypoint)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        parser.error(
            "give the command to run after --, e.g. freight job submit -- python script.py"
        )
    return argv


def submit(head: HeadJobs, args: argparse.Namespace) -> int:
    request = pb.SubmitJobRequest(
        entrypoint=args.entrypoint,
        labels=dict(args.label or []),
        env=dict(args.env or []),
        working_dir=os.path.abspath(args.working_dir) if args.working_dir else "",
        submission_id=args.submission_id or "",
    )
    job = head.call("SubmitJob", request).job
    print(job.job_id, flush=True)
    if args.no_wait:
        print(
            f"job {job.job_id} {job.state.lower()}; follow it with `freight job logs "
            f"{job.job_id} --follow`, stop it with `freight job stop {job.job_id}`",
            file=sys.stderr,
        )
        return 0
    try:
        for data in head.logs(job.job_id, follow=True):
            _write(data)
    except KeyboardInterrupt:
        print(
            f"\nstopped following; job {job.job_id} keeps running "
            f"(`freight job stop {job.job_id}` stops it)",
            file=sys.stderr,
        )
        return 130
    final = head.job(job.job_id)
    summary = job_summary(final)
    code = "" if summary["exit_code"] is None else f", exit code {summary['exit_code']}"
    print(f"job {final.job_id} {final.state}{code}: {final.message}", file=sys.stderr)
    return access.EXIT_OK if final.state == SUCCEEDED else access.EXIT_FAILED


def list_jobs(head: HeadJobs, args: argparse.Namespace) -> int:
    jobs = [job_summary(j) for j in head.call("ListJobs", pb.ListJobsRequest()).jobs]
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        common.dump(common.envelope("jobs", jobs), fmt)
    else:
        _print_list(jobs)
    return 0


def status(head: HeadJobs, args: argparse.Namespace) -> int:
    job = job_summary(head.job(args.job_id))
    fmt = common.chosen(args)
    if common.is_structured(fmt):
        common.dump(job, fmt)
    else:
        _print_status(job)
    return 0


def logs(head: HeadJobs, args: argparse.Namespace) -> int:
    for data in head.logs(args.job_id, follow=args.follow):
        _write(data)
    return 0


def stop(head: HeadJobs, args: argparse.Namespace) -> int:
    from freight import actions

    print(actions.stop_job(args.job_id, reason=args.reason, address=args.address).message)
    return 0


COMMANDS = {"submit": submit, "list": list_jobs, "status": status, "logs": logs, "stop": stop}


# ---- parsers -----------------------------------------------------------------------------------


def _label_arg(text: str) -> tuple[str, str]:
    try:
        return parse_label(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _env_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (write it like MY_VAR=1)")
    return key, value


def _cmd_submit(parser: argparse.ArgumentParser) -> Any:
    def run(args: argparse.Namespace) -> int:
        args.entrypoint = _entrypoint(parser, args)
        return _run("submit", args)

    return run


_address = common.add_address_option
_format_arg = common.add_output_option


def add_parsers(sub: Any) -> None:
    job = sub.add_parser("job", help="submit, list, follow and stop jobs the head runs")
    jobs = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND", required=True)

    p = jobs.add_parser(
        "submit",
        help="run a driver on the cluster: freight job submit [options] -- python script.py",
        description="Run COMMAND as a job's driver, started by the head; its output goes to "
        "<session>/logs/job-<id>.log. Prints the job id, then (unless --no-wait) follows the "
        "output until the job ends: exit 0 if it SUCCEEDED, 1 otherwise.",
    )
    _address(p)
    p.add_argument(
        "--label",
        action="append",
        type=_label_arg,
        metavar="KEY=VALUE",
        help="a label of the job, e.g. team=ml (repeatable)",
    )
    p.add_argument("--submission-id", default=None, help="the job id to use (default: assigned)")
    p.add_argument(
        "--working-dir",
        default=None,
        help="where the driver runs, on the head's machine (default: the head's working dir)",
    )
    p.add_argument(
        "--env",
        action="append",
        type=_env_arg,
        metavar="KEY=VALUE",
        help="an environment variable of the driver (repeatable)",
    )
    p.add_argument("--no-wait", action="store_true", help="print the job id and return")
    p.add_argument("entrypoint", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    p.set_defaults(func=_cmd_submit(p))

    p = jobs.add_parser("list", help="every job, finished ones too")
    _address(p)
    _format_arg(p)
    p.set_defaults(func=lambda args: _run("list", args))

    p = jobs.add_parser("status", help="a job's state, times, exit code and message")
    p.add_argument("job_id")
    _address(p)
    _format_arg(p)
    p.set_defaults(func=lambda args: _run("status", args))

    p = jobs.add_parser("logs", help="a submitted job's output")
    p.add_argument("job_id")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job ends")
    _address(p)
    p.set_defaults(func=lambda args: _run("logs", args))

    p = jobs.add_parser(
        "stop", help="SIGTERM the job's process group, SIGKILL after FREIGHT_JOB_STOP_GRACE_S"
    )
    p.add_argument("job_id")
    add_reason_option(p)
    _address(p)
    p.set_defaults(func=lambda args: _run("stop", args))
