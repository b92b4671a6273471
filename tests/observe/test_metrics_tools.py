"""Generated docs table, generated scrape configuration, and the worker crash-cause label."""

from __future__ import annotations

import importlib.util
import re
import signal
from pathlib import Path

import yaml

from freight.cli.metrics_cmd import prometheus_config
from freight.node.worker_pool import exit_cause
from freight.observe.catalogue import BY_NAME, CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
INFO = {
    "metrics_address": "127.0.0.1:9000",
    "file_sd": "/tmp/s/prometheus/file_sd.json",
    "cluster_name": "prod",
}


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_doc_is_current() -> None:
    gen = _gen_docs()
    assert gen.METRICS_MD.read_text() == gen.render_metrics(), (
        "docs/metrics.md is stale: run `python scripts/gen_docs.py`"
    )
    text = gen.METRICS_MD.read_text()
    assert all(f"`{m.name}`" in text for m in CATALOGUE)


def test_file_sd_config_splits_head_and_nodes() -> None:
    text = yaml.safe_dump(prometheus_config(INFO, http_sd=False, interval="5s"))
    config = yaml.safe_load(text)
    assert config["global"]["scrape_interval"] == "5s"
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"freight-head", "freight-nodes"}
    for name, role in (("freight-head", "head"), ("freight-nodes", "node")):
        job = jobs[name]
        assert job["honor_labels"] is True
        assert job["file_sd_configs"][0]["files"] == [INFO["file_sd"]]
        assert job["relabel_configs"] == [
            {"source_labels": ["__freight_role"], "regex": role, "action": "keep"}
        ]


def test_http_sd_config_points_at_the_heads_sd() -> None:
    config = prometheus_config(INFO, http_sd=True, interval="15s")
    for job in config["scrape_configs"]:
        assert job["http_sd_configs"][0]["url"] == "http://127.0.0.1:9000/sd"
        assert "file_sd_configs" not in job


def test_crash_cause_names_the_signal_or_exit_code() -> None:
    assert exit_cause(-signal.SIGKILL) == "sigkill"
    assert exit_cause(-signal.SIGSEGV) == "sigsegv"
    assert exit_cause(1) == "exit_code_1"
    assert exit_cause(0) == "exit_code_0"
    # anything else is one bucket, so the label stays a short, bounded enumeration
    assert exit_cause(-200) == "other"
    assert exit_cause(-signal.SIGUSR1) == "other"
    assert exit_cause(3) == "other"


def test_every_crash_cause_is_a_declared_snake_case_value() -> None:
    declared = BY_NAME["freight_worker_crashes_total"].allowed("cause")
    causes = {exit_cause(rc) for rc in range(-255, 256)}
    assert causes == set(declared)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", c) for c in declared), declared
