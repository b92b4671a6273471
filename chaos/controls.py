"""A Chaos Toolkit control: stop conditions evaluated continuously while an experiment runs
(what AWS FIS calls stop conditions; modelled on chaostoolkit-addons' safeguards control).

In the experiment file, under both runners::

    "controls": [{
      "name": "stop-conditions",
      "provider": {"type": "python", "module": "freight.chaos.controls",
                   "arguments": {"every": 1.0, "stop_when": [
                     {"type": "probe", "name": "nodes-alive",
                      "tolerance": {"type": "range", "range": [2, 10000]},
                      "provider": {"type": "python", "module": "freight.chaos.probes",
                                   "func": "nodes_alive"}}]}}}]

``stop_when`` holds probes written as a steady-state hypothesis writes them: the tolerance says
what is safe. A thread runs them every ``every`` seconds from the start of the experiment to its
end. The first probe out of its tolerance (or failing: a probe that cannot tell is no
guarantee) breaches: this run's faults in flight end at once (:func:`safety.abort`: their waits
return and they revert; new faults of the run refuse), every fault of this process still open
in the fault journal is reverted, and the experiment is interrupted the way chaoslib interrupts
one (:func:`chaoslib.exit.exit_gracefully`: its status becomes "interrupted" and its rollbacks
run). The journal's ``freight.stopped_by`` tells which condition, with the value it saw.

The control also refuses to start a run while the harness is halted (the run is interrupted),
starts each run's random choices afresh from its seed and records the seed in the journal, so a
run under the stock `chaos run` can be replayed too.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from freight.client import access

from . import faults, journal, reverts, safety, seed

logger = logging.getLogger("chaostoolkit")

DEFAULT_EVERY_S = 1.0


@dataclass
class _Watch:
    """The stop conditions of the run in progress and the thread evaluating them."""

    probes: list[dict[str, Any]]
    every: float
    configuration: dict[str, Any]
    secrets: dict[str, Any]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    breach: dict[str, Any] | None = None
    checks: int = 0


_watch: list[_Watch] = []  # the run in progress in this process (one at a time)


def _check_arguments(stop_when: Any, every: Any) -> None:
    from chaoslib.activity import ensure_activity_is_valid
    from chaoslib.exceptions import ChaosException, InvalidControl
    from chaoslib.hypothesis import ensure_hypothesis_tolerance_is_valid

    if isinstance(every, bool) or not isinstance(every, int | float) or not 0 < every <= 3600:
        raise InvalidControl(
            f"stop conditions: every must be a number of seconds above 0 and at most 3600, got "
            f"{every!r}"
        )
    if not isinstance(stop_when, list) or not stop_when:
        raise InvalidControl(
            "stop conditions: stop_when must be a list of probes, each with a tolerance (what is "
            "safe), as a steady-state hypothesis writes them"
        )
    for probe in stop_when:
        name = probe.get("name", "?") if isinstance(probe, dict) else repr(probe)
        if not isinstance(probe, dict) or probe.get("type") != "probe":
            raise InvalidControl(f"stop condition {name}: it must be a probe (type: probe)")
        if "tolerance" not in probe:
            raise InvalidControl(
                f"stop condition {name}: it has no tolerance; give the range of values that are "
                "safe, as in a steady-state hypothesis"
            )
        try:
            ensure_activity_is_valid(probe)
            ensure_hypothesis_tolerance_is_valid(probe["tolerance"])
        except ChaosException as e:
            raise InvalidControl(f"stop condition {name}: {e}") from None


def validate_control(control: dict[str, Any]) -> None:
    """chaoslib's validation of the experiment: a bad stop condition is refused before the
    run (`freight chaos run` exits 2 naming it)."""
    arguments = control.get("provider", {}).get("arguments") or {}
    _check_arguments(arguments.get("stop_when"), arguments.get("every", DEFAULT_EVERY_S))


def configure_control(
    configuration: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
    stop_when: list[dict[str, Any]] | None = None,
    every: float = DEFAULT_EVERY_S,
    **_: Any,
) -> None:
    """A run is starting: its random choices start afresh from its seed, past aborts are
    forgotten, and its stop conditions are loaded."""
    _check_arguments(stop_when, every)
    seed.reset()
    safety.reset_abort()
    _watch[:] = [_Watch(list(stop_when or []), float(every), configuration or {}, secrets or {})]


def before_experiment_control(context: Any, **_: Any) -> None:
    """Refuse to start while the harness is halted (under the stock runner too: the run is
    interrupted before its steady state is probed); else start evaluating the stop
    conditions, in a thread, until the experiment ends."""
    from chaoslib.exceptions import InterruptExecution

    if not _watch:
        return
    watch = _watch[0]
    try:
        safety.refuse_if_halted(faults.journal_path(watch.configuration))
    except safety.Halted as e:
        raise InterruptExecution(str(e)) from None
    watch.thread = threading.Thread(
        target=_evaluate, args=(watch,), name="freight-stop-conditions", daemon=True
    )
    watch.thread.start()
    logger.info(
        f"freight.chaos: {len(watch.probes)} stop condition(s) evaluated every {watch.every:g} s"
    )


def after_experiment_control(context: Any, state: Any = None, **_: Any) -> None:
    """Stop evaluating; record in the journal (``state``) the seed, how many times the
    conditions were checked, and the breach that stopped the run if one did."""
    watch = _watch[0] if _watch else None
    if watch is not None:
        watch.stop.set()
        if watch.thread is not None:
            watch.thread.join(60)
    if isinstance(state, dict):
        record = state.setdefault("freight", {})
        record["seed"] = seed.seed_of(watch.configuration if watch else None)
        if watch is not None:
            record["stop_condition_checks"] = watch.checks
            if watch.breach is not None:
                record["stopped_by"] = watch.breach["reason"]
                record["stop_condition"] = watch.breach


def cleanup_control() -> None:
    if _watch:
        _watch[0].stop.set()
    _watch.clear()


def _evaluate(watch: _Watch) -> None:
    from chaoslib.activity import run_activity
    from chaoslib.hypothesis import within_tolerance

    while not watch.stop.is_set():
        for probe in watch.probes:
            name = probe.get("name", "?")
            try:
                value = run_activity(probe, watch.configuration, watch.secrets)
            except Exception as e:  # a probe that cannot tell guarantees nothing
                _breach(watch, name, None, f"stop condition {name!r} failed: {e}")
                return
            if not within_tolerance(probe["tolerance"], value, watch.configuration, watch.secrets):
                _breach(
                    watch,
                    name,
                    value,
                    f"stop condition {name!r} breached: {value!r} is outside its tolerance "
                    f"{probe['tolerance']!r}",
                )
                return
        watch.checks += 1
        watch.stop.wait(watch.every)


def _breach(watch: _Watch, name: str, value: Any, reason: str) -> None:
    if watch.stop.is_set():
        return  # the experiment ended meanwhile: nothing left to stop
    logger.critical(f"freight.chaos: {reason}; aborting the experiment and reverting its faults")
    watch.breach = {"name": name, "value": value, "reason": reason, "time": time.time()}
    safety.abort(reason)  # faults held here end now; new ones refuse
    path = faults.journal_path(watch.configuration)
    try:
        for injection in journal.open_injections(path):
            if injection.by == os.getpid():
                done = reverts.undo(injection)
                journal.write_end(path, injection.id, f"stop condition: {done}")
                logger.warning(f"freight.chaos: reverted {injection.fault}: {done}")
    except (journal.JournalError, access.CommandFailed, OSError) as e:
        logger.error(f"freight.chaos: reverting after the breach failed: {e}")
    _interrupt()


def _interrupt() -> None:
    """Interrupt the experiment as chaoslib does (SIGUSR1: its status becomes "interrupted"
    and its rollbacks run); where chaoslib's handler is not installed (a run in a thread other
    than the main one), a KeyboardInterrupt in the main thread, which chaoslib treats alike."""
    from chaoslib.exit import exit_gracefully

    handler = signal.getsignal(signal.SIGUSR1)
    if getattr(handler, "__module__", "") == "chaoslib.exit":
        exit_gracefully()
    else:
        _thread.interrupt_main()
