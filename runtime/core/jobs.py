"""The vocabulary of jobs that the head and its clients share: kinds and states, label checks,
and a job as a plain record (what `freight job list -o json` prints). Pure: no I/O, no head
machinery, so clients read it without importing the head's modules."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from freight.protocol.generated import freight_pb2 as pb

# Kinds and states (JobInfo.kind / JobInfo.state).
DRIVER = "DRIVER"
SUBMISSION = "SUBMISSION"
PENDING, RUNNING = "PENDING", "RUNNING"
SUCCEEDED, FAILED, STOPPED = "SUCCEEDED", "FAILED", "STOPPED"
TERMINAL = frozenset({SUCCEEDED, FAILED, STOPPED})

HEAD_RESTARTED = (
    "the head restarted while this job was running, and its supervisor had gone without "
    "recording how the driver ended"
)
MAX_LABELS = 32
_LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,62}")  # matched whole


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Return ``labels`` as a dict if every key and value is usable; else raise ValueError.

    Values travel to the driver as ``FREIGHT_JOB_LABELS=k=v,k=v``, hence no commas.
    """
    if len(labels) > MAX_LABELS:
        raise ValueError(f"a job takes at most {MAX_LABELS} labels, got {len(labels)}.")
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            raise ValueError(
                f"label key {key!r} is not valid: use letters, digits, '_', '.', '/' or '-' "
                "(up to 63), starting with a letter or digit, as in team=ml."
            )
        if len(value) > 256 or any(c in value for c in ",\n\r\0"):
            raise ValueError(
                f"label {key}={value!r}: a value has at most 256 characters and no comma or "
                "line break."
            )
    return dict(labels)


def parse_label(text: str) -> tuple[str, str]:
    """``"team=ml"`` -> ``("team", "ml")``; raise ValueError saying what is wrong."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"label {text!r} is not KEY=VALUE (write it like team=ml).")
    check_labels({key: value})
    return key, value


def exit_code_known(job: pb.JobInfo) -> bool:
    """True when ``job.exit_code`` is the driver's: a submission whose driver started and was
    seen to end (a head that restarted did not see how its drivers ended)."""
    return (
        job.kind == SUBMISSION
        and job.state in TERMINAL
        and job.driver_pid != 0
        and job.message != HEAD_RESTARTED
    )


def job_summary(job: pb.JobInfo) -> dict[str, Any]:
    """A job as a plain dict (what `freight job list --format json` prints)."""
    return {
        "job_id": job.job_id,
        "kind": job.kind or DRIVER,
        "state": job.state,
        "entrypoint": job.entrypoint,
        "labels": dict(job.labels),
        "start_time": job.start_time or None,
        "end_time": job.end_time or None,
        "exit_code": job.exit_code if exit_code_known(job) else None,
        "message": job.message,
        "driver_pid": job.driver_pid or None,
        "supervisor_pid": job.supervisor_pid or None,
        "namespace": job.namespace,
        "log_path": job.log_path,
    }
