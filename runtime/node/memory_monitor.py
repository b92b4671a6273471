"""The node agent's memory monitor: above a threshold of the node's memory, kill one worker.

Every ``FREIGHT_MEMORY_MONITOR_REFRESH_MS`` the agent reads the node's memory use (and its cgroup's,
when the cgroup has a lower limit); above ``FREIGHT_MEMORY_USAGE_THRESHOLD`` it kills the worker
of the most recently started retriable task, and that task's owner fails it with
``OutOfMemoryError`` (or retries it). Then it waits for the killed worker to be gone before it
kills another, so one spike costs one worker. See docs/decisions/0022-memory-monitor.md.

The parts: reading memory (:func:`memory_usage`, file parsing only), the policy
(:func:`pick_victim`, no I/O), the report in the error (:func:`kill_report`, no I/O), and
:class:`MemoryMonitor` with :func:`monitor_loop`, which the agent runs.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from loguru import logger

CGROUP_ROOT = "/sys/fs/cgroup"
# A killed worker that has not gone after this long (stuck in the kernel) no longer holds up
# the next kill.
KILL_WAIT_S = 10.0
TOP_USERS = 5  # processes the report lists
NO_VICTIM_LOG_S = 10.0  # "above the threshold, nothing to kill" is logged at most this often
# cgroup v1 reports "no limit" as a huge number (the largest page-aligned long).
_UNLIMITED = 1 << 60


# -- reading memory ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """Bytes in use out of a total, and which measure they come from (node or cgroup)."""

    used: int
    total: int
    source: str = "node"

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total > 0 else 0.0


def node_memory() -> MemoryUsage:
    """The node's memory in use: MemTotal - MemAvailable of /proc/meminfo (what psutil reads),
    so reclaimable page cache does not count."""
    import psutil

    vm = psutil.virtual_memory()
    return MemoryUsage(int(vm.total - vm.available), int(vm.total), "node")


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None  # cgroup v2 says "max" for no limit


def _stat_value(path: str, keys: tuple[str, ...]) -> int:
    """The first of ``keys`` found in a memory.stat file, else 0."""
    try:
        with open(path) as f:
            found = dict(line.split(None, 1) for line in f if " " in line)
    except OSError:
        return 0
    for key in keys:
        if key in found:
            try:
                return int(found[key])
            except ValueError:
                return 0
    return 0


def cgroup_memory(root: str = CGROUP_ROOT) -> MemoryUsage | None:
    """The cgroup's memory in use and its limit, or None when it has no limit.

    cgroup v2: ``memory.max`` and ``memory.current`` under ``root``; v1: ``memory.limit_in_bytes``
    and ``memory.usage_in_bytes`` under ``root/memory``. Inactive page cache (``inactive_file``
    of ``memory.stat``) is not counted as used: the kernel reclaims it before it kills anything
    (the working set, as kubelet computes it).
    """
    v2_limit = os.path.join(root, "memory.max")
    if os.path.exists(v2_limit):
        limit = _read_int(v2_limit)
        usage = _read_int(os.path.join(root, "memory.current"))
        stat = os.path.join(root, "memory.stat")
        inactive = _stat_value(stat, ("inactive_file",))
    else:
        v1 = os.path.join(root, "memory")
        limit = _read_int(os.path.join(v1, "memory.limit_in_bytes"))
        usage = _read_int(os.path.join(v1, "memory.usage_in_bytes"))
        stat = os.path.join(v1, "memory.stat")
        inactive = _stat_value(stat, ("total_inactive_file", "inactive_file"))
    if limit is None or usage is None or limit <= 0 or limit >= _UNLIMITED:
        return None
    return MemoryUsage(max(0, usage - inactive), limit, "cgroup")


def memory_usage(
    cgroup_root: str = CGROUP_ROOT, node: Callable[[], MemoryUsage] = node_memory
) -> MemoryUsage:
    """The fuller of the node's memory and its cgroup's (when the cgroup limit is lower)."""
    host = node()
    group = cgroup_memory(cgroup_root)
    if group is not None and group.total < host.total and group.fraction > host.fraction:
        return group
    return host


# -- the policy -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A worker of the node as the policy sees it."""

    worker_id: str
    pid: int
    started: float  # when its lease or actor began (time.time()); 0.0: idle
    retriable: bool  # its owner retries the task (max_retries != 0), or restarts the actor
    actor: bool
    what: str  # "task f" | "actor Counter(ab12...)" | "idle worker", for the report
    owner: str = ""  # the job or owner it works for, for the report
    rss: int = 0


def pick_victim(workers: Iterable[Candidate]) -> tuple[Candidate, str] | None:
    """The worker to kill, and why it was chosen; None when only idle workers run.

    The most recently started retriable task; else the most recently started task; actors only
    when no task runs (a restartable one first). A tie goes to the larger RSS.
    """
    busy = [w for w in workers if w.started > 0]
    tasks = [w for w in busy if not w.actor]
    actors = [w for w in busy if w.actor]
    for group, why in (
        ([w for w in tasks if w.retriable], "the most recently started retriable task"),
        (tasks, "the most recently started task (none running here is retriable)"),
        ([w for w in actors if w.retriable], "the most recently started restartable actor"),
        (actors, "the most recently started actor (no task and no restartable actor runs)"),
    ):
        if group:
            return max(group, key=lambda w: (w.started, w.rss)), why
    return None


class MemoryMonitor:
    """Decides when to kill: above the threshold, and not while the last victim is alive."""

    def __init__(self, threshold: float, kill_wait_s: float = KILL_WAIT_S) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(
                f"FREIGHT_MEMORY_USAGE_THRESHOLD={threshold!r} must be a fraction of the node's "
                "memory in (0, 1], e.g. 0.95; to turn the memory monitor off set "
                "FREIGHT_MEMORY_MONITOR_REFRESH_MS=0."
            )
        self.threshold = threshold
        self.kill_wait_s = kill_wait_s
        self.victim_pid = 0  # the last worker killed, until it is gone
        self.victim_since = 0.0
        self.quiet_until = 0.0  # "above the threshold, nothing to kill" is not logged again

    def should_kill(self, usage: MemoryUsage, now: float, alive: Callable[[int], bool]) -> bool:
        """True when memory is above the threshold and the last victim is gone (or stuck)."""
        if usage.fraction < self.threshold:
            return False
        if self.victim_pid:
            if alive(self.victim_pid) and now - self.victim_since < self.kill_wait_s:
                return False  # its memory is not free yet: one spike, one kill
            self.victim_pid = 0
        return True

    def killed(self, pid: int, now: float) -> None:
        self.victim_pid, self.victim_since = pid, now


# -- the report -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessMemory:
    pid: int
    rss: int
    command: str


def gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def kill_report(
    node_id: str,
    usage: MemoryUsage,
    threshold: float,
    victim: Candidate,
    why: str,
    processes: Sequence[ProcessMemory],
    labels: dict[int, str],
    top: int = TOP_USERS,
) -> str:
    """Why the worker was killed, the node's top memory users, and what to do about it."""
    where = "the node" if usage.source == "node" else "the node's cgroup (its limit)"
    lines = [
        f"The memory monitor of node {node_id[:12]} killed worker {victim.worker_id} "
        f"(pid {victim.pid}), which ran {victim.what}: memory used in {where} was "
        f"{gib(usage.used)} of {gib(usage.total)} ({usage.fraction:.3f}), above the threshold "
        f"{threshold:.3f} (FREIGHT_MEMORY_USAGE_THRESHOLD). It was chosen as {why}.",
        f"Top memory users of node {node_id[:12]} (RSS):",
        f"{'PID':>8}  {'RSS':>10}  WHAT",
    ]
    for p in sorted(processes, key=lambda p: p.rss, reverse=True)[:top]:
        what = labels.get(p.pid) or p.command or "?"
        if p.pid == victim.pid:
            what += " (killed)"
        lines.append(f"{p.pid:>8}  {gib(p.rss):>10}  {what}")
    lines.append(
        "To avoid this: use less memory per task, run fewer tasks at once (ask for more "
        "num_cpus or memory per task), or give the node more memory; max_retries lets a task "
        "run again after such a kill. FREIGHT_MEMORY_USAGE_THRESHOLD sets the threshold; "
        "FREIGHT_MEMORY_MONITOR_REFRESH_MS=0 turns the monitor off."
    )
    return "\n".join(lines)


def process_memory() -> list[ProcessMemory]:
    """RSS and command line of every process of the node this user may read."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "memory_info", "cmdline", "name"]):
        info = p.info
        mem = info.get("memory_info")
        if mem is None:
            continue  # gone, or not ours to read
        command = " ".join(info.get("cmdline") or ()) or info.get("name") or ""
        out.append(ProcessMemory(info["pid"], int(mem.rss), command[:80]))
    return out


def pid_alive(pid: int) -> bool:
    """The process exists and has not exited (a zombie has freed its memory)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- what each worker runs --------------------------------------------------------------------


class WorkLedger:
    """What each worker of the agent runs, as lease requests and actor creations described it.

    The agent sees leases, not tasks: a lease is asked for by the task at the head of its owner's
    queue, which names it and says whether it is retriable (``RequestLease.retriable``); later
    tasks of the same resource shape may run on it too (as in Ray, whose raylet judges a lease by
    the task it was granted for).
    """

    # Entries kept per table: the oldest go first, so requests never granted (cancelled, owner
    # gone) and workers and actors that are gone need no bookkeeping of their own.
    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._requests: dict[tuple[int, int], bool] = {}  # (connection, req id) -> retriable
        self.leases: dict[str, tuple[str, bool]] = {}  # worker id -> (task name, retriable)
        self.actors: dict[str, tuple[str, bool]] = {}  # actor id -> (class name, restartable)

    def requested(self, client: int, req_id: int, retriable: bool) -> None:
        _put(self._requests, (client, req_id), retriable, self.MAX_ENTRIES)

    def granted(self, worker_id: str, client: int, req_id: int, name: str) -> None:
        retriable = self._requests.pop((client, req_id), False)
        _put(self.leases, worker_id, (name, retriable), self.MAX_ENTRIES)

    def actor(self, actor_id: str, class_name: str, restartable: bool) -> None:
        _put(self.actors, actor_id, (class_name, restartable), self.MAX_ENTRIES)


def _put(table: dict[Any, Any], key: Any, value: Any, bound: int) -> None:
    """Set ``key`` as the newest entry of ``table``, dropping the oldest beyond ``bound``."""
    table.pop(key, None)
    table[key] = value
    while len(table) > bound:
        del table[next(iter(table))]


def candidates(agent: Any, rss: dict[int, int]) -> list[Candidate]:
    """Every worker process of ``agent`` (a ``NodeAgent``) as the policy sees it."""
    out = []
    work = agent.work
    for w in list(agent.leases.workers.values()):
        if not w.pid:
            continue
        since = w.transitions[-1].time if w.transitions else 0.0
        if w.state == "LEASED":
            name, retriable = work.leases.get(w.worker_id, ("?", False))
            out.append(
                Candidate(
                    w.worker_id,
                    w.pid,
                    since,
                    retriable,
                    False,
                    f"task {name}",
                    _holder(agent, w.client),
                    rss.get(w.pid, 0),
                )
            )
        elif w.state == "ACTOR":
            actor_id = agent.actor_of_worker.get(w.worker_id, "")
            class_name, restartable = work.actors.get(actor_id, ("?", False))
            out.append(
                Candidate(
                    w.worker_id,
                    w.pid,
                    since,
                    restartable,
                    True,
                    f"actor {class_name}({actor_id[:12]})",
                    "",
                    rss.get(w.pid, 0),
                )
            )
        else:
            out.append(
                Candidate(
                    w.worker_id, w.pid, 0.0, False, False, "idle worker", "", rss.get(w.pid, 0)
                )
            )
    return out


def _holder(agent: Any, client: int) -> str:
    """Who holds a lease: "job <id>" for a driver, else the owner's address."""
    conn = agent.conns.get(client)
    role: Any = conn.role if conn is not None else ()
    if len(role) > 2 and role[0] == "driver":
        return f"job {role[2]}"
    return str(role[1]) if len(role) > 1 else ""


# -- the loop ---------------------------------------------------------------------------------


async def monitor_loop(
    monitor: MemoryMonitor,
    agent: Any,
    interval_s: float,
    read: Callable[[], MemoryUsage] = memory_usage,
) -> None:
    """Check the node's memory every ``interval_s`` until the agent stops; a failing check is
    logged and never stops the agent."""
    logger.info(
        "memory monitor on: threshold {:.3f}, every {:.0f} ms", monitor.threshold, interval_s * 1e3
    )
    while not agent.stopping.is_set():
        try:
            await check_once(monitor, agent, read)
        except Exception:
            logger.exception("the memory monitor's check failed")
        try:
            await asyncio.wait_for(agent.stopping.wait(), timeout=interval_s)
        except TimeoutError:
            pass


async def check_once(monitor: MemoryMonitor, agent: Any, read: Callable[[], MemoryUsage]) -> None:
    """One check: read the memory, and above the threshold kill one worker of ``agent``."""
    usage = read()
    if not monitor.should_kill(usage, time.monotonic(), pid_alive):
        return
    if pick_victim(candidates(agent, {})) is None:
        # Nothing of ours to kill (memory is taken by other processes): say so now and then,
        # without listing the node's processes every check.
        now = time.monotonic()
        if now >= monitor.quiet_until:
            monitor.quiet_until = now + NO_VICTIM_LOG_S
            logger.warning(
                "memory use {:.3f} is above the threshold {:.3f}, but no task or actor runs "
                "here to free it",
                usage.fraction,
                monitor.threshold,
            )
        return
    processes = await asyncio.to_thread(process_memory)
    workers = candidates(agent, {p.pid: p.rss for p in processes})
    chosen = pick_victim(workers)
    if chosen is None:
        return  # its work ended meanwhile
    victim, why = chosen
    labels = {w.pid: w.what + (f", {w.owner}" if w.owner else "") for w in workers}
    labels.setdefault(os.getpid(), "freight node agent")
    reason = kill_report(agent.node_id, usage, monitor.threshold, victim, why, processes, labels)
    monitor.killed(victim.pid, time.monotonic())
    agent.kill_for_memory(victim, reason)
