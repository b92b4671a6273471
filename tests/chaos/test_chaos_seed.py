"""The one seed of a run, without a cluster: each purpose has its own stream that the seed
fixes and a new run restarts; a seed that is not a whole number is refused with what to do."""

from __future__ import annotations

import pytest

from freight.chaos import seed
from freight.client import access


def draws(configuration: dict[str, object], purpose: str, n: int = 5) -> list[int]:
    stream = seed.rng(configuration, purpose)
    return [stream.randrange(1000) for _ in range(n)]


def test_a_seed_fixes_each_purposes_stream_and_a_new_run_restarts_it() -> None:
    seed.reset()
    first = draws({"freight_seed": 7}, "targets")
    more = draws({"freight_seed": 7}, "targets")  # the same run: the stream goes on
    assert more != first
    seed.reset()
    assert draws({"freight_seed": "7"}, "targets") == first  # as `chaos run --var` gives it
    assert draws({"freight_seed": 7}, "timing") != draws({"freight_seed": 8}, "timing")


def test_a_run_without_a_seed_keeps_one_for_the_whole_run() -> None:
    seed.reset()
    drawn = seed.seed_of(None)
    assert seed.seed_of({}) == drawn and 0 <= drawn < 2**seed.SEED_BITS


@pytest.mark.parametrize("bad", ["seven", 1.5, True, [7]])
def test_a_seed_that_is_not_a_whole_number_is_refused(bad: object) -> None:
    with pytest.raises(access.UsageError, match="freight_seed must be a whole number"):
        seed.seed_of({"freight_seed": bad})
