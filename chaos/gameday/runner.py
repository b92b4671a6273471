"""Running a game day: each step's experiment through chaoslib (the very function `freight chaos
run` uses), under its workload, after a go/no-go, then its recovery timed and what was lost
counted, and everything gathered for the report.

The cluster is the plan's own (started here with :class:`freight.testing.Cluster`, stopped
after) or the one ``--address`` names. Every fault goes to the run's fault journal; Ctrl-C, or a
step that fails badly, reverts whatever is still open in it (what `freight chaos recover`
does) before the report is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from freight.client import access
from freight.util.private_files import make_private_dir

from .. import faults, journal, targets
from . import notes, site
from .driver import Driver
from .plan import Plan, Step
from .record import Fault, Run, StepResult
from .watch import Oncall, Sampler

RECOVERY_POLL_S = 0.5  # how often the steady state is checked while a step recovers


class Interrupted(Exception):
    """The operator pressed Ctrl-C (or the run was sent SIGINT)."""


@dataclass
class Prompter:
    """Go/no-go before each step: ``yes`` answers go to all; otherwise it asks on ``ask``."""

    yes: bool
    ask: Callable[[str], str] | None = None

    def go(self, question: str) -> bool:
        if self.yes or self.ask is None:
            return True
        try:
            answer = self.ask(question)
        except EOFError:
            return False
        return answer.strip().lower() in ("y", "yes")


class GameDay:
    """One run of a plan; :meth:`run` does it all and returns the :class:`Run`."""

    def __init__(
        self,
        plan: Plan,
        out_dir: str,
        address: str | None,
        prompter: Prompter,
        out: TextIO = sys.stdout,
    ) -> None:
        self.plan = plan
        self.out_dir = os.path.abspath(out_dir)
        self.address_option = address
        self.prompter = prompter
        self.out = out
        self.fault_journal = os.path.join(self.out_dir, "faults.jsonl")
        self.notes_path = os.path.join(self.out_dir, "notes.jsonl")
        self.oncall: Oncall | None = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # -- the run ---------------------------------------------------------------------------

    def run(self) -> Run:
        # The fault journal lives here: the folder is this user's alone, as the journal's must be.
        for folder in ("", "journals", "ledgers", "logs"):
            make_private_dir(os.path.join(self.out_dir, folder), "the game day's report folder")
        self._log_chaoslib()
        notes.begin(self.plan.title, self.notes_path, self.out_dir)
        run = Run(self.plan, self.out_dir, "", time.time())
        previous = signal.getsignal(signal.SIGINT)
        try:
            with site.cluster(self.plan.cluster, self.address_option) as address:
                run.address = address
                self.say(f"freight gameday: {self.plan.title}: cluster {address}")
                self.say(f"freight gameday: report and journals in {self.out_dir}")
                with self._monitoring(address):
                    sampler = Sampler(address).start()
                    try:
                        for n, step in enumerate(self.plan.steps, 1):
                            result = StepResult(
                                step.name, "", step.experiment, step.hypothesis, "interrupted"
                            )
                            run.steps.append(result)
                            try:
                                self._step(step, n, address, result)
                            except (access.CommandFailed, ConnectionError) as e:
                                # A step that could not run (a fault refused, a workload that
                                # did not start) breaks its hypothesis; the next one runs.
                                result.reasons.append(str(e))
                                result.status, result.ended = "broken", time.time()
                                result.faults = step_faults(self.fault_journal, result.started)
                                self.say(f"   BROKEN: {e}")
                    except (KeyboardInterrupt, Interrupted):
                        run.interrupted = True
                        signal.signal(signal.SIGINT, signal.SIG_IGN)  # one stop is enough
                        self.say("freight gameday: interrupted: reverting what is in force")
                        if run.steps and run.steps[-1].status == "interrupted":
                            last = run.steps[-1]
                            last.ended = time.time()
                            if last.started:
                                last.faults = step_faults(self.fault_journal, last.started)
                            last.reasons.append("interrupted (Ctrl-C) before it ended")
                    finally:
                        run.recovered_at_end = self._recover()
                        sampler.stop()
                        run.samples = sampler.samples()
                        self._disconnect()
        except KeyboardInterrupt:  # while the cluster started or stopped
            run.interrupted = True
            run.recovered_at_end = self._recover()
        finally:
            signal.signal(signal.SIGINT, previous)
            notes.end()
            run.ended = time.time()
            run.notes = notes.read(self.notes_path)
        return run

    def _log_chaoslib(self) -> None:
        """chaoslib's account of each experiment goes to the run's log file, so the terminal
        keeps the game day's own lines."""
        log = logging.getLogger("chaostoolkit")
        handler = logging.FileHandler(os.path.join(self.out_dir, "logs", "chaostoolkit.log"))
        handler.setFormatter(logging.Formatter("[%(asctime)s %(levelname)s] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)

    def _recover(self) -> list[str]:
        try:
            done = faults.recover(self.fault_journal)
        except journal.JournalError as e:
            return [f"could not revert: {e}"]
        return [f"{r.injection.fault} on {r.injection.target.get('id')}: {r.result}" for r in done]

    def _disconnect(self) -> None:
        import freight

        if freight.is_initialized():  # the canary probes made this process a driver
            freight.shutdown()

    @contextlib.contextmanager
    def _monitoring(self, address: str) -> Iterator[None]:
        spec = self.plan.monitoring
        if spec is None:
            yield
            return
        with site.monitoring(spec, address, self.out_dir) as self.oncall:
            yield

    # -- one step --------------------------------------------------------------------------

    def _step(self, step: Step, n: int, address: str, result: StepResult) -> None:
        from freight.cli.chaos_cmd import _load as load_experiment
        from freight.cli.chaos_cmd import run_file

        experiment = load_experiment(step.experiment)
        result.title = str(experiment.get("title", ""))
        spare = spare_node(address)
        result.plan = describe(
            experiment,
            {
                "freight_spare_node_id": spare,
                "freight_workload_job_id": "(the step's workload driver)",
                **step.configuration,
            },
        )
        result.alert, result.page = step.alert, step.page
        self.say(f"\n== step {n}/{len(self.plan.steps)}: {step.name}: {result.title}")
        self.say(f"   hypothesis: {step.hypothesis}")
        for line in result.plan:
            self.say(f"   does: {line}")
        w = step.workload
        self.say(
            "   workload: "
            + (f"{w.kind}, {w.concurrency} in flight, {w.task_seconds:g} s each" if w else "none")
        )
        expects = step.alert or "no alert"
        if step.alert and step.page:
            expects += " (pages)"
        self.say(f"   expects: {expects}")
        if not self.prompter.go("go? [y/N] "):
            self.say("   skipped")
            result.status = "skipped"
            return
        result.started = time.time()
        notes.append(self.notes_path, f"step {step.name} starts", by="gameday")
        drivers: list[Driver] = []
        try:
            if w is not None:
                drivers.append(self._start_driver(step, address, 0))
            configuration: dict[str, Any] = {
                "freight_address": address,
                "freight_fault_journal": self.fault_journal,
                "freight_spare_node_id": spare,
                "freight_workload_job_id": drivers[0].job_id if drivers else "",
                **step.configuration,
            }
            result.journal_path = os.path.join(
                self.out_dir, "journals", f"{n:02d}-{step.name}.json"
            )
            ran = run_file(step.experiment, result.journal_path, **configuration)
            if ran.get("status") == "interrupted":
                raise Interrupted()
            result.faults = step_faults(self.fault_journal, result.started)
            steady = ran.get("steady_states") or {}
            result.steady_before = (steady.get("before") or {}).get("steady_state_met")
            result.steady_after = (steady.get("after") or {}).get("steady_state_met")
            result.reasons += verdict_of(ran)
            ends = [f.ended for f in result.faults if f.ended]
            result.fault_ended = max(ends) if ends else time.time()
            if step.kills_driver and drivers and not result.reasons:
                if drivers[0].wait_killed():
                    drivers.append(self._start_driver(step, address, 1))  # a new one must run
                else:
                    result.reasons.append("the fault did not kill the workload's driver")
            if not result.reasons:  # a step already broken has no fault to recover from
                self._recovery(step, experiment, configuration, drivers, result)
            self._oncall(step, result)
        except BaseException:
            for d in drivers:
                d.kill()  # the run stops here: no drain to wait for
            raise
        finally:
            for d in drivers:
                d.stop()
        self._account(step, drivers, result)
        result.ended = time.time()
        result.status = "broken" if result.reasons else "held"
        rec = f"{result.recovery_s:.1f} s" if result.recovery_s is not None else "none"
        self.say(
            f"   {result.status.upper()}: recovery {rec}, lost {len(result.lost)}"
            + "".join(f"\n   - {r}" for r in result.reasons)
        )
        notes.append(self.notes_path, f"step {step.name} {result.status}", by="gameday")

    def _start_driver(self, step: Step, address: str, k: int) -> Driver:
        assert step.workload is not None
        d = Driver(self.out_dir, step.name, k)
        d.start(address, step.workload)
        try:
            d.wait_started()
        except BaseException:
            d.kill()
            raise
        return d

    def _recovery(
        self,
        step: Step,
        experiment: dict[str, Any],
        configuration: dict[str, Any],
        drivers: list[Driver],
        result: StepResult,
    ) -> None:
        """Poll until the steady state holds and the workload has a right result back for
        work submitted after the fault ended; the later of the two is the recovery."""
        assert result.fault_ended is not None
        deadline = result.fault_ended + step.recovery_within
        live = drivers[-1:] if drivers else []
        held_at = progress_at = None
        while True:
            now = time.time()
            if held_at is None and steady_state_holds(experiment, configuration):
                held_at = time.time()
            if progress_at is None:
                got = [d.outcome().first_ok_after(result.fault_ended) for d in live]
                progress_at = (max(t for t in got if t) if all(got) else None) if live else now
            if held_at is not None and progress_at is not None:
                result.recovered = max(held_at, progress_at)
                return
            if now > deadline:
                missing = []
                if held_at is None:
                    missing.append("the steady state did not hold again")
                if progress_at is None:
                    missing.append("the workload got no result back")
                result.reasons.append(
                    f"no recovery within {step.recovery_within:g} s of the fault: "
                    + " and ".join(missing)
                )
                return
            time.sleep(RECOVERY_POLL_S)  # the polling interval; the deadline above bounds it

    def _oncall(self, step: Step, result: StepResult) -> None:
        """The expected alert and page, from Alertmanager and the pager sink."""
        if self.oncall is None or step.alert is None:
            return
        spec = self.plan.monitoring
        assert spec is not None
        result.watched = True
        since = result.fault_started or result.started
        deadline = since + spec.page_within
        while True:
            if result.alert_fired is None:
                result.alert_fired = self.oncall.alert_started(step.alert)
            if step.page and result.page_received is None:
                page = self.oncall.page_received(step.alert, since)
                if page is not None:
                    result.page_received, result.page_runbook = page
            if result.alert_fired is not None and (not step.page or result.page_received):
                return
            if time.time() > deadline:
                break
            time.sleep(RECOVERY_POLL_S)
        if result.alert_fired is None:
            result.reasons.append(f"{step.alert} did not fire within {spec.page_within:g} s")
        if step.page and result.page_received is None:
            result.reasons.append(f"no page for {step.alert} within {spec.page_within:g} s")
        elif step.page and not result.page_runbook:
            result.reasons.append(f"the page for {step.alert} carries no runbook link")

    def _account(self, step: Step, drivers: list[Driver], result: StepResult) -> None:
        """What was lost: submitted work whose right result never came back by the end of
        the step. A driver the step killed took its work in flight with it (abandoned)."""
        for k, d in enumerate(drivers):
            o = d.outcome()
            unit = "call" if step.workload and step.workload.kind == "actor" else "task"
            label = f"driver {k + 1} {unit}" if len(drivers) > 1 else unit
            result.submitted += len(o.submitted)
            result.answered += len(o.ok)
            lost = {f"{label} {i}": why for i, why in o.lost().items()}
            if step.kills_driver and k == 0:
                result.abandoned.update(lost)
            else:
                result.lost.update(lost)
        if result.lost:
            result.reasons.append(f"{len(result.lost)} result(s) lost: " + ", ".join(result.lost))


def verdict_of(ran: dict[str, Any]) -> list[str]:
    """What in a step's Chaos Toolkit journal breaks its hypothesis: a steady state that did
    not hold before the fault (the step then proves nothing), an activity that failed. Not
    the check chaoslib makes right after the method: a fault the runtime repairs takes time,
    so the game day asks instead that the steady state holds again within the step's
    ``recovery_within`` (see :meth:`GameDay._recovery`)."""
    reasons = []
    before = (ran.get("steady_states") or {}).get("before") or {}
    if before and before.get("steady_state_met") is False:
        failing = [
            str((p.get("activity") or {}).get("name"))
            for p in before.get("probes") or []
            if not p.get("tolerance_met") or p.get("status") != "succeeded"
        ]
        reasons.append(
            "the steady state did not hold before the fault ("
            + ", ".join(failing)
            + "): the step proves nothing; see its journal"
        )
    for activity in ran.get("run") or []:
        if activity.get("status") != "succeeded":
            error = str(activity.get("exception") and activity["exception"][-1]).strip()
            name = (activity.get("activity") or {}).get("name")
            reasons.append(f"the activity {name} {activity.get('status')}: {error}")
    if ran.get("status") == "aborted" and not reasons:
        reasons.append("the experiment aborted: see its journal")
    return reasons


def describe(experiment: dict[str, Any], configuration: dict[str, Any]) -> list[str]:
    """The experiment's method, in words: each activity and its arguments (``${name}`` forms
    replaced from ``configuration``, as chaoslib will)."""
    from chaoslib import substitute

    lines = []
    for activity in experiment.get("method") or []:
        provider = activity.get("provider") or {}
        arguments = substitute(provider.get("arguments") or {}, configuration, {})
        args = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
        lines.append(
            f"{activity.get('type')} {activity.get('name')}: {provider.get('func')}({args})"
        )
    return lines


def spare_node(address: str) -> str:
    """A node a node fault may take: the last ALIVE node that is not the head's node (the
    game day's drivers run next to the head)."""
    try:
        nodes = targets.alive_nodes(targets.cluster({"freight_address": address}))
    except (ConnectionError, ValueError):
        return ""
    spare = [n for n in nodes if not n.get("is_head_node")]
    return str(spare[-1]["node_id"]) if spare else ""


def steady_state_holds(experiment: dict[str, Any], configuration: dict[str, Any]) -> bool:
    """Whether the experiment's steady-state hypothesis holds now, checked by chaoslib."""
    from chaoslib.configuration import load_configuration
    from chaoslib.hypothesis import run_steady_state_hypothesis
    from chaoslib.run import EventHandlerRegistry
    from chaoslib.secret import load_secrets

    if not experiment.get("steady-state-hypothesis"):
        return True
    config = load_configuration({**experiment.get("configuration", {}), **configuration})
    secrets = load_secrets(experiment.get("secrets", {}), config)
    logging.getLogger("chaostoolkit").disabled = True  # a poll, not part of the run's account
    try:
        state = run_steady_state_hypothesis(
            experiment, config, secrets, None, EventHandlerRegistry()
        )
    except Exception:
        return False
    finally:
        logging.getLogger("chaostoolkit").disabled = False
    return bool(state and state.get("steady_state_met"))


def step_faults(path: str, since: float) -> list[Fault]:
    """The injections of the fault journal made at or after ``since``, with their ends."""
    found: dict[str, Fault] = {}
    for r in journal.read(path):
        if r["op"] == "inject" and float(r.get("time") or 0) >= since:
            found[str(r["id"])] = Fault(
                str(r["id"]),
                str(r.get("fault")),
                dict(r.get("target") or {}),
                int((r.get("process") or {}).get("pid") or 0),
                str(r.get("signal")),
                float(r["time"]),
            )
        elif r["op"] == "end" and str(r.get("id")) in found:
            f = found[str(r["id"])]
            f.ended, f.result = float(r["time"]), str(r.get("result"))
    return list(found.values())
