"""The loop from fault to page, end to end: a two-node cluster started as the runbooks assume
(`freight start --head --storage FILE`, a second node joined with `freight start --address`),
watched by the on-call pack's real Prometheus and Alertmanager (`freight monitoring up
--time-scale 60 --pager`: the shipped rules and routing with their durations divided by 60, the
paging receiver's PagerDuty events going to the pager sink), a workload of tasks submitted all
along, and the shipped experiment chaos/experiments/head-crash-pages.json run with `freight
chaos run`, then with the stock `chaos run`. Each run kills the head, waits for the
FreightHeadDown page, starts the head again as the runbook says, and its steady state after
holds only if every node is alive, no task failed or lost an object, and the page reached the
pager with its runbook link within 60 s of the kill. Each test passes only when its run does and
every task submitted came back with its right result. It prints the figures: kill to page,
restart to healthy.

A minute-long drill with Prometheus and Alertmanager: it runs with CI=true only (as CI installs
both: scripts/install-system-deps.sh).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

import freight
from freight.chaos import oncall
from freight.testing import patched_environ, short_temp_dir, wait_for_condition

cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "chaos" / "experiments" / "head-crash-pages.json"
FREIGHT = str(Path(sys.executable).with_name("freight"))
CLUSTER = "chaos-loop"
BASE = "https://freight.example.invalid/runbooks"  # the shipped runbook base
BATCH = 4  # tasks a round of the workload submits (the cluster has 4 CPUs)

pytestmark = pytest.mark.skipif(
    os.environ.get("CI") != "true",
    reason="a minute-long drill with Prometheus and Alertmanager: runs with CI=true",
)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Drill:
    temp_dir: Path
    env: dict[str, str]
    address: str = ""
    session_dir: Path = Path()

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [FREIGHT, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            cwd=self.temp_dir,
            stdin=subprocess.DEVNULL,
        )


@pytest.fixture(scope="module")
def drill() -> Iterator[Drill]:
    missing = [n for n in ("prometheus", "prometheus-alertmanager") if not shutil.which(n)]
    if missing:
        pytest.fail(f"{' and '.join(missing)} not installed: scripts/install-system-deps.sh")
    with short_temp_dir() as temp_dir:
        state = temp_dir / "state"
        state.mkdir(mode=0o700)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS", "FREIGHT_RUNBOOK_BASE_URL")
        }
        env.update(FREIGHT_TEMP_DIR=str(temp_dir), NO_COLOR="1")
        d = Drill(temp_dir, env)
        try:
            head = d.cli(
                "start", "--head", "--port", "0", "--num-cpus", "2", "--cluster-name", CLUSTER,
                "--storage", str(state / "control.db"),
            )  # fmt: skip
            assert head.returncode == 0, head.stderr
            address = re.search(r"address:\s+(\S+)", head.stdout)
            session = re.search(r"session dir:\s+(\S+)", head.stdout)
            assert address and session, head.stdout
            d.address, d.session_dir = address.group(1), Path(session.group(1))
            token = (d.session_dir / "token").read_text().strip()
            d.env["FREIGHT_TOKEN"] = token
            node = d.cli("start", "--address", d.address, "--num-cpus", "2")
            assert node.returncode == 0, node.stderr
            del d.env["FREIGHT_TOKEN"]
            up = d.cli(
                "monitoring", "up", "--address", d.address,
                "--prometheus-port", str(_free_port()), "--alertmanager-port", str(_free_port()),
                "--pager", "--pager-port", str(_free_port()),
                "--scrape-interval", "1s", "--time-scale", "60",
            )  # fmt: skip
            assert up.returncode == 0, up.stdout + up.stderr
            with patched_environ(
                FREIGHT_TEMP_DIR=str(temp_dir), FREIGHT_TOKEN=None, FREIGHT_ADDRESS=None
            ):
                config = {"freight_address": d.address}
                wait_for_condition(
                    lambda: (
                        oncall.promql(
                            'count(up{job=~"freight-head|freight-nodes"} == 1)', "", config
                        )
                        == 3
                    ),
                    60,
                    "Prometheus to scrape the head and both nodes",
                )
                freight.init(address=d.address)
                try:
                    yield d
                finally:
                    freight.shutdown()
        finally:
            d.cli("monitoring", "down", "--address", d.address)
            d.cli("stop")
            prefix = str(temp_dir) + os.sep
            for p in psutil.process_iter(["cmdline"]):
                if any(a.startswith(prefix) for a in p.info["cmdline"] or ()):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        p.kill()


@freight.remote(max_retries=3)
def square(x: int) -> int:
    time.sleep(0.05)  # a task that takes a while, as real work does (and spares the machine)
    return x * x


@dataclass
class Workload:
    """Rounds of tasks submitted one after another from a thread of this driver, until told to
    stop: each round's results, when it got them, and the first error if any."""

    results: dict[int, int] = field(default_factory=dict)
    rounds: list[tuple[float, float]] = field(default_factory=list)  # (submitted, got), unix
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            xs = list(range(n, n + BATCH))
            submitted = time.time()
            try:
                got = freight.get([square.remote(x) for x in xs], timeout=120)
            except Exception as e:
                self.errors.append(f"round from {n}: {type(e).__name__}: {e}")
                return
            self.results.update(zip(xs, got, strict=True))
            self.rounds.append((submitted, time.time()))
            n += BATCH


@pytest.mark.parametrize("runner", ["freight", "stock"])
def test_head_kill_pages_with_its_runbook_within_60s_and_nothing_is_lost(
    drill: Drill, tmp_path: Path, runner: str
) -> None:
    """Through `freight chaos run`, then the stock `chaos run`: the same file, the same loop
    (the second kills the head the first started again)."""
    work = Workload()
    worker = threading.Thread(target=work.run, daemon=True)
    worker.start()
    wait_for_condition(lambda: len(work.rounds) >= 3 or work.errors, 60, "the workload running")
    report = tmp_path / "journal.json"
    faults = drill.temp_dir / "chaos" / "faults.jsonl"  # the default fault journal
    env = dict(drill.env, FREIGHT_ADDRESS=drill.address)
    run = ["run", str(EXPERIMENT), "--journal-path", str(report)]
    if runner == "freight":
        argv = [FREIGHT, "chaos", *run]
    else:
        argv = [str(Path(FREIGHT).with_name("chaos")), "--no-version-check", "--no-log-file", *run]
    try:
        ran = subprocess.run(
            argv, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        done = len(work.rounds)
        wait_for_condition(
            lambda: len(work.rounds) >= done + 3 or work.errors, 120, "the workload after the run"
        )
    finally:
        work.stop.set()
        worker.join(180)
    journal = json.loads(report.read_text())
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert (journal["status"], journal["deviated"]) == ("completed", False)
    runs = {r["activity"]["name"]: r for r in journal["run"]}
    assert all(r["status"] == "succeeded" for r in runs.values()), runs
    kill = runs["kill-the-head"]["output"]
    restart = runs["restart-the-head-as-the-runbook-says"]["output"]
    assert kill["result"] == "killed" and kill["target_kind"] == "head"
    assert restart["result"] == "started" and restart["nodes_alive"] == 2
    assert runs["head-down-alert-firing"]["output"] == 1
    after = {p["activity"]["name"]: p for p in journal["steady_states"]["after"]["probes"]}
    assert all(p["tolerance_met"] for p in after.values()), after
    paged = after["head-kill-paged-with-runbook-within-60s"]["output"]
    assert 0 < paged <= 60
    assert journal["rollbacks"][0]["output"]["result"] == "running"  # nothing left to undo

    # This run's kill and restart, as the fault journal has them (the newest of each).
    injected = {
        r["fault"]: r["time"]
        for r in map(json.loads, faults.read_text().splitlines())
        if r["op"] == "inject"
    }
    killed_at, restarted_at = injected["kill_head"], injected["restart_head"]

    # The page itself, as the pager sink logged it: the shipped PagerDuty receiver's event.
    log = drill.session_dir / "monitoring" / "pages.jsonl"
    events = [json.loads(line) for line in log.read_text().splitlines()]
    (page, *_) = [
        e
        for e in events
        if e["path"] == "/page"
        and e["time"] >= killed_at
        and e["body"]["event_action"] == "trigger"
        and "alertname = FreightHeadDown" in e["body"]["payload"]["custom_details"]["firing"]
    ]
    details = page["body"]["payload"]["custom_details"]
    assert details["runbook_url"] == f"{BASE}/FreightHeadDown.md"
    assert details["cluster"] == CLUSTER
    assert "drill = time-scale 60" in details["firing"]  # the drill says it is one
    assert page["time"] - killed_at == pytest.approx(paged, abs=0.01)

    # The head back, the page resolves. (Also what lets a next run page afresh: an alert that
    # fires again before its resolve went out is the same open incident to Alertmanager, which
    # tells the pager again only after repeat_interval.)
    def resolve() -> list[dict[str, Any]]:
        return [
            e
            for e in map(json.loads, log.read_text().splitlines())
            if e["path"] == "/page"
            and e["time"] >= restarted_at
            and e["body"].get("event_action") == "resolve"
            and e["body"].get("dedup_key") == page["body"]["dedup_key"]
        ]

    (resolved, *_) = wait_for_condition(resolve, 60, "the head-down page resolved at the pager")

    # Every task submitted came back with its result, also those submitted while the head was
    # down.
    assert not work.errors, work.errors
    assert work.results == {x: x * x for x in work.results}
    assert len(work.results) == BATCH * len(work.rounds)
    during = [r for r in work.rounds if killed_at <= r[0] < restarted_at]
    assert during, "no round of tasks was submitted while the head was down"
    print(
        f"\n{runner} runner: head SIGKILL -> FreightHeadDown page at the pager: {paged:.1f} s; "
        f"head restart -> every node ALIVE: {restart['seconds']:.1f} s, the page resolved: "
        f"{resolved['time'] - restarted_at:.1f} s; workload: {len(work.results)} tasks in "
        f"{len(work.rounds)} rounds, {len(during)} rounds submitted while the head was down, "
        "none lost (durations / 60; scrape and evaluation every 1 s)"
    )
