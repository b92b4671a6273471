"""The memory monitor without processes: its policy, its decision to act, the cgroup files it
reads (written to a temporary folder laid out as /sys/fs/cgroup is) and the report it writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from freight.node.memory_monitor import (
    Candidate,
    MemoryMonitor,
    MemoryUsage,
    ProcessMemory,
    WorkLedger,
    cgroup_memory,
    kill_report,
    memory_usage,
    node_memory,
    pick_victim,
)

GiB = 1 << 30


def task(wid: str, started: float, retriable: bool = True, rss: int = 0) -> Candidate:
    return Candidate(
        wid, hash(wid) % 30000 + 100, started, retriable, False, f"task {wid}", rss=rss
    )


def actor(wid: str, started: float, restartable: bool = False) -> Candidate:
    return Candidate(wid, hash(wid) % 30000 + 100, started, restartable, True, f"actor {wid}")


def idle(wid: str) -> Candidate:
    return Candidate(wid, hash(wid) % 30000 + 100, 0.0, False, False, "idle worker", rss=9 * GiB)


def victim_of(*workers: Candidate) -> str | None:
    chosen = pick_victim(workers)
    return None if chosen is None else chosen[0].worker_id


# -- the policy -------------------------------------------------------------------------------


def test_the_most_recently_started_retriable_task_is_chosen() -> None:
    assert victim_of(task("old", 1.0), task("new", 3.0), task("mid", 2.0)) == "new"


def test_a_retriable_task_is_chosen_over_a_newer_one_that_is_not() -> None:
    chosen = pick_victim([task("retriable", 1.0), task("final", 2.0, retriable=False)])
    assert chosen is not None
    assert chosen[0].worker_id == "retriable"
    assert chosen[1] == "the most recently started retriable task"


def test_without_retriable_tasks_the_most_recent_task_is_chosen() -> None:
    chosen = pick_victim([task("a", 1.0, retriable=False), task("b", 2.0, retriable=False)])
    assert chosen is not None
    assert chosen[0].worker_id == "b"
    assert "none running here is retriable" in chosen[1]


def test_idle_workers_are_never_chosen_however_large() -> None:
    assert victim_of(idle("fat"), idle("fatter")) is None
    assert victim_of(idle("fat"), task("small", 1.0, retriable=False)) == "small"


def test_actors_only_when_no_task_runs() -> None:
    assert victim_of(actor("newest-actor", 9.0, restartable=True), task("t", 1.0, False)) == "t"
    assert victim_of(actor("a1", 1.0), actor("a2", 2.0)) == "a2"


def test_a_restartable_actor_is_chosen_over_a_newer_one_that_is_not() -> None:
    assert victim_of(actor("restartable", 1.0, True), actor("final", 2.0)) == "restartable"


def test_a_tie_in_start_time_goes_to_the_larger_worker() -> None:
    assert victim_of(task("small", 5.0, rss=GiB), task("big", 5.0, rss=3 * GiB)) == "big"


def test_nothing_running_means_no_victim() -> None:
    assert pick_victim([]) is None


# -- when to act ------------------------------------------------------------------------------


def test_below_the_threshold_nothing_is_killed() -> None:
    monitor = MemoryMonitor(0.9)
    assert not monitor.should_kill(MemoryUsage(89, 100), 0.0, lambda pid: False)
    assert monitor.should_kill(MemoryUsage(90, 100), 0.0, lambda pid: False)


def test_no_second_kill_while_the_last_victim_lives() -> None:
    monitor = MemoryMonitor(0.5, kill_wait_s=10.0)
    high = MemoryUsage(80, 100)
    alive = {1234}
    monitor.killed(1234, now=100.0)
    assert not monitor.should_kill(high, 101.0, alive.__contains__)
    alive.clear()  # the victim exited: its memory is free, the next reading is the truth
    assert monitor.should_kill(high, 101.5, alive.__contains__)


def test_a_victim_that_does_not_go_holds_up_the_next_kill_only_for_a_while() -> None:
    monitor = MemoryMonitor(0.5, kill_wait_s=10.0)
    monitor.killed(1234, now=100.0)
    assert not monitor.should_kill(MemoryUsage(80, 100), 109.0, lambda pid: True)
    assert monitor.should_kill(MemoryUsage(80, 100), 110.5, lambda pid: True)


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.5, float("nan")])
def test_a_threshold_outside_0_to_1_is_refused_with_the_setting_named(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"FREIGHT_MEMORY_USAGE_THRESHOLD=.*in \(0, 1\]"):
        MemoryMonitor(threshold)


# -- reading memory ---------------------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> str:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


def test_cgroup_v2_limit_and_working_set(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "memory.max": f"{4 * GiB}\n",
            "memory.current": f"{3 * GiB}\n",
            "memory.stat": f"anon {2 * GiB}\nfile {GiB}\ninactive_file {GiB // 2}\n",
        },
    )
    assert cgroup_memory(root) == MemoryUsage(3 * GiB - GiB // 2, 4 * GiB, "cgroup")


def test_cgroup_v2_without_a_limit(tmp_path: Path) -> None:
    root = write(tmp_path, {"memory.max": "max\n", "memory.current": "12345\n"})
    assert cgroup_memory(root) is None


def test_cgroup_v1_limit_and_working_set(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": f"{8 * GiB}\n",
            "memory/memory.usage_in_bytes": f"{6 * GiB}\n",
            "memory/memory.stat": f"cache 10\ninactive_file 7\ntotal_inactive_file {GiB}\n",
        },
    )
    assert cgroup_memory(root) == MemoryUsage(5 * GiB, 8 * GiB, "cgroup")


def test_cgroup_v1_without_a_limit(tmp_path: Path) -> None:
    # How cgroup v1 says "no limit" (this machine's own value).
    root = write(
        tmp_path,
        {
            "memory/memory.limit_in_bytes": "9223372036854771712\n",
            "memory/memory.usage_in_bytes": "2403708928\n",
        },
    )
    assert cgroup_memory(root) is None


def test_no_cgroup_files_means_no_limit(tmp_path: Path) -> None:
    assert cgroup_memory(str(tmp_path)) is None


def test_the_fuller_of_node_and_cgroup_counts(tmp_path: Path) -> None:
    host = MemoryUsage(4 * GiB, 32 * GiB, "node")
    root = write(tmp_path, {"memory.max": f"{8 * GiB}", "memory.current": f"{6 * GiB}"})
    assert memory_usage(root, lambda: host) == MemoryUsage(6 * GiB, 8 * GiB, "cgroup")
    quiet = write(tmp_path / "quiet", {"memory.max": f"{8 * GiB}", "memory.current": "1"})
    assert memory_usage(quiet, lambda: host) == host
    # A cgroup limit above the node's memory limits nothing.
    loose = write(tmp_path / "loose", {"memory.max": f"{64 * GiB}", "memory.current": "1"})
    assert memory_usage(loose, lambda: MemoryUsage(31 * GiB, 32 * GiB)) == MemoryUsage(
        31 * GiB, 32 * GiB
    )


def test_node_memory_is_total_minus_available() -> None:
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total = int(meminfo["MemTotal"].split()[0]) * 1024
    usage = node_memory()
    assert usage.total == total
    assert 0 < usage.used < usage.total


# -- the report and the ledger ----------------------------------------------------------------


def test_the_report_names_the_victim_the_top_users_and_the_settings() -> None:
    victim = Candidate("w-hog", 4242, 2.0, True, False, "task hog")
    processes = [
        ProcessMemory(1, 10 * 1024 * 1024, "/sbin/init"),
        ProcessMemory(4242, 3 * GiB, "python -m freight.worker"),
        ProcessMemory(4343, GiB, "python -m freight.worker"),
        ProcessMemory(os.getpid(), 200 * 1024 * 1024, "python -m freight.node"),
    ]
    text = kill_report(
        "ab" * 16,
        MemoryUsage(15 * GiB, 16 * GiB),
        0.9,
        victim,
        "the most recently started retriable task",
        processes,
        {4242: "task hog, job 01", 4343: "task calm, job 01", os.getpid(): "freight node agent"},
        top=3,
    )
    lines = text.splitlines()
    assert "killed worker w-hog (pid 4242), which ran task hog: memory used in the node" in lines[0]
    assert "15.00 GiB of 16.00 GiB (0.938), above the threshold 0.900" in lines[0]
    assert "chosen as the most recently started retriable task" in lines[0]
    rows = [line.split(None, 3) for line in lines[3:6]]
    assert [(r[0], r[3]) for r in rows] == [
        ("4242", "task hog, job 01 (killed)"),
        ("4343", "task calm, job 01"),
        (str(os.getpid()), "freight node agent"),
    ]
    assert "/sbin/init" not in text  # beyond the top 3
    assert "FREIGHT_MEMORY_MONITOR_REFRESH_MS=0" in lines[-1]


def test_the_ledger_remembers_what_a_lease_was_asked_for() -> None:
    ledger = WorkLedger()
    ledger.requested(client=7, req_id=1, retriable=True)
    ledger.requested(client=7, req_id=2, retriable=False)
    ledger.granted("w1", 7, 1, "hog")
    ledger.granted("w2", 7, 2, "final")
    ledger.granted("w3", 8, 1, "unknown-request")  # not asked for here: not retriable
    ledger.actor("a1", "Counter", True)
    assert ledger.leases == {
        "w1": ("hog", True),
        "w2": ("final", False),
        "w3": ("unknown-request", False),
    }
    assert ledger.actors == {"a1": ("Counter", True)}


def test_the_ledger_forgets_the_oldest_entries_beyond_its_bound() -> None:
    ledger = WorkLedger()
    for i in range(WorkLedger.MAX_ENTRIES + 1):
        ledger.requested(1, i, True)
    ledger.granted("w-first", 1, 0, "f")  # the oldest request was forgotten
    ledger.granted("w-last", 1, WorkLedger.MAX_ENTRIES, "f")
    assert ledger.leases == {"w-first": ("f", False), "w-last": ("f", True)}
    for i in range(WorkLedger.MAX_ENTRIES - 2):
        ledger.granted(f"w{i}", 2, i, "g")
    assert len(ledger.leases) == WorkLedger.MAX_ENTRIES
    ledger.granted("w-first", 2, 0, "again")  # granted again: the newest, nothing dropped
    assert len(ledger.leases) == WorkLedger.MAX_ENTRIES
    ledger.granted("w-newer", 2, 1, "g")  # one more: the oldest, w-last, goes
    assert len(ledger.leases) == WorkLedger.MAX_ENTRIES
    assert "w-last" not in ledger.leases
    assert ledger.leases["w-first"] == ("again", False)
