"""What a game day did, as its report tells it: each step's faults, recovery, work and verdict,
and the run around them."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import notes
from .plan import Plan
from .watch import Sample


@dataclass
class Fault:
    """One injection of the run's fault journal, with how it ended."""

    id: str
    fault: str
    target: dict[str, str]
    pid: int
    signal: str
    started: float
    ended: float | None = None
    result: str = ""


@dataclass
class StepResult:
    """What one step did and showed."""

    name: str
    title: str  # the experiment's
    experiment: str
    hypothesis: str
    status: str  # "held", "broken", "skipped", "interrupted"
    reasons: list[str] = field(default_factory=list)  # why it is broken
    started: float = 0.0
    ended: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    fault_ended: float | None = None
    recovered: float | None = None
    steady_before: bool | None = None
    steady_after: bool | None = None
    submitted: int = 0
    answered: int = 0
    lost: dict[str, str] = field(default_factory=dict)  # "task 17" -> why
    abandoned: dict[str, str] = field(default_factory=dict)  # in flight in a killed driver
    alert: str | None = None
    alert_fired: float | None = None
    page: bool = False
    page_received: float | None = None
    page_runbook: str = ""  # the runbook link the page carried
    watched: bool = False  # the on-call pack watched it (alerts and pages known)
    journal_path: str = ""
    plan: list[str] = field(default_factory=list)  # what it does, in words

    @property
    def fault_names(self) -> str:
        return ", ".join(f.fault for f in self.faults) or "-"

    @property
    def recovery_s(self) -> float | None:
        if self.recovered is None or self.fault_ended is None:
            return None
        return max(0.0, self.recovered - self.fault_ended)

    @property
    def fault_started(self) -> float | None:
        return min((f.started for f in self.faults), default=None)

    @property
    def page_latency_s(self) -> float | None:
        if self.page_received is None or self.fault_started is None:
            return None
        return self.page_received - self.fault_started


@dataclass
class Run:
    """The whole game day, as the report tells it."""

    plan: Plan
    out_dir: str
    address: str
    started: float
    ended: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    notes: list[notes.Note] = field(default_factory=list)
    interrupted: bool = False
    recovered_at_end: list[str] = field(default_factory=list)  # reverts made when it stopped

    @property
    def held(self) -> bool:
        return not self.interrupted and all(s.status in ("held", "skipped") for s in self.steps)
