"""Validation of task and actor options, with messages that say what to change.

One table says, for every option, which types it takes and which values; as in Ray, a value of
the wrong type is a ``TypeError`` and a value out of range a ``ValueError``, both naming the
option and what to write instead. ``None`` always means "not set".
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

from freight.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    NodeLabelSchedulingStrategy,
    PlacementGroupSchedulingStrategy,
    to_wire,
)


class Option(NamedTuple):
    """What one option accepts."""

    types: tuple[type, ...]  # accepted types; bool only where listed (it is an int in Python)
    expects: str  # what a valid value is, as error messages say it
    # The value rule, applied after the type check: None when the value is fine, else what is
    # wrong with it ("" for the plain "<key> must be <expects>" message).
    problem: Callable[[Any], str | None] = lambda value: None


def _rule(holds: Callable[[Any], bool]) -> Callable[[Any], str | None]:
    return lambda value: None if holds(value) else ""


def _amount(unit: str) -> Option:
    return Option(
        (numbers.Real,),
        f"a finite number >= 0 ({unit})",
        _rule(lambda v: math.isfinite(v) and v >= 0),
    )


def _count(lowest: int, meaning: str = "") -> Option:
    return Option(
        (numbers.Integral,), f"an integer >= {lowest}{meaning}", _rule(lambda v: v >= lowest)
    )


def _resources_problem(resources: dict[Any, Any]) -> str | None:
    for name, amount in resources.items():
        if name in ("CPU", "GPU"):
            return f"Use the num_cpus and num_gpus options instead of resources={{'{name}': ...}}."
        if not isinstance(name, str):
            return (
                f"resources: a resource name must be a string, got {type(name).__name__} {name!r}."
            )
        if (
            isinstance(amount, bool)
            or not isinstance(amount, numbers.Real)
            or not math.isfinite(amount)
            or amount < 0
        ):
            return f"resources={{{name!r}: {amount!r}}}: an amount must be a finite number >= 0."
    return None


def _exception_types(value: Any) -> bool:
    return isinstance(value, bool) or all(
        isinstance(t, type) and issubclass(t, BaseException) for t in value
    )


def _strategy_problem(value: Any) -> str | None:
    to_wire(value)  # raises ValueError saying what to write instead
    return None


_UNLIMITED = " (-1: no limit)"

OPTIONS: dict[str, Option] = {
    "num_cpus": _amount("CPUs"),
    "num_gpus": _amount("GPUs"),
    "memory": _amount("bytes"),
    "resources": Option((dict,), "a dict of resource name -> amount", _resources_problem),
    "num_returns": _count(0),
    "max_retries": _count(-1, _UNLIMITED),
    "max_restarts": _count(-1, _UNLIMITED),
    "max_task_retries": _count(-1, _UNLIMITED),
    "max_pending_calls": _count(-1, _UNLIMITED),
    "max_calls": _count(0, " (0: no limit)"),
    "max_concurrency": _count(1),
    "retry_exceptions": Option(
        (bool, list, tuple), "True, False or a list of exception types", _rule(_exception_types)
    ),
    "name": Option((str,), "a non-empty string", _rule(lambda v: v != "")),
    "namespace": Option((str,), "a string"),
    "lifetime": Option(
        (str,),
        "'detached' or 'non_detached' (or None)",
        _rule(lambda v: v in ("detached", "non_detached")),
    ),
    "get_if_exists": Option((bool,), "True or False"),
    "scheduling_strategy": Option(
        (
            str,
            NodeAffinitySchedulingStrategy,
            NodeLabelSchedulingStrategy,
            PlacementGroupSchedulingStrategy,
        ),
        "'DEFAULT', 'SPREAD' or a strategy of freight.util.scheduling_strategies",
        _strategy_problem,
    ),
    "runtime_env": Option(
        (dict,),
        "a dict",
        lambda v: (
            "runtime_env is not supported yet; install dependencies on the nodes." if v else None
        ),
    ),
}

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
# Set once per function (a worker setting in Ray), so `.options()` may not change it.
_NOT_IN_OPTIONS = frozenset({"max_calls"})


def _check(key: str, value: Any) -> None:
    option = OPTIONS[key]
    if not isinstance(value, option.types) or (
        isinstance(value, bool) and bool not in option.types
    ):
        raise TypeError(
            f"{key} must be {option.expects}, got {type(value).__name__} {value!r:.80}."
        )
    problem = option.problem(value)
    if problem is not None:
        raise ValueError(problem or f"{key} must be {option.expects}, got {value!r:.80}.")


def validate(
    options: dict[str, Any],
    allowed: frozenset[str],
    what: str,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check ``options`` and return them merged over ``base`` (the decorator's options, when
    ``options`` come from ``.options()``); raise TypeError / ValueError saying what to change."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(
            f"Invalid option(s) {', '.join(map(repr, unknown))} for {what}. "
            f"Valid options are: {', '.join(sorted(allowed))}."
        )
    for key, value in options.items():
        if value is not None:
            _check(key, value)
    if base is None:
        merged = options
    else:
        fixed = sorted(_NOT_IN_OPTIONS.intersection(options))
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} cannot be set in {what}; set it in the @remote decorator."
            )
        merged = {**base, **options}
    if merged.get("get_if_exists") and not merged.get("name"):
        raise ValueError(f"get_if_exists=True needs a name for {what}: pass name='...' as well.")
    return merged


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
