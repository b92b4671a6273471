"""The `freight` command line against a cluster it starts: start, status, memory, stop, demo."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from freight.testing import short_temp_dir
from freight.testing import wait_for_condition as wait_until

FREIGHT = str(Path(sys.executable).with_name("freight"))
ROLES = ("freight.head", "freight.node", "freight.worker")


def cli_env(temp_dir: Path) -> dict[str, str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), COLUMNS="250", NO_COLOR="1")
    env.pop("FREIGHT_TOKEN", None)
    env.pop("FREIGHT_ADDRESS", None)
    return env


def freight_cli(
    temp_dir: Path, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FREIGHT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(temp_dir),
        stdin=subprocess.DEVNULL,
    )


def processes_under(temp_dir: Path) -> list[psutil.Process]:
    """Live head, node agent and worker processes whose command line points into ``temp_dir``."""
    prefix = str(temp_dir).rstrip(os.sep) + os.sep
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if any(a in ROLES for a in cmd) and any(a.startswith(prefix) for a in cmd):
            found.append(proc)
    return found


class Driver:
    """A driver program running in the background; its output goes to files the test polls."""

    def __init__(self, temp_dir: Path, work: Path, script: str) -> None:
        self.out = work / "stdout"
        self.err = work / "stderr"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", textwrap.dedent(script)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                env=dict(cli_env(temp_dir), PYTHONUNBUFFERED="1"),
            )

    def stdout(self) -> str:
        return self.out.read_text()

    def stderr(self) -> str:
        return self.err.read_text()

    def wait_for(self, stream: Callable[[], str], text: str, timeout: float = 60.0) -> str:
        def seen() -> bool:
            if self.proc.poll() is not None and text not in stream():
                pytest.fail(f"the driver exited ({self.proc.returncode}):\n{self.stderr()[-4000:]}")
            return text in stream()

        wait_until(seen, timeout, f"{text!r} from the driver")
        return stream()

    def finish(self) -> int:
        """Let the driver exit (it waits for its stdin to close) and return its exit code."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


def status_json(temp_dir: Path) -> dict[str, Any]:
    proc = freight_cli(temp_dir, "status", "-o", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


# -- one cluster for the module, started and stopped by the CLI ---------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    with short_temp_dir() as temp_dir:
        proc = freight_cli(temp_dir, "start", "--head", "--port", "0", "--num-cpus", "2")
        try:
            assert proc.returncode == 0, proc.stderr
            address = re.search(r"address:\s+(\d+\.\d+\.\d+\.\d+:\d+)", proc.stdout)
            session = re.search(r"session dir:\s+(\S+)", proc.stdout)
            assert address and session, proc.stdout
            yield {
                "temp_dir": temp_dir,
                "address": address.group(1),
                "session_dir": session.group(1),
                "start_stdout": proc.stdout,
            }
        finally:
            freight_cli(temp_dir, "stop")
            for leftover in processes_under(temp_dir):
                with contextlib.suppress(psutil.NoSuchProcess):
                    leftover.kill()


def test_start_prints_the_address(cluster: dict[str, Any]) -> None:
    host, port = cluster["address"].rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) > 0
    assert cluster["session_dir"].startswith(str(cluster["temp_dir"]))
    head = json.loads((Path(cluster["session_dir"]) / "head.json").read_text())
    assert head["address"] == cluster["address"]
    roles = {r for p in processes_under(cluster["temp_dir"]) for r in p.cmdline() if r in ROLES}
    assert {"freight.head", "freight.node"} <= roles


def test_status_mentions_node_cpu_and_object_store(cluster: dict[str, Any]) -> None:
    proc = freight_cli(cluster["temp_dir"], "status")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "1 node(s)" in out, out
    assert "CPU" in out, out
    assert "object_store_memory" in out, out
    assert "object store" in out, out
    assert "ALIVE" in out, out
    node_id = re.search(r"node:\s+([0-9a-f]+)", cluster["start_stdout"])
    assert node_id, cluster["start_stdout"]
    assert node_id.group(1)[:9] in out, out


def test_status_json_parses(cluster: dict[str, Any]) -> None:
    data = status_json(cluster["temp_dir"])
    assert len(data["nodes"]) == 1
    node = data["nodes"][0]
    assert node["state"] == "ALIVE"
    assert node["is_head_node"] is True
    assert data["total"]["amounts"]["CPU"] == 2.0
    assert node["stats"]["object_store_capacity"] > 0  # snake_case, and a number


def test_driver_joins_with_address_auto(cluster: dict[str, Any], tmp_path: Path) -> None:
    driver = Driver(
        cluster["temp_dir"],
        tmp_path,
        """
        import freight

        info = freight.init(address="auto")

        @freight.remote
        def add(a, b):
            return a + b

        print("session", info["session_dir"])
        print("result", freight.get(add.remote(20, 22)))
        """,
    )
    assert driver.finish() == 0, driver.stderr()[-4000:]
    out = driver.stdout()
    assert "result 42" in out, out
    assert f"session {cluster['session_dir']}" in out, out


def test_infeasible_task_warns_and_shows_in_status(cluster: dict[str, Any], tmp_path: Path) -> None:
    driver = Driver(
        cluster["temp_dir"],
        tmp_path,
        """
        import sys
        import freight

        freight.init(address="auto")

        @freight.remote(num_cpus=64)
        def huge():
            return 1

        @freight.remote
        def small():
            return 2

        ref = huge.remote()
        print("small", freight.get(small.remote()))
        sys.stdin.read()
        """,
    )
    try:
        err = driver.wait_for(driver.stderr, "infeasible")
        assert "huge" in err, err
        assert "warning" in err.lower(), err
        driver.wait_for(driver.stdout, "small 2")

        def status_lists_it() -> str | None:
            proc = freight_cli(cluster["temp_dir"], "status")
            assert proc.returncode == 0, proc.stderr
            return proc.stdout if "Infeasible demand" in proc.stdout else None

        out = wait_until(status_lists_it, 30, "`freight status` to list the infeasible task")
        demand = out.split("Infeasible demand", 1)[1]
        assert re.search(r'"CPU":\s*64', demand), out
    finally:
        assert driver.finish() == 0, driver.stderr()[-4000:]


def test_memory_lists_what_a_driver_holds(cluster: dict[str, Any], tmp_path: Path) -> None:
    driver = Driver(
        cluster["temp_dir"],
        tmp_path,
        """
        import sys
        import numpy as np
        import freight

        freight.init(address="auto")
        big = freight.put(np.zeros(1024 * 1024, dtype=np.uint8))
        small = freight.put("a small object")
        print("big", big.hex())
        print("small", small.hex())
        print("ready")
        sys.stdin.read()
        """,
    )
    try:
        out = driver.wait_for(driver.stdout, "ready")
        ids = dict(line.split() for line in out.splitlines() if line.startswith(("big", "small")))

        proc = freight_cli(cluster["temp_dir"], "memory", "--group-by", "none", "-o", "json")
        assert proc.returncode == 0, proc.stderr
        rows = {r["object_id"]: r for r in json.loads(proc.stdout)["items"]}
        big, small = rows[ids["big"]], rows[ids["small"]]
        assert 1024 * 1024 <= big["size"] < 1024 * 1024 + 4096, big
        assert big["where"] == "shared memory", big
        assert 0 < small["size"] < 1024, small
        assert small["where"] == "inline", small
        for row in (big, small):
            assert row["owner"] is True, row
            assert row["process"] == f"driver pid={driver.proc.pid}", row
            assert any(h.startswith("local reference") for h in row["held_by"]), row
            assert row["reference_types"] == ["LOCAL_REFERENCE"], row

        proc = freight_cli(cluster["temp_dir"], "memory")
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.splitlines()
        big_line = next(line for line in lines if ids["big"][:20] in line)
        small_line = next(line for line in lines if ids["small"][:20] in line)
        assert "1.00 MiB" in big_line and "shared memory" in big_line, proc.stdout
        assert "LOCAL_REFERENCE" in big_line, proc.stdout
        assert f"{small['size']} B" in small_line and "inline" in small_line, proc.stdout
        assert "LOCAL_REFERENCE" in small_line, proc.stdout
    finally:
        assert driver.finish() == 0, driver.stderr()[-4000:]


def test_memory_groups_by_call_site(
    cluster: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FREIGHT_RECORD_CALL_SITES", "1")
    driver = Driver(
        cluster["temp_dir"],
        tmp_path,
        """
        import sys
        import freight

        @freight.remote
        def make(n):
            return "x" * n

        freight.init(address="auto")
        many = [freight.put(i) for i in range(3)]
        one = freight.put(b"y" * 200_000)
        made = make.remote(10)
        freight.get(made)
        print("ready")
        sys.stdin.read()
        """,
    )
    try:
        driver.wait_for(driver.stdout, "ready")
        proc = freight_cli(
            cluster["temp_dir"],
            "memory",
            "--group-by",
            "callsite",
            "--sort-by",
            "count",
            "-o",
            "json",
        )
        assert proc.returncode == 0, proc.stderr
        groups = {
            g["group"]: g
            for g in json.loads(proc.stdout)["items"]
            if any(o["process"] == f"driver pid={driver.proc.pid}" for o in g["objects"])
        }
        sites = sorted(groups)
        assert len(sites) == 3, sites
        assert [len(groups[s]["objects"]) for s in sites if s.startswith("put")] in ([3, 1], [1, 3])
        assert any(s.startswith("make() at <string>:") for s in sites), sites
        big = next(s for s in sites if len(groups[s]["objects"]) == 1 and s.startswith("put"))
        assert groups[big]["owned_bytes"] >= 200_000
        # count sort: the group with three objects comes first
        assert len(json.loads(proc.stdout)["items"][0]["objects"]) >= 3
    finally:
        assert driver.finish() == 0, driver.stderr()[-4000:]


def test_objects_of_a_driver_that_exited_are_freed(cluster: dict[str, Any], tmp_path: Path) -> None:
    """A driver's shared-memory objects do not outlive it on a long-running cluster."""

    def store(data: dict[str, Any]) -> tuple[int, int]:
        stats = [n["stats"] for n in data["nodes"]]
        return (
            sum(s["num_objects"] for s in stats),
            sum(s["object_store_used"] for s in stats),
        )

    # Earlier tests' drivers have exited: their objects are freed first (figures lag by a
    # heartbeat), so start from an empty store.
    wait_until(
        lambda: store(status_json(cluster["temp_dir"])) == (0, 0), 30, "an empty object store"
    )
    before = (0, 0)
    driver = Driver(
        cluster["temp_dir"],
        tmp_path,
        """
        import sys
        import freight

        freight.init(address="auto")

        @freight.remote
        def make():
            return bytes(2 * 1024 * 1024)

        kept = [freight.put(bytes(1024 * 1024)), make.remote()]
        assert len(freight.get(kept[1])) == 2 * 1024 * 1024
        print("holding")
        sys.stdin.read()
        """,
    )
    try:
        driver.wait_for(driver.stdout, "holding")
        # The node reports them (its statistics arrive with its heartbeat).
        wait_until(
            lambda: store(status_json(cluster["temp_dir"]))[0] >= before[0] + 2,
            30,
            "the driver's objects in `freight status --json`",
        )
    finally:
        assert driver.finish() == 0, driver.stderr()[-4000:]
    seen: list[tuple[int, int]] = []

    def back_to_before() -> bool:
        seen.append(store(status_json(cluster["temp_dir"])))
        return seen[-1][0] <= before[0] and seen[-1][1] <= before[1]

    deadline = time.monotonic() + 15
    while not back_to_before():
        assert time.monotonic() < deadline, (
            f"the exited driver's objects stay in the object store: (objects, bytes) were "
            f"{before} before it ran and are {seen[-1]} after it exited"
        )
        time.sleep(0.1)


def test_second_node_joins(cluster: dict[str, Any]) -> None:
    proc = freight_cli(
        cluster["temp_dir"], "start", "--address", cluster["address"], "--num-cpus", "1"
    )
    assert proc.returncode == 0, proc.stderr
    assert "node started" in proc.stdout, proc.stdout
    data = wait_until(
        lambda: (lambda d: d if len(d["nodes"]) == 2 else None)(status_json(cluster["temp_dir"])),
        30,
        "two nodes in `freight status --json`",
    )
    assert all(n["state"] == "ALIVE" for n in data["nodes"])
    assert sorted(n["is_head_node"] for n in data["nodes"]) == [False, True]
    assert data["total"]["amounts"]["CPU"] == 3.0
    agents = [p for p in processes_under(cluster["temp_dir"]) if "freight.node" in p.cmdline()]
    assert len(agents) == 2


def test_stop_stops_everything(cluster: dict[str, Any]) -> None:
    assert processes_under(cluster["temp_dir"])
    proc = freight_cli(cluster["temp_dir"], "stop")
    assert proc.returncode == 0, proc.stderr
    assert "stopped" in proc.stdout, proc.stdout
    left = processes_under(cluster["temp_dir"])
    assert not left, [(p.pid, p.cmdline()) for p in left]
    proc = freight_cli(cluster["temp_dir"], "status")
    assert proc.returncode != 0
    assert "no running freight cluster found" in proc.stderr, proc.stderr


# -- bad input and the demo ---------------------------------------------------------------------


@pytest.fixture
def empty_temp_dir() -> Iterator[Path]:
    with short_temp_dir() as path:
        yield path


def test_start_rejects_resources_that_are_not_json(empty_temp_dir: Path) -> None:
    proc = freight_cli(empty_temp_dir, "start", "--head", "--port", "0", "--resources", "notjson")
    assert proc.returncode != 0
    assert "--resources must be JSON" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not processes_under(empty_temp_dir)


def test_start_needs_head_or_address(empty_temp_dir: Path) -> None:
    proc = freight_cli(empty_temp_dir, "start")
    assert proc.returncode != 0
    assert "--head" in proc.stderr and "--address" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert not processes_under(empty_temp_dir)


def test_status_without_a_cluster_says_so(empty_temp_dir: Path) -> None:
    proc = freight_cli(empty_temp_dir, "status")
    assert proc.returncode != 0
    assert "no running freight cluster found" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr


def test_demo_runs_to_completion(empty_temp_dir: Path) -> None:
    proc = freight_cli(empty_temp_dir, "demo", "--num-cpus", "2", timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "cluster stopped" in proc.stdout, proc.stdout
    assert "1,000 tasks" in proc.stdout, proc.stdout
    # the summary comes once the workload is over: no CPU held by a lease nothing uses
    assert re.search(r"│ CPU\s+│\s+0 │\s+2 │", proc.stdout), proc.stdout
    assert not processes_under(empty_temp_dir)
