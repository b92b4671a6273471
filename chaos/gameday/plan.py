"""A game day plan: the YAML file `freight gameday run` takes, as checked pydantic models.

Every mistake is a usage error naming the file, the YAML path of what is wrong
(``steps[2].experiment``) and what to do. Paths in a plan are relative to the plan's folder; a
plan may ``include`` other plans, whose steps run after its own on its cluster (``all.yaml``).
"""

from __future__ import annotations

import os
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from freight.client import access


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterSpec(_Strict):
    """A cluster the game day starts on this machine for the run, and stops after."""

    nodes: int = Field(3, ge=2, le=16)  # the head's node counts; a fault needs one to spare
    cpus: float = Field(2, gt=0)
    object_store_mb: int = Field(256, ge=64)
    network_namespaces: bool = False  # every node after the head in its own (needs root)


class MonitoringSpec(_Strict):
    """The on-call pack watching the run: `freight monitoring up` with its paging receiver
    pointed at a sink the game day runs, which records each page with its arrival time."""

    up: bool = True
    alertmanager_url: str = ""  # an Alertmanager already watching the cluster, instead
    page_within: float = Field(60.0, gt=0)  # seconds from the fault to the page, at most
    # A drill: every alert duration divided by this (`freight monitoring up --time-scale`), so
    # alerts that wait minutes in production fire within a step of seconds.
    time_scale: float = Field(60.0, ge=1)


class WorkloadSpec(_Strict):
    """The driver that runs during the step (:mod:`freight.chaos.gameday.workload`)."""

    kind: Literal["tasks", "actor"] = "tasks"
    concurrency: int = Field(2, ge=1, le=64)
    task_seconds: float = Field(0.2, ge=0, le=60)
    drain: float = Field(60.0, gt=0)  # how long in-flight work may take to come back at the end


class Step(_Strict):
    """One experiment of the game day, with what it is meant to show."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    experiment: str  # a Chaos Toolkit experiment file, relative to the plan's folder
    hypothesis: str = Field(min_length=1)  # in words: what must hold
    alert: str | None = None  # the on-call pack's alert it expects (alerts/rules), or none
    page: bool = False  # whether that alert must page
    workload: WorkloadSpec | None = Field(default_factory=lambda: WorkloadSpec.model_validate({}))
    kills_driver: bool = False  # the fault kills the workload's driver: a new one must run
    recovery_within: float = Field(60.0, gt=0, le=3600)
    configuration: dict[str, Any] = {}  # set over the experiment's configuration

    @field_validator("alert")
    @classmethod
    def _known_alert(cls, alert: str | None) -> str | None:
        if alert is None:
            return None
        known = alert_names()
        if alert not in known:
            raise ValueError(
                f"{alert!r} is no alert of the on-call pack; use one of {', '.join(sorted(known))}"
                ", or leave alert out when the step expects none"
            )
        return alert


class Plan(_Strict):
    title: str = Field(min_length=1)
    description: str = ""
    cluster: ClusterSpec | None = None  # none: run on --address, or the cluster found here
    monitoring: MonitoringSpec | None = None
    steps: list[Step] = []
    include: list[str] = []  # other plans, whose steps run after these (paths: plan's folder)
    path: str = ""  # where it was read from (set by load)


def alert_names() -> set[str]:
    """The alert names of the on-call pack's rules (alerts/rules/freight-alerts.yml)."""
    from freight.cli.oncall_pack import pack_dir

    rules = yaml.safe_load(pack_dir("alerts").joinpath("rules", "freight-alerts.yml").read_text())
    return {
        str(rule["alert"])
        for group in rules.get("groups") or []
        for rule in group.get("rules") or []
        if "alert" in rule
    }


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the plan)"


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise access.UsageError(f"{path}: no such game day plan") from None
    except OSError as e:
        raise access.UsageError(f"{path} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e)
        raise access.UsageError(
            f"{path}{where}: not valid YAML ({problem}); fix the file (docs/gameday.md shows one)"
        ) from None


def load(path: str, _seen: tuple[str, ...] = ()) -> Plan:
    """The plan at ``path``, checked, its included plans' steps appended to its own and every
    experiment path made absolute and checked to be a valid experiment."""
    from freight.cli.chaos_cmd import _load as load_experiment

    path = os.path.abspath(path)
    if path in _seen:
        raise access.UsageError(f"{path} includes itself (through {' -> '.join(_seen)})")
    raw = _read(path)
    if not isinstance(raw, dict):
        raise access.UsageError(
            f"{path}: a plan is a mapping with a title and steps (or include), not a "
            f"{type(raw).__name__}; docs/gameday.md shows one"
        )
    try:
        plan = Plan.model_validate({**raw, "path": path})
    except ValidationError as e:
        problems = "; ".join(f"{_where(err['loc'])}: {err['msg']}" for err in e.errors())
        raise access.UsageError(
            f"{path}: {problems} (docs/gameday.md lists what a plan holds)"
        ) from None
    folder = os.path.dirname(path)
    steps = []
    for n, step in enumerate(plan.steps):
        experiment = os.path.normpath(os.path.join(folder, step.experiment))
        if not os.path.isfile(experiment):
            raise access.UsageError(
                f"{path}: steps[{n}].experiment: no such file {experiment} (paths are relative to "
                "the plan's folder); fix the path"
            )
        try:
            load_experiment(experiment)
        except access.UsageError as e:
            raise access.UsageError(f"{path}: steps[{n}].experiment: {e}") from None
        steps.append(step.model_copy(update={"experiment": experiment}))
    for n, name in enumerate(plan.include):
        included = os.path.normpath(os.path.join(folder, name))
        if not os.path.isfile(included):
            raise access.UsageError(
                f"{path}: include[{n}]: no such plan {included} (paths are relative to the "
                "plan's folder); fix the path"
            )
        steps.extend(load(included, (*_seen, path)).steps)
    if not steps:
        raise access.UsageError(f"{path}: the plan has no steps; give steps, or include plans")
    names = [s.name for s in steps]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise access.UsageError(
            f"{path}: the step name(s) {', '.join(twice)} appear more than once; give every step "
            "a name of its own (its report and journal files are named after it)"
        )
    return plan.model_copy(update={"steps": steps, "include": []})
