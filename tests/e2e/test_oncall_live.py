"""The on-call pack, live: a freight cluster, the Prometheus and Alertmanager of
`freight monitoring up` with the shipped rules and routing, and the paging, ticket and heartbeat
receivers pointed at a webhook server this test runs (the paging receiver keeps its PagerDuty
configuration and sends PagerDuty Events v2 to it, with the routing key read from a file).

Checks: every panel query of every dashboard returns data from the live Prometheus after a
workload (tasks, failing tasks, actors, placement groups, objects, spilling); system errors burn
the task-success budget and the fast-burn page reaches the paging webhook; SIGKILLing the head
pages FreightHeadDown with its runbook link while the task, worker and telemetry alerts that
the outage fires reach no one (the inhibition), and restarting the head as its runbook says
(`freight start --head --storage FILE`) resolves the page.

Shortened durations (and nothing else): `freight monitoring up --time-scale 60` (:data:`SCALE`),
the drill option, divides every duration of the shipped pack by 60: each rule's ``for`` (1m ->
1s, 2m -> 2s, 5m -> 5s, ... 3h -> 3m) and Alertmanager's ``resolve_timeout`` (5m -> 5s),
``group_wait`` (30s -> 500ms), ``group_interval`` (5m -> 5s, 1m -> 1s) and ``repeat_interval``
(4h -> 4m, 1h -> 1m, 1m -> 1s). Expressions (with their rate windows), labels, annotations,
routes, receivers and inhibitions are the shipped ones. Prometheus scrapes and evaluates every
second. The figures (head kill to page, restart to resolved) are printed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import cloudpickle
import numpy as np
import psutil
import pytest
import yaml
from test_monitoring import _require_servers, free_port

import freight
from freight.exceptions import WorkerCrashedError
from freight.testing import WebhookReceiver, patched_environ, short_temp_dir
from freight.testing import wait_for_condition as wait_until
from freight.util.placement_group import placement_group, remove_placement_group

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[2]


def _dashboards() -> ModuleType:
    """dashboards/generate.py, loaded as tests/dashboards loads it (one module for both)."""
    name = "freight_dashboards"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "dashboards" / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


FREIGHT = str(Path(sys.executable).with_name("freight"))
CLUSTER = "oncall-live"
BASE = "https://freight.example.invalid/runbooks"  # the shipped runbook base
SCALE = 60  # every duration of the rules and the routing, divided by this
MiB = 1024 * 1024
STORE = 64 * MiB  # a small object store, so that the workload spills
KEY = "routing-key-3f9"
# How the cluster starts; again, with the same --storage, it is the runbook's restart recipe
# ("freight start --head --storage FILE with the options it ran with").
START = [
    "start", "--head", "--port", "0", "--num-cpus", "2", "--cluster-name", CLUSTER,
    "--object-store-memory", str(STORE),
]  # fmt: skip
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def inhibited_by_head_down() -> re.Pattern[str]:
    """The alert names the shipped routing silences while FreightHeadDown fires."""
    routing = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    rule = next(
        r
        for r in routing["inhibit_rules"]
        if r["source_matchers"] == ['alertname="FreightHeadDown"']
    )
    (matcher,) = rule["target_matchers"]
    m = re.fullmatch(r'alertname=~"(.*)"', matcher)
    assert m, matcher
    return re.compile(m.group(1))


@dataclass
class Stack:
    temp_dir: Path
    env: dict[str, str]
    address: str
    session_dir: Path
    storage: Path
    prometheus: str
    alertmanager: str
    hooks: WebhookReceiver

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FREIGHT, *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )

    def head_pid(self) -> int:
        return int(json.loads((self.session_dir / "head.json").read_text())["pid"])

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result; AssertionError with Prometheus's error when it fails."""
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with _NO_PROXY.open(url, timeout=10) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{promql}: {e.read().decode(errors='replace')}") from None
        assert answer["status"] == "success", answer
        return list(answer["data"]["result"])

    def am_alerts(self) -> list[dict[str, Any]]:
        with _NO_PROXY.open(f"{self.alertmanager}/api/v2/alerts", timeout=10) as r:
            return list(json.loads(r.read()))

    def pages(self, since: float = 0.0) -> list[dict[str, Any]]:
        """PagerDuty events received since ``since`` (monotonic), with their arrival time."""
        return [dict(p.body, at=p.at) for p in self.hooks.posts("/page", since)]

    def tickets(self, since: float = 0.0, until: float = math.inf) -> list[str]:
        """Alert names of the ticket notifications received from ``since`` to ``until``."""
        return [
            a["labels"]["alertname"]
            for p in self.hooks.posts("/ticket", since)
            if p.at < until
            for a in p.body["alerts"]
        ]


def _page_name(event: dict[str, Any]) -> str:
    """The alert a PagerDuty event is about, read from its runbook link (one page per alert
    name); the event's dedup key is a hash of its Alertmanager group."""
    return str(event["payload"]["custom_details"]["runbook_url"]).rsplit("/", 1)[1][:-3]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _require_servers()
    with short_temp_dir() as temp_dir, WebhookReceiver() as hooks:
        state = temp_dir / "state"
        state.mkdir(mode=0o700)
        key_file = temp_dir / "pagerduty-key"
        key_file.write_text(KEY + "\n")
        key_file.chmod(0o600)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS", "FREIGHT_RUNBOOK_BASE_URL")
        }
        env.update(
            FREIGHT_TEMP_DIR=str(temp_dir),
            FREIGHT_PRICE_CPU_HOUR="3.6",  # so that the spend panels have something to show
            NO_COLOR="1",
        )
        s = Stack(temp_dir, env, "", Path(), state / "control.db", "", "", hooks)
        try:
            started = s.cli(*START, "--storage", str(s.storage))
            assert started.returncode == 0, started.stderr
            address = re.search(r"address:\s+(\S+)", started.stdout)
            session = re.search(r"session dir:\s+(\S+)", started.stdout)
            assert address and session, started.stdout
            s.address, s.session_dir = address.group(1), Path(session.group(1))
            prom_port, am_port = free_port(), free_port()
            up = s.cli(
                "monitoring", "up", "--address", s.address,
                "--prometheus-port", str(prom_port), "--alertmanager-port", str(am_port),
                "--scrape-interval", "1s", "--time-scale", str(SCALE),
                "--pagerduty-url", f"{hooks.url}/page", "--pagerduty-key-file", str(key_file),
                "--webhook", f"ticket={hooks.url}/ticket",
                "--webhook", f"heartbeat={hooks.url}/heartbeat",
            )  # fmt: skip
            assert up.returncode == 0, up.stderr
            s.prometheus = f"http://127.0.0.1:{prom_port}"
            s.alertmanager = f"http://127.0.0.1:{am_port}"
            # The workload counts only once Prometheus has scraped the counters at their start.
            wait_until(
                lambda: (
                    s.query('min(up{job=~"freight-head|freight-nodes"}) == 1')
                    and len(s.query('up{job=~"freight-head|freight-nodes"}')) == 2
                ),
                60,
                "Prometheus to scrape the head and the node",
            )
            with patched_environ(
                FREIGHT_TEMP_DIR=str(temp_dir),
                FREIGHT_TOKEN=None,
                FREIGHT_ADDRESS=None,
                FREIGHT_JOB_LABELS="team=oncall,owner=live-test",
            ):
                freight.init(address=s.address)
                try:
                    yield s
                finally:
                    freight.shutdown()
        finally:
            s.cli("monitoring", "down")
            s.cli("stop")
            prefix = str(temp_dir) + os.sep
            for p in psutil.process_iter(["cmdline"]):
                if any(a.startswith(prefix) for a in p.info["cmdline"] or ()):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()


# ---- the workload ---------------------------------------------------------------------------


@freight.remote
def square(x: int) -> int:
    return x * x


@freight.remote(max_retries=0)
def refuse(x: int) -> int:
    raise ValueError(f"the user's code refuses {x}")


@freight.remote(max_retries=0)
def die() -> None:
    os._exit(1)  # the worker process dies under its task: a system error


@freight.remote
def block(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 2**63, 4 * MiB // 8, dtype=np.int64)


@freight.remote(max_restarts=1)
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n

    def pid(self) -> int:
        return os.getpid()


def _finite(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)


def _workload(stack: Stack) -> None:
    """Tasks that succeed and fail (application errors only: the system errors are the next
    test's), an actor whose process is killed between calls and is restarted, a placement
    group, objects beyond the store's capacity (spilled and read back)."""
    assert freight.get([square.remote(i) for i in range(40)], timeout=120) == [
        i * i for i in range(40)
    ]
    with pytest.raises(Exception, match="refuses"):
        freight.get(refuse.remote(1), timeout=60)
    tally = Tally.remote()
    assert freight.get([tally.add.remote() for _ in range(5)], timeout=60)[-1] == 5
    restarts = 'sum(freight_actor_restarts_total{class_name="Tally"})'
    before = _value(stack.query(restarts))
    os.kill(freight.get(tally.pid.remote(), timeout=60), signal.SIGKILL)
    wait_until(lambda: _value(stack.query(restarts)) > before, 60, "the head to restart the actor")
    freight.kill(tally)
    pg = placement_group([{"CPU": 1}])
    assert pg.wait(timeout_seconds=60)
    remove_placement_group(pg)
    # Three times the store's capacity, held, then read back: spills and restores.
    refs = [block.remote(i) for i in range(48)]
    freight.wait(refs, num_returns=len(refs), timeout=120, fetch_local=False)
    assert freight.get(refs[0], timeout=60)[0] == freight.get(block.remote(0), timeout=60)[0]
    del refs


def test_every_dashboard_panel_query_returns_data(stack: Stack) -> None:
    # A counter series with a function's name starts at its first report: once Prometheus has
    # seen each (a first round), the second round's work shows in increase() and rate().
    _workload(stack)
    wait_until(
        lambda: len(stack.query('freight_tasks_finished_total{name=~"square|refuse|block"}')) >= 3,
        30,
        "Prometheus to scrape the first round's task counts",
    )
    _workload(stack)
    gen = _dashboards()
    # Each query must return data once the scrapes after the workload are in; one answered with
    # data is not asked again (its 1m rate window empties once the workload is over).
    missing = {
        f"{d} / {title}: {q}": q
        for d, title, expr in gen.panel_queries()
        for q in [gen.concrete(expr)]
    }

    def answered() -> bool:
        for label, q in list(missing.items()):
            if _finite(stack.query(q)):
                del missing[label]
        return not missing

    try:
        wait_until(answered, 60, "every panel query to return data")
    except TimeoutError:
        gaps = "\n".join(missing)
        pytest.fail(f"panel queries without data from the live Prometheus:\n{gaps}")


def _value(result: list[dict[str, Any]]) -> float:
    """The value of a one-series query result; 0 when there is no series yet."""
    return float(result[0]["value"][1]) if result else 0.0


# ---- system errors burn the budget ----------------------------------------------------------


def _system_errors(stack: Stack, n: int) -> None:
    """``n`` tasks whose worker process dies under them (max_retries=0): ``WorkerCrashedError``,
    counted as ``error_kind="system"``, the bad events of the task-success SLO."""
    # The first failure of a function starts its series; rate() counts from the second sample
    # on, so the burst goes once Prometheus has seen the series.
    seen = 'freight_tasks_finished_total{name="die", error_kind="system"} > 0'
    if not stack.query(seen):
        with pytest.raises(WorkerCrashedError):
            freight.get(die.remote(), timeout=60)
        wait_until(lambda: stack.query(seen), 30, "Prometheus to scrape the first system error")
    for ref in [die.remote() for _ in range(n)]:
        with pytest.raises(WorkerCrashedError):
            freight.get(ref, timeout=60)


def _firing(stack: Stack, name: str, **labels: str) -> list[dict[str, Any]]:
    """Alertmanager's alerts ``name`` of this cluster with ``labels``."""
    return [
        a
        for a in stack.am_alerts()
        if a["labels"]["alertname"] == name
        and a["labels"].get("cluster") == CLUSTER
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def test_system_errors_burn_the_budget_and_page(stack: Stack) -> None:
    since = time.monotonic()
    _system_errors(stack, 8)
    # The fast burn: 14.4 times the budget over 1h and 5m (the rules' ratio, not recomputed).
    (page,) = wait_until(
        lambda: [
            p
            for p in stack.pages(since)
            if p["event_action"] == "trigger"
            and _page_name(p) == "FreightTaskErrorBudgetBurn"
            and "over the last 1h" in p["payload"]["custom_details"]["firing"]
        ][:1],
        60,
        "the fast-burn page of the task-success budget at the paging webhook",
    )
    print(f"\nfast-burn page {page['at'] - since:.1f} s after the first failing task")
    assert page["routing_key"] == KEY
    assert page["payload"]["severity"] == "critical"
    details = page["payload"]["custom_details"]
    assert details["cluster"] == CLUSTER
    assert details["runbook_url"] == f"{BASE}/FreightTaskErrorBudgetBurn.md"
    (alert,) = _firing(stack, "FreightTaskErrorBudgetBurn", long="1h", short="5m")
    assert alert["labels"]["severity"] == "critical"
    assert alert["status"]["state"] == "active"
    ratio = stack.query(f'freight:task_system_errors:ratio_rate5m{{cluster="{CLUSTER}"}}')
    assert float(ratio[0]["value"][1]) > 14.4 * 0.001


def test_the_paging_receiver_is_pagerduty_pointed_at_the_test(stack: Stack) -> None:
    """What the pages above went through: the shipped PagerDuty receiver (resolved events on),
    only its endpoint and key file changed by `freight monitoring up`."""
    with _NO_PROXY.open(f"{stack.alertmanager}/api/v2/status", timeout=10) as r:
        config = yaml.safe_load(json.loads(r.read())["config"]["original"])
    shipped = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    (page,) = [r for r in config["receivers"] if r["name"] == "page"]
    (pd,) = page["pagerduty_configs"]
    (want,) = next(r for r in shipped["receivers"] if r["name"] == "page")["pagerduty_configs"]
    assert pd["url"] == f"{stack.hooks.url}/page"
    assert pd["routing_key_file"] == str(stack.temp_dir / "pagerduty-key")
    assert pd["send_resolved"] is True
    assert (pd["severity"], pd["description"]) == (want["severity"], want["description"])
    assert pd["details"] | want["details"] == pd["details"]  # Alertmanager adds its defaults
    assert config["inhibit_rules"] == shipped["inhibit_rules"]


# ---- the head goes down and comes back ------------------------------------------------------


def test_head_down_pages_once_with_its_runbook_and_restart_resolves_it(stack: Stack) -> None:
    """Last in the file: it kills the head. The runbook's recipe brings it back."""
    silenced = inhibited_by_head_down()
    wait_until(lambda: not _firing(stack, "FreightHeadDown"), 30, "no head-down alert yet")
    killed = time.monotonic()
    os.kill(stack.head_pid(), signal.SIGKILL)
    (page,) = wait_until(
        lambda: [
            p
            for p in stack.pages(killed)
            if p["event_action"] == "trigger" and _page_name(p) == "FreightHeadDown"
        ][:1],
        60,
        "the FreightHeadDown page at the paging webhook",
    )
    paged = page["at"] - killed
    assert page["routing_key"] == KEY
    assert page["payload"]["severity"] == "critical"
    details = page["payload"]["custom_details"]
    assert details["cluster"] == CLUSTER
    assert details["runbook_url"] == f"{BASE}/FreightHeadDown.md"

    # Alertmanager knows the head is down (it paged). Meanwhile, work goes on on the live node
    # and fails with system errors: the task, worker, scheduling and telemetry alerts of the
    # cluster fire, and Alertmanager holds them back for the head-down alert.
    _system_errors(stack, 8)

    def held() -> set[str]:
        return {
            a["labels"]["alertname"]
            for a in stack.am_alerts()
            if a["labels"].get("cluster") == CLUSTER
            and silenced.fullmatch(a["labels"]["alertname"])
            and a["status"]["inhibitedBy"]
        }

    expected = {
        "FreightTaskErrorBudgetBurn",
        "FreightWorkerCrashLooping",
        "FreightTelemetryDropped",
    }
    try:
        wait_until(lambda: held() >= expected, 60, f"{sorted(expected)} firing and inhibited")
    except TimeoutError:
        pytest.fail(
            f"not held back by the head-down alert: {sorted(expected - held())}; tickets sent "
            f"meanwhile: {sorted(set(stack.tickets(page['at'])))}"
        )

    restarting = time.monotonic()
    restarted = stack.cli(*START, "--storage", str(stack.storage))
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    assert "outlived the head" in restarted.stdout  # the head rejoined its surviving agent
    resolved = wait_until(
        lambda: [
            p
            for p in stack.pages(restarting)
            if p["event_action"] == "resolve" and p["dedup_key"] == page["dedup_key"]
        ][:1],
        60,
        "the FreightHeadDown page to be resolved at the paging webhook",
    )[0]
    print(
        f"\nhead SIGKILL -> FreightHeadDown page at the webhook: {paged:.1f} s; head restart -> "
        f"resolved at the webhook: {resolved['at'] - restarting:.1f} s (durations / {SCALE}: "
        "for 1m -> 1s, group_wait 30s -> 500ms, group_interval 5m -> 5s; scrape and evaluation "
        "every 1 s)"
    )
    # From the head-down page (Alertmanager knew) to the restart, nothing the head-down alert
    # inhibits reached a receiver. (An alert sent before Alertmanager knew the head was down is
    # not held back, with the shipped group_wait of 30 s either; once the head is back, what
    # still fires is sent: that is the inhibition ending.) The outage is one page: its
    # availability budget burn is held back too.
    pages = {_page_name(p) for p in stack.pages(page["at"]) if p["at"] < restarting}
    tickets = set(stack.tickets(page["at"], restarting))
    leaked = {n for n in pages | tickets if silenced.fullmatch(n)}
    assert not leaked, f"inhibited alerts reached the receivers: {sorted(leaked)}"
    assert pages == {"FreightHeadDown"}, pages
