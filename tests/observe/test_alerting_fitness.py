"""The catalogue's metrics can be alerted on as they are: SLO thresholds are bucket bounds."""

from __future__ import annotations

import pytest

from freight.config import SETTINGS, settings
from freight.observe.catalogue import BY_NAME

SLO_SETTINGS = {
    "slo_scheduling_latency_s": (
        "freight_task_scheduling_latency_seconds",
        "freight_head_scheduling_latency_seconds",
    ),
    "slo_control_store_latency_s": ("freight_control_store_operation_seconds",),
}


@pytest.mark.parametrize("key", sorted(SLO_SETTINGS))
def test_each_slo_threshold_default_is_a_bucket_of_its_histograms(key) -> None:
    default = SETTINGS[key].default
    for name in SLO_SETTINGS[key]:
        assert default in BY_NAME[name].buckets, (name, default)


def test_scheduling_latency_counts_a_200_ms_slo_exactly() -> None:
    assert settings.slo_scheduling_latency_s == 0.2
    assert 0.2 in BY_NAME["freight_task_scheduling_latency_seconds"].buckets
    assert 0.2 in BY_NAME["freight_head_scheduling_latency_seconds"].buckets


@pytest.mark.parametrize("key", sorted(SLO_SETTINGS))
def test_every_allowed_threshold_is_a_bucket_of_its_histograms(key) -> None:
    for name in SLO_SETTINGS[key]:
        assert set(SETTINGS[key].choices) <= set(BY_NAME[name].buckets), name


def test_a_threshold_between_buckets_is_refused_with_the_allowed_values(monkeypatch) -> None:
    monkeypatch.setenv("FREIGHT_SLO_SCHEDULING_LATENCY_S", "0.3")
    with pytest.raises(ValueError, match=r"FREIGHT_SLO_SCHEDULING_LATENCY_S='0.3' is not one of"):
        _ = settings.slo_scheduling_latency_s
    monkeypatch.setenv("FREIGHT_SLO_SCHEDULING_LATENCY_S", "0.5")
    assert settings.slo_scheduling_latency_s == 0.5
