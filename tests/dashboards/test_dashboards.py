"""The Grafana dashboards in dashboards/: current, built only from catalogued metrics, valid.

No Grafana server runs here, so "valid" means what can be checked without one: the JSON is read
back through grafana-foundation-sdk's typed model (each panel's options and each query decoded by
its plugin's schema) and comes out unchanged; every PromQL expression parses (``promtool check
rules``, Prometheus's own parser); every metric a query names is declared in the catalogue.
Running every query against a live Prometheus fed by a real cluster is the live test's job; it
takes its queries from ``panel_queries()`` and fills their variables with ``concrete()``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from freight.observe.catalogue import CATALOGUE, Type

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
REGENERATE = "make dashboards (or .venv/bin/python dashboards/generate.py)"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("freight_dashboards", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _committed(name: str) -> dict[str, Any]:
    return json.loads((DASHBOARDS / f"{name}.json").read_text(encoding="utf-8"))


def _panels(model: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in model["panels"] if p["type"] != "row"]


# -- metric names out of PromQL ---------------------------------------------------------------
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:])\d[A-Za-z0-9_.]*")  # 0.99, 1e3, 5m, 1h30m
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and label names left out)."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = _LABEL_LIST.sub("", text)
    text = _RANGE.sub("", text)
    text = _NUMBER.sub("0", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group()
        if word.lower() in KEYWORDS:
            continue
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function call
        names.add(word)
    return names


def _declared() -> set[str]:
    names = {"ALERTS", "up"}
    for m in CATALOGUE:
        names.add(m.name)
        if m.type is Type.HISTOGRAM:
            names |= {m.name + s for s in ("_bucket", "_sum", "_count")}
    return names


def test_the_metric_name_parser_finds_names_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, method) (rate(foo_seconds_bucket{a="b(c)"}'
        "[$__rate_interval]))) / on (x) group_left bar_total offset 5m or vector(0) > bool 1"
    )
    assert metric_names(expr) == {"foo_seconds_bucket", "bar_total"}
    assert metric_names("up") == {"up"}


# -- the checks ---------------------------------------------------------------------------------
def test_committed_files_equal_what_the_generator_writes() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, text in gen.outputs().items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]
    assert not stale, f"{', '.join(stale)} out of date: run `{REGENERATE}` and commit the result"


def test_every_query_names_only_catalogued_metrics() -> None:
    declared = _declared()
    committed = [
        (name, panel["title"], target["expr"])
        for name in gen.DASHBOARDS
        for panel in _panels(_committed(name))
        for target in panel["targets"]
    ]
    triples = gen.panel_queries() + committed
    assert len({d for d, _, _ in triples}) == 3
    for dashboard, title, expr in triples:
        names = metric_names(expr)
        assert names, f"{dashboard} / {title}: no metric found in {expr!r}"
        unknown = names - declared
        assert not unknown, (
            f"{dashboard} / {title} names {sorted(unknown)}, which observe/catalogue.py does not "
            "declare: add the metric to the catalogue or change the panel"
        )


_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")
_RATE_OPEN = re.compile(r"\b(?:rate|increase)\(\s*$")


def test_counters_are_rated_and_gauges_are_not() -> None:
    """A bare counter is a meaningless running total and rate() of a gauge is noise."""
    kinds = {m.name: m.type for m in CATALOGUE}
    for m in CATALOGUE:
        if m.type is Type.HISTOGRAM:
            kinds |= {m.name + s: Type.COUNTER for s in ("_bucket", "_sum", "_count")}
    for dashboard, title, expr in gen.panel_queries():
        for match in _SELECTOR.finditer(expr):
            kind = kinds.get(match.group(1))
            rated = bool(_RATE_OPEN.search(expr[: match.start()]))
            where = f"{dashboard} / {title}: {match.group(1)} in {expr!r}"
            if kind is Type.COUNTER:
                assert rated, f"{where} is a counter outside rate()/increase()"
            elif kind is Type.GAUGE:
                assert not rated, f"{where} is a gauge inside rate()/increase()"
            elif kind is Type.HISTOGRAM:
                pytest.fail(f"{where} names a histogram without _bucket/_sum/_count")
        if "histogram_quantile(" in expr:
            assert re.search(r"sum by \(le[,)]", expr) and "_bucket{" in expr, expr


def test_every_query_is_filtered_by_cluster_and_uses_the_provisioned_datasource() -> None:
    for name in gen.DASHBOARDS:
        for panel in _panels(_committed(name)):
            assert panel["datasource"]["uid"] == gen.DATASOURCE_UID, panel["title"]
            assert panel["targets"], f"{name} / {panel['title']} has no query"
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == gen.DATASOURCE_UID, panel["title"]
                selectors = re.findall(r"\{[^}]*\}", _STRING.sub('""', target["expr"]))
                raw = re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*(\{[^}]*\})", target["expr"])
                assert selectors and len(raw) == len(selectors), target["expr"]
                for matchers in raw:
                    assert 'cluster=~"$cluster"' in matchers, (
                        f"{name} / {panel['title']}: selector {matchers} is not filtered by cluster"
                    )


def test_every_panel_has_a_title_description_and_unit() -> None:
    for name in gen.DASHBOARDS:
        panels = _panels(_committed(name))
        assert len(panels) >= 10, name
        for panel in panels:
            assert panel.get("title"), panel
            assert panel.get("description"), f"{name} / {panel['title']} has no description"
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit, f"{name} / {panel['title']} has no unit"
        titles = [p["title"] for p in panels]
        assert len(titles) == len(set(titles)), f"{name}: two panels share a title"


def test_slo_panels_draw_their_objective_and_latency_panels_their_threshold() -> None:
    panels = {p["title"]: p for p in _panels(_committed("freight-executive"))}
    for slo in (gen.TASK_SUCCESS, gen.SCHEDULING, gen.HEAD_AVAILABILITY):
        steps = panels[f"SLO attainment: {slo.name}"]["fieldConfig"]["defaults"]["thresholds"]
        assert [s["value"] for s in steps["steps"]] == [None, slo.objective]
        assert f"Error budget left: {slo.name}" in panels
    oncall = {p["title"]: p for p in _panels(_committed("freight-oncall"))}
    defaults = oncall["Task scheduling latency"]["fieldConfig"]["defaults"]
    assert defaults["thresholds"]["steps"][-1]["value"] == gen.SCHEDULING_THRESHOLD_SECONDS
    for name in gen.DASHBOARDS:
        for panel in _panels(_committed(name)):
            defaults = panel["fieldConfig"]["defaults"]
            if panel["type"] == "timeseries" and len(defaults["thresholds"]["steps"]) > 1:
                # A threshold on a graph is drawn as a line, or nobody sees it.
                assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", panel["title"]
    latency = next(m for m in CATALOGUE if m.name == "freight_task_scheduling_latency_seconds")
    assert gen.SCHEDULING_THRESHOLD_SECONDS in latency.buckets


def test_the_debug_dashboard_has_its_template_variables() -> None:
    declared = _declared()
    for name in gen.DASHBOARDS:
        variables = {v["name"]: v for v in _committed(name)["templating"]["list"]}
        assert "cluster" in variables, name
    variables = {v["name"]: v for v in _committed("freight-debug")["templating"]["list"]}
    assert set(variables) == {"cluster", "node", "name"}
    for v in variables.values():
        assert v["type"] == "query" and v["datasource"]["uid"] == gen.DATASOURCE_UID
        got = re.fullmatch(r"label_values\((.+), (\w+)\)", v["query"])
        assert got, v["query"]
        assert metric_names(got.group(1)) <= declared, v["query"]
    assert variables["node"]["query"].endswith(f", {gen.NODE_LABEL})")
    exprs = [e for d, _, e in gen.panel_queries() if d == "freight-debug"]
    assert any('name=~"$name"' in e for e in exprs)
    assert any(f'{gen.NODE_LABEL}=~"$node"' in e for e in exprs)


def test_the_json_reads_back_unchanged_through_the_sdk_typed_model() -> None:
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import prometheus
    from grafana_foundation_sdk.models.dashboard import Dashboard, RowPanel

    register_default_plugins()
    for name in gen.DASHBOARDS:
        text = (DASHBOARDS / f"{name}.json").read_text(encoding="utf-8")
        model = Dashboard.from_json(json.loads(text))
        panels = [p for p in model.panels or [] if not isinstance(p, RowPanel)]
        for p in panels:
            # Decoded by the panel plugin's schema, not left as a bare dict.
            assert not isinstance(p.options, dict | type(None)), (name, p.title)
            assert all(isinstance(t, prometheus.Dataquery) for t in p.targets or []), p.title
        again = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"
        assert again == text, f"{name}.json changes when read back through the SDK's model"


def test_provisioning_files_point_grafana_at_the_datasource_and_the_folder() -> None:
    prov = DASHBOARDS / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "freight.yml").read_text(encoding="utf-8"))
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["uid"] == gen.DATASOURCE_UID
    assert source["url"] == "http://localhost:9090"
    providers = yaml.safe_load((prov / "dashboards" / "freight.yml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_concrete_fills_every_grafana_variable() -> None:
    expr = 'rate(x{cluster=~"$cluster", node_id=~"$node"}[$__rate_interval]) + y[$__range]'
    assert gen.concrete(expr, cluster="c1", node="n1") == (
        'rate(x{cluster=~"c1", node_id=~"n1"}[1m]) + y[1h]'
    )
    with pytest.raises(ValueError, match=r"\$__interval"):
        gen.concrete("rate(x[$__interval])")
    for _, _, expr in gen.panel_queries():
        assert "$" not in gen.concrete(expr)


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        reason = "promtool is not installed (scripts/install-system-deps.sh installs prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return promtool


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    promtool = _promtool()
    rules = []
    for i, (_, _, expr) in enumerate(gen.panel_queries()):
        rules.append({"record": f"dashboard:query_{i}", "expr": gen.concrete(expr)})
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    check = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{len(rules)} rules found" in check.stdout, check.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    """The promtool check above can fail: a malformed expression is refused."""
    promtool = _promtool()
    path = tmp_path / "bad.yml"
    bad = {"record": "dashboard:bad", "expr": "sum by (le (rate(x[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "bad", "rules": [bad]}]}))
    check = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode != 0
