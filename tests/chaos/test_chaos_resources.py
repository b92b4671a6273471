"""The resource faults of freight.chaos.actions against a real two-node cluster with small
object stores: each took effect on the node the state API named (store usage at the level,
objects spilled and surviving, hogs burning CPU and holding memory, a filler taking the spill
disk) and was reverted (objects freed, processes gone, the file removed), at expiry, when its
process is stopped, by `freight chaos recover` for a harness that hangs, and with a harness that
is killed. Bad arguments and dry runs do nothing. The scheduling-latency probe matches the task
records."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

import freight
from freight import state
from freight.chaos import actions, faults, journal, probes, resources
from freight.chaos.resources import spill_folder
from freight.chaos.targets import FaultRefused, node_agent
from freight.client import access
from freight.testing import Cluster, connected_cluster, patched_environ, wait_for_condition
from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy

cloudpickle.register_pickle_by_value(sys.modules[__name__])

MiB = 1 << 20
STORE = 64 * MiB  # each node's object store: small, so filling it is cheap


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with connected_cluster(
        {"num_cpus": 1, "object_store_memory": STORE}, {"num_cpus": 1, "object_store_memory": STORE}
    ) as c:
        yield c


@pytest.fixture
def config(cluster: Cluster, tmp_path: Path) -> dict[str, Any]:
    folder = tmp_path / "chaos"
    folder.mkdir(mode=0o700)
    return {"freight_address": cluster.address, "freight_fault_journal": str(folder / "f.jsonl")}


def records(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(journal.read(config["freight_fault_journal"]))


def injected(config: dict[str, Any], n: int = 1) -> list[dict[str, Any]]:
    """The first ``n`` injections of the journal, once they are there."""
    wait_for_condition(
        lambda: len([r for r in records(config) if r["op"] == "inject"]) >= n,
        60,
        f"{n} injection(s) in the journal",
    )
    return [r for r in records(config) if r["op"] == "inject"][:n]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def store_used(node_id: str) -> int:
    row = state.get_state("nodes", node_id)
    assert row is not None
    return int(row["object_store_used"])


def empty_store(node_id: str) -> int:
    """Wait until the node's store holds nothing (what earlier tests freed is gone, and the
    heartbeat says so): a baseline of 0."""
    wait_for_condition(
        lambda: store_used(node_id) == 0 and not state.list_objects([("node_id", "=", node_id)]),
        60,
        f"node {node_id}'s object store to be empty",
    )
    return 0


class Running:
    """An action running in a thread (it holds its fault until it returns)."""

    def __init__(self, action: Callable[..., dict[str, Any]], **kwargs: Any) -> None:
        self.result: dict[str, Any] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(action, kwargs))
        self.thread.start()

    def _run(self, action: Callable[..., dict[str, Any]], kwargs: dict[str, Any]) -> None:
        try:
            self.result = action(**kwargs)
        except BaseException as e:
            self.error = e

    def join(self) -> dict[str, Any]:
        self.thread.join(120)
        assert not self.thread.is_alive(), "the action did not return"
        if self.error is not None:
            raise self.error
        return self.result


def stop_child(config: dict[str, Any]) -> None:
    """SIGTERM the fault's processes (as `kill PID` would): they let go as at expiry."""
    for record in injected(config):
        os.kill(record["process"]["pid"], signal.SIGTERM)


def test_fill_object_store_brings_the_store_to_the_level_and_frees_it(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1].node_id
    before = empty_store(node)
    run = Running(
        actions.fill_object_store, level=0.5, duration=300, node_id=node, configuration=config
    )
    (inject,) = injected(config)
    assert (inject["fault"], inject["signal"], inject["undo"]) == (
        "fill_object_store",
        "spawn",
        {"kind": "signal", "signal": "SIGKILL"},
    )
    assert inject["target"] == {"kind": "object_store", "id": node, "node_id": node}
    # At the level: half the capacity, give or take the objects' headers.
    wait_for_condition(
        lambda: abs(store_used(node) - STORE / 2) < STORE / 100, 60, "the store to be half full"
    )
    objects = state.list_objects([("node_id", "=", node)])
    assert len(objects) == 2 and not any(o["spilled"] for o in objects)
    stop_child(config)
    result = run.join()
    assert (result["objects"], result["used_before"]) == (2, before)
    assert STORE // 2 - 2 <= result["bytes"] + before <= STORE // 2
    assert result["result"] == "ended by itself (exit code 0)"
    wait_for_condition(lambda: store_used(node) == before, 60, "the objects to be freed")
    assert state.list_objects([("node_id", "=", node)]) == []
    assert gone(inject["process"]["pid"])
    assert journal.open_injections(config["freight_fault_journal"]) == []


@freight.remote(num_cpus=0)
def block(size: int, fill: int) -> bytes:
    return bytes([fill]) * size


def test_an_over_full_store_spills_and_the_objects_survive(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1].node_id
    here = NodeAffinitySchedulingStrategy(node, soft=False)
    ours = block.options(scheduling_strategy=here).remote(8 * MiB, 7)
    freight.wait([ours], fetch_local=False)
    run = Running(
        actions.fill_object_store, level=0.95, duration=300, node_id=node, configuration=config
    )
    injected(config)
    # Past the spilling threshold (0.8): the node spills the least recently used to disk.
    wait_for_condition(
        lambda: any(o["spilled"] for o in state.list_objects([("node_id", "=", node)])),
        60,
        "the node to spill objects",
    )
    assert freight.get(ours, timeout=60) == bytes([7]) * (8 * MiB)  # read back whole
    stop_child(config)
    result = run.join()
    assert result["bytes"] >= int(0.95 * STORE) - 8 * MiB - MiB
    wait_for_condition(
        lambda: len(state.list_objects([("node_id", "=", node)])) == 1,
        60,
        "the filler's objects to be freed",
    )
    assert freight.get(ours, timeout=60) == bytes([7]) * (8 * MiB)
    del ours


def test_pin_objects_holds_them_and_frees_them_at_expiry(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[0].node_id
    result = actions.pin_objects(
        count=3, size=2 * MiB, duration=0.5, node_id=node, configuration=config
    )
    assert (result["objects"], result["bytes"], result["result"]) == (3, 6 * MiB, "reverted")
    assert len(result["object_ids"]) == 3
    ends = [r["result"] for r in records(config) if r["op"] == "end"]
    assert ends == ["reverted"]
    wait_for_condition(
        lambda: (
            not {o["object_id"] for o in state.list_objects([("node_id", "=", node)])}
            & set(result["object_ids"])
        ),
        60,
        "the pinned objects to be freed",
    )
    assert all(gone(pid) for pid in result["pids"])


def test_pinned_objects_are_in_the_store_while_held(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[0].node_id
    run = Running(
        actions.pin_objects, count=2, size=3 * MiB, duration=300, node_id=node, configuration=config
    )
    injected(config)
    wait_for_condition(
        lambda: (
            len([o for o in state.list_objects([("node_id", "=", node)]) if o["size"] >= 3 * MiB])
            == 2
        ),
        60,
        "the two pinned objects in the store",
    )
    stop_child(config)
    run.join()


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system)


def test_hog_cpu_burns_a_core_until_stopped(cluster: Cluster, config: dict[str, Any]) -> None:
    node = cluster.nodes[1].node_id
    run = Running(actions.hog_cpu, cores=1, duration=300, node_id=node, configuration=config)
    (inject,) = injected(config)
    pid = inject["process"]["pid"]
    assert inject["target"] == {"kind": "host", "id": node, "node_id": node}
    wait_for_condition(lambda: cpu_seconds(pid) > 0.5, 60, "the hog to burn half a CPU second")
    stop_child(config)
    assert run.join()["result"] == "ended by itself (exit code 0)"
    assert gone(pid)


def test_hog_cpu_ends_at_expiry(cluster: Cluster, config: dict[str, Any]) -> None:
    result = actions.hog_cpu(
        cores=2, duration=0.5, node_id=cluster.nodes[1].node_id, configuration=config
    )
    assert result["result"] == "reverted" and len(result["pids"]) == 2
    assert all(gone(pid) for pid in result["pids"])
    assert [r["result"] for r in records(config) if r["op"] == "end"] == ["reverted", "reverted"]


def test_hog_memory_holds_the_bytes_resident(cluster: Cluster, config: dict[str, Any]) -> None:
    node = cluster.nodes[1].node_id
    run = Running(
        actions.hog_memory, bytes=256 * MiB, duration=300, node_id=node, configuration=config
    )
    (inject,) = injected(config)
    pid = inject["process"]["pid"]
    wait_for_condition(
        lambda: psutil.Process(pid).memory_info().rss >= 256 * MiB, 60, "256 MiB resident"
    )
    stop_child(config)
    result = run.join()
    assert result["bytes"] == 256 * MiB and result["rss"] >= 256 * MiB
    assert gone(pid)


def test_fill_spill_disk_takes_the_space_and_removes_its_file(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1]
    folder = spill_folder(node_agent(access.resolve(cluster.address), node.node_id))
    assert folder.startswith(node.session_dir)  # <session>/spill, FREIGHT_OBJECT_SPILLING_DIR unset
    before = os.statvfs(os.path.dirname(folder))
    run = Running(
        actions.fill_spill_disk,
        bytes=64 * MiB,
        duration=300,
        node_id=node.node_id,
        configuration=config,
    )
    (inject,) = injected(config)
    filler = inject["undo"]["path"]
    assert inject["undo"]["kind"] == "file" and os.path.dirname(filler) == folder
    wait_for_condition(
        lambda: os.stat(filler).st_blocks * 512 >= 64 * MiB, 60, "64 MiB allocated to the filler"
    )
    during = os.statvfs(folder)
    print(
        f"free before {before.f_bavail * before.f_frsize / MiB:.0f} MiB, "
        f"during {during.f_bavail * during.f_frsize / MiB:.0f} MiB"
    )
    # `freight chaos recover` (as halt does) removes it; the harness sees its fault is over.
    (recovered,) = faults.recover(config["freight_fault_journal"])
    assert recovered.result == f"removed {filler} (64.0 MiB)"
    result = run.join()
    assert result["bytes"] == 64 * MiB and result["result"] == f"{filler} was already gone"
    assert not os.path.exists(filler)


def test_fill_spill_disk_reverts_at_expiry_and_leaves_any_other_file_alone(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1].node_id
    result = actions.fill_spill_disk(bytes=MiB, duration=0.2, node_id=node, configuration=config)
    assert result["result"] == f"removed {result['file']} (1.0 MiB)"
    assert not os.path.exists(result["file"])

    run = Running(
        actions.fill_spill_disk, bytes=MiB, duration=300, node_id=node, configuration=config
    )
    (inject,) = injected(config, 2)[1:]
    filler = inject["undo"]["path"]
    wait_for_condition(lambda: os.path.exists(filler), 60, "the filler")
    os.unlink(filler)
    Path(filler).write_bytes(b"someone else's")  # another file under its name
    # The harness sees its file is gone and ends; its revert leaves the other file alone.
    assert run.join()["result"] == f"left {filler} alone: it is not the file the fault made"
    assert Path(filler).read_bytes() == b"someone else's"
    assert journal.open_injections(config["freight_fault_journal"]) == []
    os.unlink(filler)


HARNESS = """
import json, sys
from freight.chaos import actions
getattr(actions, sys.argv[1])(**json.loads(sys.argv[2]))
"""


@pytest.fixture
def harness(config: dict[str, Any]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start a harness process running one action; killed at the end whatever happened."""
    started: list[subprocess.Popen[bytes]] = []

    def start(action: str, **kwargs: Any) -> subprocess.Popen[bytes]:
        args = json.dumps({**kwargs, "configuration": config})
        proc = subprocess.Popen([sys.executable, "-c", HARNESS, action, args])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


FREIGHT = str(Path(sys.executable).with_name("freight"))


def recover(config: dict[str, Any]) -> str:
    out = subprocess.run(
        [FREIGHT, "chaos", "recover", config["freight_fault_journal"]],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_recover_kills_the_hogs_of_a_harness_that_hangs(
    cluster: Cluster, config: dict[str, Any], harness: Callable[..., subprocess.Popen[bytes]]
) -> None:
    node = cluster.nodes[1].node_id
    proc = harness("hog_cpu", cores=1, duration=300, node_id=node)
    (inject,) = injected(config)
    hog = inject["process"]["pid"]
    wait_for_condition(lambda: cpu_seconds(hog) > 0.2, 60, "the hog to burn")
    proc.send_signal(signal.SIGSTOP)  # the harness hangs: nothing of it will stop the hog
    out = recover(config)
    assert f"hog_cpu on host {node} (pid {hog}): sent SIGKILL" in out
    wait_for_condition(lambda: gone(hog), 30, "the hog to be killed")
    assert journal.open_injections(config["freight_fault_journal"]) == []


def test_recover_frees_the_objects_a_harness_that_hangs_holds(
    cluster: Cluster, config: dict[str, Any], harness: Callable[..., subprocess.Popen[bytes]]
) -> None:
    node = cluster.nodes[0].node_id
    before = empty_store(node)
    proc = harness("pin_objects", count=2, size=4 * MiB, duration=300, node_id=node)
    (inject,) = injected(config)
    holder = inject["process"]["pid"]
    wait_for_condition(
        lambda: store_used(node) >= before + 8 * MiB, 60, "the pinned objects in the store"
    )
    proc.send_signal(signal.SIGSTOP)
    assert f"pin_objects on object_store {node} (pid {holder}): sent SIGKILL" in recover(config)
    wait_for_condition(lambda: gone(holder), 30, "the holder to be killed")
    # Its node's agent frees what a driver that disappeared owned.
    wait_for_condition(lambda: store_used(node) == before, 60, "the objects to be freed")


def test_hogs_die_with_a_killed_harness(
    cluster: Cluster, config: dict[str, Any], harness: Callable[..., subprocess.Popen[bytes]]
) -> None:
    node = cluster.nodes[1].node_id
    proc = harness("hog_memory", bytes=16 * MiB, duration=300, node_id=node)
    (inject,) = injected(config)
    hog = inject["process"]["pid"]
    wait_for_condition(lambda: psutil.Process(hog).memory_info().rss >= 16 * MiB, 60, "16 MiB held")
    proc.kill()
    proc.wait()
    wait_for_condition(lambda: gone(hog), 30, "the hog to die with its harness")
    # The harness's watchdog closes the fault: it finds the hog gone, or sends the SIGKILL
    # that the hog's own death on its parent's was about to make moot.
    path = config["freight_fault_journal"]
    wait_for_condition(lambda: not journal.open_injections(path), 30, "the fault closed")
    (end,) = [r for r in journal.read(path) if r["op"] == "end"]
    assert end["result"].endswith(("its process had ended", "sent SIGKILL")), end


def test_hogs_end_by_themselves_at_expiry(cluster: Cluster, config: dict[str, Any]) -> None:
    """This test is the harness, one that never stops its hogs: they end by themselves."""
    target = {"kind": "host", "id": "n", "node_id": "n"}
    path = config["freight_fault_journal"]
    hogs = [
        resources._spawn("hog_cpu", target, "cpu", {"duration": 0.5}, path, time.time() + 60),
        resources._spawn(
            "hog_memory", target, "memory", {"duration": 0.5, "bytes": MiB}, path, time.time() + 60
        ),
    ]
    for hog in hogs:
        resources._await_ready(hog, time.monotonic() + 60)
    for hog in hogs:
        assert hog.proc.wait(60) == 0  # ended at expiry, nothing told it to
        assert resources._stop(hog) == "ended by itself (exit code 0)"
    assert "its process had ended" in recover(config)


def test_bad_arguments_are_refused_before_anything_happens(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    node = cluster.nodes[1].node_id
    cases: list[tuple[Callable[..., Any], dict[str, Any], str]] = [
        (actions.fill_object_store, {"level": 1.5}, "level must be a fraction of the object"),
        (actions.fill_object_store, {"level": 0.5, "duration": -1}, "duration must be more than 0"),
        (actions.fill_object_store, {"node_id": "nope"}, "no node matches node_id=nope"),
        (actions.pin_objects, {"size": 10}, "size must be more than FREIGHT_INLINE_MAX_BYTES"),
        (actions.pin_objects, {"count": 100, "size": MiB}, "more than node .* holds"),
        (actions.hog_cpu, {"cores": 0}, "cores must be a whole number from 1 to"),
        (actions.hog_cpu, {"cores": 1.5}, "cores must be a whole number"),
        (actions.hog_memory, {}, "either fraction .* or bytes, exactly one"),
        (actions.hog_memory, {"bytes": 1, "fraction": 0.1}, "exactly one"),
        (actions.hog_memory, {"bytes": 1 << 50}, "more than the .* available"),
        (actions.fill_spill_disk, {"level": 1.5}, "level must be a fraction of the spill"),
        (actions.fill_spill_disk, {"bytes": 1 << 60}, "more than the .* free"),
    ]
    for action, kwargs, message in cases:
        with pytest.raises((access.UsageError, FaultRefused), match=message):
            action(**{"node_id": node, **kwargs}, configuration=config)
    assert records(config) == []


def test_a_dry_run_plans_and_does_nothing(cluster: Cluster, config: dict[str, Any]) -> None:
    node = cluster.nodes[1].node_id
    dry = {**config, "freight_dry_run": True}
    before = psutil.Process().children(recursive=True)
    plans = [
        actions.fill_object_store(level=0.5, node_id=node, configuration=dry),
        actions.pin_objects(count=2, size=MiB, node_id=node, configuration=dry),
        actions.hog_cpu(cores=1, node_id=node, configuration=dry),
        actions.hog_memory(fraction=0.01, node_id=node, configuration=dry),
        actions.fill_spill_disk(level=0.999, node_id=node, configuration=dry),
    ]
    assert all(p["dry_run"] is True and p["target_node_id"] == node for p in plans)
    assert STORE // 2 - 2 <= plans[0]["bytes"] + plans[0]["used_before"] <= STORE // 2
    assert plans[1]["bytes"] == 2 * MiB
    assert plans[3]["bytes"] == int(0.01 * psutil.virtual_memory().total)
    assert plans[4]["folder"] == spill_folder(node_agent(access.resolve(cluster.address), node))
    assert records(config) == [] and psutil.Process().children(recursive=True) == before


@freight.remote(num_cpus=1)
def queued(i: int) -> int:
    time.sleep(0.05)  # keeps its CPU a moment, so later ones wait for it
    return i


def test_scheduling_latency_p95_matches_the_task_records(
    cluster: Cluster, config: dict[str, Any]
) -> None:
    since = str(time.time())
    assert freight.get([queued.remote(i) for i in range(20)], timeout=120) == list(range(20))
    wait_for_condition(
        lambda: len(state.list_tasks([("name", "=", "queued"), ("start_time", ">=", since)])) == 20,
        60,
        "the 20 task records at the head",
    )
    rows = state.list_tasks([("name", "=", "queued"), ("start_time", ">=", since)])
    waits = sorted(r["start_time"] - r["submit_time"] for r in rows)
    p95 = probes.scheduling_latency_p95(since=since, name="queued", configuration=config)
    assert p95 == waits[math.ceil(0.95 * 20) - 1]  # the 19th of 20
    assert p95 > waits[0]  # they queued behind each other: the waits differ
    print(f"p95 {p95:.3f} s, median {waits[9]:.3f} s")
    assert probes.scheduling_latency_p95(name="queued", configuration=config) == p95  # no since
    future = str(time.time() + 3600)
    assert probes.scheduling_latency_p95(since=future, configuration=config) == 0.0


CHAOS = str(Path(sys.executable).with_name("chaos"))


def test_every_resource_fault_runs_through_the_stock_chaos_run(
    cluster: Cluster, config: dict[str, Any], tmp_path: Path
) -> None:
    node = cluster.nodes[1].node_id

    def action(func: str, **arguments: Any) -> dict[str, Any]:
        provider = {"type": "python", "module": "freight.chaos.actions", "func": func}
        return {"type": "action", "name": func, "provider": {**provider, "arguments": arguments}}

    p95 = {"type": "python", "module": "freight.chaos.probes", "func": "scheduling_latency_p95"}
    experiment = {
        "title": "resource pressure",
        "description": "each resource fault in turn; tasks still get scheduled",
        "configuration": config,
        "steady-state-hypothesis": {
            "title": "tasks start",
            "probes": [
                {
                    "type": "probe",
                    "name": "scheduling-p95",
                    "tolerance": {"type": "range", "range": [0, 3600]},
                    "provider": {**p95, "arguments": {"since": "-1m"}},
                }
            ],
        },
        "method": [
            action("fill_object_store", level=0.9, duration=0.5, node_id=node),
            action("pin_objects", count=2, size=MiB, duration=0.5, node_id=node),
            action("hog_cpu", cores=1, duration=0.5, node_id=node),
            action("hog_memory", bytes=8 * MiB, duration=0.5, node_id=node),
            action("fill_spill_disk", bytes=MiB, duration=0.5, node_id=node),
        ],
    }
    path = tmp_path / "resources.json"
    path.write_text(json.dumps(experiment))
    out = subprocess.run(
        [CHAOS, "--no-version-check", "--no-log-file", "run", str(path),
         "--journal-path", str(tmp_path / "journal.json")],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    run = json.loads((tmp_path / "journal.json").read_text())["run"]
    names = ["fill_object_store", "pin_objects", "hog_cpu", "hog_memory", "fill_spill_disk"]
    assert [(r["activity"]["name"], r["status"]) for r in run] == [(n, "succeeded") for n in names]
    assert [r["output"]["result"] for r in run[:4]] == ["reverted"] * 4
    assert run[4]["output"]["result"].startswith("removed ")
    assert journal.open_injections(config["freight_fault_journal"]) == []


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs of its own, so that filling it to the brim harms nobody (needs root)."""
    folder = tmp_path / "disk"
    folder.mkdir(mode=0o700)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        why = f"mounting a tmpfs failed (needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_fill_spill_disk_to_a_level_fills_the_file_system_to_the_brim(
    cluster: Cluster, tmp_path: Path, small_disk: Path
) -> None:
    """A node spilling to a small file system of its own: level 1.0 leaves nothing free, and
    the revert gives it all back."""
    journal_dir = tmp_path / "chaos"
    journal_dir.mkdir(mode=0o700)
    with (
        patched_environ(FREIGHT_OBJECT_SPILLING_DIR=str(small_disk)),
        Cluster() as own,
    ):
        own.add_node(num_cpus=0, object_store_memory=16 * MiB)
        config = {
            "freight_address": own.address,
            "freight_fault_journal": str(journal_dir / "f.jsonl"),
        }
        node = own.nodes[0].node_id
        total = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        plan = actions.fill_spill_disk(
            level=1.0, node_id=node, configuration={**config, "freight_dry_run": True}
        )
        assert plan["folder"].startswith(f"{small_disk}/") and plan["bytes"] == total
        run = Running(
            actions.fill_spill_disk, level=1.0, duration=300, node_id=node, configuration=config
        )
        (inject,) = injected(config)
        filler = Path(inject["undo"]["path"])
        wait_for_condition(
            lambda: os.statvfs(small_disk).f_bavail == 0, 60, "the file system to be full"
        )
        with pytest.raises(FaultRefused, match=r"already 100\.0% full"):
            actions.fill_spill_disk(level=0.5, node_id=node, configuration=config)
        (recovered,) = faults.recover(config["freight_fault_journal"])
        assert recovered.result == f"removed {filler} (32.0 MiB)"
        assert run.join()["bytes"] == total
        free = os.statvfs(small_disk)
        assert free.f_bavail * free.f_frsize == total
