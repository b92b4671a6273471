"""Validation of task and actor options, with messages that say what to change."""

from __future__ import annotations

import math
import numbers
from typing import Any

TASK_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "memory",
        "resources",
        "num_returns",
        "max_retries",
        "retry_exceptions",
        "name",
        "scheduling_strategy",
        "runtime_env",
        "max_calls",
    }
)
ACTOR_OPTIONS = frozenset(
    {
        "num_cpus",
        "num_gpus",
        "memory",
        "resources",
        "name",
        "namespace",
        "lifetime",
        "get_if_exists",
        "max_concurrency",
        "max_restarts",
        "max_task_retries",
        "max_pending_calls",
        "scheduling_strategy",
        "runtime_env",
    }
)
METHOD_OPTIONS = frozenset({"num_returns", "name", "max_task_retries"})


def validate(options: dict[str, Any], allowed: frozenset[str], what: str) -> dict[str, Any]:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"Invalid option(s) {', '.join(map(repr, unknown))} for {what}. "
            f"Valid options are: {', '.join(sorted(allowed))}."
        )
    for key in ("num_cpus", "num_gpus", "memory"):
        v = options.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise ValueError(f"{key} must be a number, got {type(v).__name__} {v!r}.")
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{key} must be a finite number >= 0, got {v}.")
    res = options.get("resources")
    if res is not None:
        if not isinstance(res, dict):
            raise ValueError(
                f"resources must be a dict of name -> amount, got {type(res).__name__}."
            )
        for k, v in res.items():
            if k in ("CPU", "GPU"):
                raise ValueError(
                    f"Use the num_cpus and num_gpus options instead of resources={{'{k}': ...}}."
                )
            if (
                isinstance(v, bool)
                or not isinstance(v, numbers.Real)
                or not math.isfinite(v)
                or v < 0
            ):
                raise ValueError(f"resource {k!r} must be a non-negative number, got {v!r}.")
    nr = options.get("num_returns")
    if nr is not None and (isinstance(nr, bool) or not isinstance(nr, int) or nr < 0):
        raise ValueError(f"num_returns must be a non-negative integer, got {nr!r}.")
    for key in ("max_retries", "max_restarts", "max_task_retries"):
        mr = options.get(key)
        if mr is not None and (isinstance(mr, bool) or not isinstance(mr, int) or mr < -1):
            raise ValueError(f"{key} must be an integer >= -1 (-1: no limit), got {mr!r}.")
    re = options.get("retry_exceptions")
    if (
        re is not None
        and not isinstance(re, bool)
        and (
            not isinstance(re, (list, tuple))
            or not all(isinstance(t, type) and issubclass(t, BaseException) for t in re)
        )
    ):
        raise ValueError("retry_exceptions must be a bool or a list of exception types.")
    mc = options.get("max_concurrency")
    if mc is not None and (isinstance(mc, bool) or not isinstance(mc, int) or mc < 1):
        raise ValueError(f"max_concurrency must be an integer >= 1, got {mc!r}.")
    lt = options.get("lifetime")
    if lt is not None and lt not in ("detached", "non_detached"):
        raise ValueError(f"lifetime must be 'detached' or 'non_detached' (or None), got {lt!r}.")
    for key in ("name", "namespace"):
        v = options.get(key)
        if v is not None and not isinstance(v, str):
            raise ValueError(f"{key} must be a string, got {type(v).__name__}.")
    if options.get("name") == "":
        raise ValueError("name must not be empty.")
    if options.get("scheduling_strategy") is not None:
        from freight.util.scheduling_strategies import to_wire

        to_wire(options["scheduling_strategy"])  # raises with what to write instead
    renv = options.get("runtime_env")
    if renv:
        raise ValueError("runtime_env is not supported yet; install dependencies on the nodes.")
    return options


def resources_of(options: dict[str, Any], default_cpus: float) -> dict[str, float]:
    """The resource request of a task or actor as a flat dict."""
    out: dict[str, float] = {}
    cpus = options.get("num_cpus")
    out["CPU"] = float(default_cpus if cpus is None else cpus)
    if options.get("num_gpus"):
        out["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        out["memory"] = float(options["memory"])
    for k, v in (options.get("resources") or {}).items():
        out[k] = float(v)
    return {k: v for k, v in out.items() if v}
