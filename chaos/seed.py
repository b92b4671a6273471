"""One seed drives every random choice of a run (which of several matching workers a fault
hits, ...): ``freight_seed`` in the experiment's configuration, set by `freight chaos run
--seed N` (default: a random one, printed and recorded in the Chaos Toolkit journal), so that
`freight chaos replay JOURNAL` makes the same choices in the same order.

Each purpose ("targets", ...) draws from its own stream derived from the seed, so a new kind of
choice added later does not shift the choices the others make. The streams live as long as the
process, which is one run under the stock `chaos run`; `freight chaos run` and the freight
control start them afresh at the start of each run (:func:`reset`).
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Any

from freight.client import access

KEY = "freight_seed"
SEED_BITS = 32  # short enough to read out and type back

_streams: dict[tuple[int, str], random.Random] = {}
_lock = threading.Lock()
_unseeded: list[int] = []  # the seed this process drew for runs that name none

logger = logging.getLogger("chaostoolkit")


def new_seed() -> int:
    """A fresh random seed, for a run that names none."""
    return random.SystemRandom().getrandbits(SEED_BITS)


def seed_of(configuration: dict[str, Any] | None) -> int:
    """The run's seed: its ``freight_seed`` (a whole number, or one written as a string, as
    `chaos run --var` gives it), else one drawn once for this process and logged, so that even
    a run that named none can be repeated."""
    value = (configuration or {}).get(KEY)
    if value is None or value == "":
        with _lock:
            if not _unseeded:
                _unseeded.append(new_seed())
                logger.info(f"freight.chaos: seed {_unseeded[0]} (set {KEY} to repeat the run)")
            return _unseeded[0]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise access.UsageError(f"{KEY} must be a whole number, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise access.UsageError(f"{KEY} must be a whole number, got {value!r}") from None


def rng(configuration: dict[str, Any] | None, purpose: str) -> random.Random:
    """The run's random stream for ``purpose``: every call of a run gets the same stream, so
    successive choices follow one sequence that the seed fixes."""
    key = (seed_of(configuration), purpose)
    with _lock:
        stream = _streams.get(key)
        if stream is None:
            stream = _streams[key] = random.Random(f"freight.chaos/{key[0]}/{purpose}")
        return stream


def reset() -> None:
    """A run starts: its choices begin again at the start of each stream."""
    with _lock:
        _streams.clear()
        _unseeded.clear()
