"""Resource faults: a node's object store filled or holding pinned objects, its host's CPU or
memory hogged, its spill disk filled.

Every fault but the spill filler is a child process of the harness that holds the resource
(busy loops, touched pages, or a driver holding references to objects placed on the node). Each
child is journalled by its identity with ``{"kind": "signal", "signal": "SIGKILL"}`` as its
revert, before it acts: it waits for a go byte on its stdin, written once the journal holds it.
A child ends by itself at expiry, when its stdin closes (the harness stops it, or died: the
kernel closes the pipe) and, through ``PR_SET_PDEATHSIG``, when its parent dies; so a dead
harness's hogs are gone even before `freight chaos recover` or the watchdog kill them. Objects
whose holder died are freed by the node's agent, as for any owner that disappears (decision
0024).

The spill filler is a file the harness allocates (``posix_fallocate``) in the node's spill
folder, journalled with its device, inode and size before it grows; its revert removes that very
file and nothing else.

None of these faults takes a node out of service (it degrades it): their targets are of kinds
``object_store``, ``host`` and ``spill_disk``, not ``node``, so they do not count against the
last healthy node. Design: ``docs/decisions/0088-resource-faults.md``.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import IO, Any

import psutil

from freight import _launcher
from freight.client import access
from freight.config import settings
from freight.objects.store import format_bytes
from freight.util.process import identity, wait_exit

from . import faults, journal
from .targets import FaultRefused, ProcessTarget

SETUP_S = 120.0  # how long a fault may take to be in force (a driver starting, objects placed)
CHILD_GRACE_S = 2.0  # a child outlives its duration this long before letting go by itself
STOP_GRACE_S = 10.0  # how long a child told to stop may take (a driver's shutdown), then SIGKILL
CHUNK_BYTES = 16 << 20  # the size of each object a fill places (a task's return value)
MAX_OBJECTS = 1024  # objects a fill or pin places at most (larger objects beyond that)
FILLER_PREFIX = ".freight-chaos-fill-"
_PR_SET_PDEATHSIG = 1
# The child's entry point: its command line names it, which the journal's identity records.
_CHILD = "import sys; from freight.chaos.resources import child_main; child_main(sys.argv[1:])"


# -- arguments --------------------------------------------------------------------------------


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_fraction(name: str, value: Any, what: str) -> float:
    if not _number(value) or not 0 < value <= 1:
        raise access.UsageError(
            f"{name} must be a fraction of {what} more than 0 and at most 1 (0.9 for 90 %), "
            f"got {value!r}"
        )
    return float(value)


def check_count(name: str, value: Any, most: int, why: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= most:
        raise access.UsageError(
            f"{name} must be a whole number from 1 to {most} ({why}), got {value!r}"
        )
    return value


def check_bytes(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise access.UsageError(f"{name} must be a positive whole number of bytes, got {value!r}")
    return value


def _one_of(fault: str, name: str, fraction: float, nbytes: int, what: str) -> None:
    if bool(fraction) == bool(nbytes):
        raise access.UsageError(
            f"{fault} takes either {name} (a fraction of {what}) or bytes, exactly one of "
            f"them, got {name}={fraction!r} bytes={nbytes!r}"
        )


# -- the children that hold a resource ----------------------------------------------------------


@dataclass
class Child:
    """One process of the harness holding a resource, and its journal entry."""

    proc: subprocess.Popen[bytes]
    injection: journal.Injection
    stderr: IO[bytes]
    ready: dict[str, Any] = field(default_factory=dict)  # what it reported once in force

    def stderr_tail(self) -> str:
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return "\n".join(lines[-15:]) or "(nothing on stderr)"


@dataclass(frozen=True)
class HoldResult:
    """What a fault held by child processes did, as the experiment's journal records it."""

    fault: str
    target: dict[str, str]
    pids: list[int]
    seconds: float  # how long it was in force
    result: str  # "reverted", or why it ended sooner
    injection_ids: list[str]
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "fault": self.fault,
            **{f"target_{k}": v for k, v in self.target.items()},
            "pids": self.pids,
            "seconds": round(self.seconds, 3),
            "result": self.result,
            "injection_ids": self.injection_ids,
            **self.details,
        }


def _spawn(
    fault: str, target: dict[str, str], kind: str, spec: dict[str, Any], path: str, expires: float
) -> Child:
    """Start a child that will hold ``kind``, journal it, then let it act."""
    spec = {**spec, "parent": os.getpid(), "expires": expires}
    err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by _stop, with the child)
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, kind, json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=err,
    )
    # Popen returns once the child has exec'd: its command line is its own.
    injection = journal.Injection(
        fault, target, identity(proc.pid), "spawn", {"kind": "signal", "signal": "SIGKILL"}, expires
    )
    child = Child(proc, injection, err)
    try:
        journal.write_injection(path, injection)
    except BaseException:
        _stop(child)
        raise
    assert proc.stdin is not None
    try:
        proc.stdin.write(b"g")  # journalled: act
        proc.stdin.flush()
    except BrokenPipeError:
        pass  # it ended already: _await_ready says how, with its stderr
    return child


def _await_ready(child: Child, deadline: float) -> None:
    """Wait for ``child``'s report that its fault is in force (one JSON line)."""
    assert child.proc.stdout is not None
    fd = child.proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise access.CommandFailed(
                f"the {child.injection.fault} process {child.proc.pid} was not in force within "
                f"{SETUP_S:g} s; it was stopped. Its stderr:\n{child.stderr_tail()}"
            )
        readable, _, _ = select.select([fd], [], [], left)
        if readable:
            break
    line = child.proc.stdout.readline()
    if not line:
        child.proc.wait()
        raise access.CommandFailed(
            f"the {child.injection.fault} process {child.proc.pid} ended (exit code "
            f"{child.proc.returncode}) before its fault was in force. Its stderr:\n"
            f"{child.stderr_tail()}"
        )
    child.ready = json.loads(line)


def _stop(child: Child) -> str:
    """Stop ``child``: close its stdin (it ends by itself), SIGKILL it after STOP_GRACE_S; wait
    for it. What happened, in words."""
    proc = child.proc
    ended_before = proc.poll() is not None
    try:
        if proc.stdin is not None:
            proc.stdin.close()
    except OSError:
        pass  # it ended: the pipe is broken
    deadline = time.monotonic() + STOP_GRACE_S
    while proc.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            proc.kill()  # our own child, not yet reaped: its pid cannot name another process
            break
        wait_exit(proc.pid, left)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    child.stderr.close()
    if ended_before:
        return f"ended by itself (exit code {proc.returncode})"
    return "reverted"


def hold(
    fault: str,
    target: dict[str, str],
    kind: str,
    specs: list[dict[str, Any]],
    duration: float,
    path: str,
) -> HoldResult:
    """Run one child per spec holding ``kind`` for ``duration`` seconds once all are in force
    (at most SETUP_S to get there), then stop them: journalled before they act, reverted here
    at expiry, also when the run is interrupted."""
    duration = faults.check_duration(duration)
    expires = time.time() + SETUP_S + duration
    children: list[Child] = []
    results: list[str] = []
    in_force = 0.0
    try:
        for spec in specs:
            children.append(_spawn(fault, target, kind, spec, path, expires))
        deadline = time.monotonic() + SETUP_S
        for child in children:
            _await_ready(child, deadline)
        in_force = time.monotonic()
        _hold_for(children, duration)
    finally:
        for child in children:
            result = _stop(child)
            journal.write_end(path, child.injection.id, result)
            results.append(result)
    ended = [r for r in results if r != "reverted"]
    details: dict[str, Any] = {}
    for child in children:
        for key, value in child.ready.items():
            details[key] = details.get(key, 0) + value if isinstance(value, int) else value
    return HoldResult(
        fault,
        target,
        [c.proc.pid for c in children],
        time.monotonic() - in_force,
        ended[0] if ended else "reverted",
        [c.injection.id for c in children],
        details,
    )


def _hold_for(children: list[Child], duration: float) -> None:
    """The fault itself: the children hold the resource ``duration`` seconds, or until every
    one has ended (killed by `freight chaos halt` or by hand: the fault is over)."""
    end = time.monotonic() + duration
    while (left := end - time.monotonic()) > 0:
        alive = [c for c in children if c.proc.poll() is None]
        if not alive:
            return
        wait_exit(alive[0].proc.pid, left)


class _Stop(Exception):
    """SIGTERM reached a child: it lets its resource go as at expiry."""


def _sigterm(signum: int, frame: Any) -> None:
    raise _Stop


def child_main(argv: list[str]) -> None:
    """A child's life: die with the parent, wait for the go byte, hold, report, end at expiry
    or when stdin closes."""
    kind, spec = argv[0], json.loads(argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != spec["parent"]:
        return  # the parent died before the prctl: nobody journals this child
    if os.read(0, 1) != b"g":
        return  # the parent went away before journalling it
    signal.signal(signal.SIGTERM, _sigterm)
    # A SIGTERM while setting up waits until the fault is in force (_report), so the harness
    # always learns what was held before it is let go.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        if kind == "cpu":
            _burn(_report({}, spec))
        elif kind == "memory":
            held = _touch(int(spec["bytes"]))
            rss = psutil.Process().memory_info().rss
            _wait_stop(_report({"bytes": len(held), "rss": rss}, spec))
        elif kind == "objects":
            _hold_objects(spec)
        else:
            raise SystemExit(f"unknown resource {kind!r}")
    except _Stop:
        pass


def _report(what: dict[str, Any], spec: dict[str, Any]) -> float:
    """Tell the harness the fault is in force (and what it holds); when this child lets go by
    itself: ``duration`` s from now, a little after the harness would stop it, and never
    after the fault's expiry."""
    sys.stdout.write(json.dumps(what) + "\n")
    sys.stdout.flush()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    return min(time.time() + float(spec["duration"]) + CHILD_GRACE_S, float(spec["expires"]))


def _stop_asked(timeout: float) -> bool:
    """Whether stdin closed (or got a byte) within ``timeout`` seconds: the harness said stop,
    or died."""
    readable, _, _ = select.select([0], [], [], max(0.0, timeout))
    return bool(readable)


def _wait_stop(until: float) -> None:
    while time.time() < until and not _stop_asked(until - time.time()):
        pass


def _burn(until: float) -> None:
    """Keep one core busy until ``until`` or a stop."""
    while time.time() < until and not _stop_asked(0):
        for _ in range(20_000):  # a few milliseconds of pure interpreter work
            pass


def _touch(nbytes: int) -> bytearray:
    """``nbytes`` of memory, every page written so that it is resident."""
    held = bytearray(nbytes)
    page = os.sysconf("SC_PAGE_SIZE")
    held[::page] = b"\x01" * len(range(0, nbytes, page))
    return held


def _block(size: int) -> bytes:
    """A task's return value of ``size`` bytes, stored on the node the task ran on."""
    return bytes(size)


def _hold_objects(spec: dict[str, Any]) -> None:
    """Be a driver holding references to objects placed on the node: tasks pinned there
    (node affinity, no CPU needed) return them, so they live in that node's store."""
    import freight
    from freight.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    freight.init(address=spec["address"], log_to_driver=False, configure_logging=False)
    try:
        strategy = NodeAffinitySchedulingStrategy(spec["node_id"], soft=False)
        make = freight.remote(num_cpus=0, max_retries=0, scheduling_strategy=strategy)(_block)
        refs = [make.remote(size) for size in spec["sizes"]]
        placed, _ = freight.wait(refs, num_returns=len(refs), timeout=SETUP_S, fetch_local=False)
        if len(placed) < len(refs):
            raise SystemExit(
                f"only {len(placed)} of {len(refs)} objects were placed on node "
                f"{spec['node_id']} within {SETUP_S:g} s: look at the node's workers and "
                "store (`freight list workers`, `freight memory`)"
            )
        ids = [r.hex() for r in refs]
        held = {"objects": len(refs), "bytes": sum(spec["sizes"]), "object_ids": ids}
        _wait_stop(_report(held, spec))
    finally:
        freight.shutdown()  # its objects go with it (the agent frees what a driver owned)


# -- the node a fault hits -----------------------------------------------------------------------


def _target(node: ProcessTarget, kind: str) -> dict[str, str]:
    return {"kind": kind, "id": node.node_id, "node_id": node.node_id}


def _node_row(cluster: access.Target, node: ProcessTarget) -> dict[str, Any]:
    from freight import state

    row = state.get_state("nodes", node.node_id, address=cluster)
    if row is None:
        raise FaultRefused(f"node {node.node_id} left the cluster; `freight list nodes` shows them")
    return row


def _sizes(total: int, count: int = 0) -> list[int]:
    """Object sizes adding up to ``total``: CHUNK_BYTES each (larger beyond MAX_OBJECTS), or
    ``count`` equal ones. Each is above the inline limit, so it goes to the store."""
    if not count:
        count = min(MAX_OBJECTS, max(1, math.ceil(total / CHUNK_BYTES)))
    size = max(total // count, settings.inline_max_bytes + 1)
    return [size] * count


def fill_object_store(
    cluster: access.Target,
    node: ProcessTarget,
    level: float,
    duration: float,
    path: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Bring ``node``'s object store to ``level`` of its capacity with objects held by a
    driver of the harness's, for ``duration`` seconds; freed at revert. Above the spilling
    threshold the node spills: that reaction is the point."""
    level = check_fraction("level", level, "the object store's capacity")
    duration = faults.check_duration(duration)
    row = _node_row(cluster, node)
    capacity, used = int(row["object_store_capacity"]), int(row["object_store_used"])
    need = int(level * capacity) - used
    if need <= settings.inline_max_bytes:
        raise FaultRefused(
            f"node {node.node_id}'s object store already holds {format_bytes(used)} of "
            f"{format_bytes(capacity)} ({used / max(capacity, 1):.0%}): level {level} needs "
            "nothing more; ask for a higher level"
        )
    sizes = _sizes(need)
    target = _target(node, "object_store")
    plan = {"level": level, "capacity": capacity, "used_before": used, "bytes": sum(sizes)}
    if dry_run:
        return faults.planned(cluster, "fill_object_store", target, objects=len(sizes), **plan)
    spec = {
        "address": cluster.address,
        "node_id": node.node_id,
        "sizes": sizes,
        "duration": duration,
    }
    result = hold("fill_object_store", target, "objects", [spec], duration, path)
    return {**result.as_dict(), **{k: v for k, v in plan.items() if k != "bytes"}}


def pin_objects(
    cluster: access.Target,
    node: ProcessTarget,
    count: int,
    size: int,
    duration: float,
    path: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Place ``count`` objects of ``size`` bytes on ``node`` and hold them referenced (pinned:
    the store may spill them, never evict them) for ``duration`` seconds."""
    count = check_count("count", count, MAX_OBJECTS, "objects placed at once")
    size = check_bytes("size", size)
    if size <= settings.inline_max_bytes:
        raise access.UsageError(
            f"size must be more than FREIGHT_INLINE_MAX_BYTES ({settings.inline_max_bytes}): "
            f"smaller objects travel inline and never reach the store, got {size}"
        )
    duration = faults.check_duration(duration)
    capacity = int(_node_row(cluster, node)["object_store_capacity"])
    if count * size > capacity:
        raise access.UsageError(
            f"{count} objects of {format_bytes(size)} are more than node {node.node_id}'s "
            f"object store holds ({format_bytes(capacity)}): pin fewer, or over-fill it with "
            "fill_object_store"
        )
    target = _target(node, "object_store")
    if dry_run:
        return faults.planned(cluster, "pin_objects", target, objects=count, bytes=count * size)
    spec = {
        "address": cluster.address,
        "node_id": node.node_id,
        "sizes": _sizes(count * size, count),
        "duration": duration,
    }
    return hold("pin_objects", target, "objects", [spec], duration, path).as_dict()


def hog_cpu(
    cluster: access.Target,
    node: ProcessTarget,
    cores: int,
    duration: float,
    path: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Keep ``cores`` cores of ``node``'s host busy (one spinning process each) for
    ``duration`` seconds."""
    most = os.cpu_count() or 1
    cores = check_count("cores", cores, most, f"this host has {most} cores")
    duration = faults.check_duration(duration)
    target = _target(node, "host")
    if dry_run:
        return faults.planned(cluster, "hog_cpu", target, cores=cores, processes=cores)
    specs = [{"duration": duration} for _ in range(cores)]
    return hold("hog_cpu", target, "cpu", specs, duration, path).as_dict()


def hog_memory(
    cluster: access.Target,
    node: ProcessTarget,
    fraction: float,
    nbytes: int,
    duration: float,
    path: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Hold ``nbytes`` (or ``fraction`` of the host's memory) resident in a process on
    ``node``'s host for ``duration`` seconds. More than the host has available is refused: the
    kernel's OOM killer would pick the victim, not the experiment."""
    _one_of("hog_memory", "fraction", fraction, nbytes, "the host's memory")
    total = psutil.virtual_memory().total
    if fraction:
        nbytes = int(check_fraction("fraction", fraction, "the host's memory") * total)
    nbytes = check_bytes("bytes", nbytes)
    duration = faults.check_duration(duration)
    available = psutil.virtual_memory().available
    if nbytes >= available:
        raise FaultRefused(
            f"{format_bytes(nbytes)} is more than the {format_bytes(available)} of memory "
            f"available on this host now: the kernel would kill processes of its choosing; "
            "ask for less"
        )
    target = _target(node, "host")
    if dry_run:
        return faults.planned(cluster, "hog_memory", target, bytes=nbytes, memory_total=total)
    spec = {"bytes": nbytes, "duration": duration}
    return hold("hog_memory", target, "memory", [spec], duration, path).as_dict()


# -- the spill disk --------------------------------------------------------------------------


def spill_folder(node: ProcessTarget) -> str:
    """Where ``node`` spills objects, as its agent wrote it in its node file (its session
    folder is on its command line, which the target's identity proved)."""
    cmd = list(node.process.get("cmdline") or [])
    session = cmd[cmd.index("--session-dir") + 1] if "--session-dir" in cmd[:-1] else ""
    info = _launcher.read_trusted_json(os.path.join(session, "nodes", f"{node.node_id}.json"))
    folder = str((info or {}).get("spill_dir") or "")
    if not folder:
        raise FaultRefused(
            f"node {node.node_id}'s node file (in {session or 'its session folder'}) does not "
            "name its spill folder (an agent of an older freight): restart the node with this "
            "freight, or fill the disk by hand"
        )
    return folder


@dataclass(frozen=True)
class Disk:
    """The file system of a folder, in bytes, as `df` counts it (used + avail = size, for a
    user other than root)."""

    used: int
    avail: int

    @classmethod
    def of(cls, folder: str) -> Disk:
        probe = folder
        while not os.path.isdir(probe) and os.path.dirname(probe) != probe:
            probe = os.path.dirname(probe)  # the spill folder is made at the first spill
        st = os.statvfs(probe)
        return cls((st.f_blocks - st.f_bfree) * st.f_frsize, st.f_bavail * st.f_frsize)

    @property
    def level(self) -> float:
        return self.used / max(1, self.used + self.avail)


def fill_spill_disk(
    cluster: access.Target,
    node: ProcessTarget,
    level: float,
    nbytes: int,
    duration: float,
    path: str,
    dry_run: bool,
) -> dict[str, Any]:
    """Take ``nbytes`` (or up to ``level`` of the file system) of the disk ``node`` spills to
    with one allocated file in its spill folder, for ``duration`` seconds; removed at revert."""
    _one_of("fill_spill_disk", "level", level, nbytes, "the spill file system's size")
    if level:
        level = check_fraction("level", level, "the spill file system's size")
    else:
        nbytes = check_bytes("bytes", nbytes)
    duration = faults.check_duration(duration)
    folder = spill_folder(node)
    disk = Disk.of(folder)
    if level:
        nbytes = int(level * (disk.used + disk.avail)) - disk.used
        if nbytes <= 0:
            raise FaultRefused(
                f"the file system of {folder} is already {disk.level:.1%} full: level {level} "
                "needs nothing more; ask for a higher level"
            )
    if nbytes > disk.avail:
        raise FaultRefused(
            f"{format_bytes(nbytes)} is more than the {format_bytes(disk.avail)} free on the "
            f"file system of {folder}; ask for at most that (or level 1.0)"
        )
    target = _target(node, "spill_disk")
    plan = {"folder": folder, "bytes": nbytes, "avail_before": disk.avail}
    if dry_run:
        return faults.planned(cluster, "fill_spill_disk", target, **plan)
    expires = time.time() + SETUP_S + duration
    os.makedirs(folder, mode=0o700, exist_ok=True)
    filler = os.path.join(folder, f"{FILLER_PREFIX}{uuid.uuid4().hex}")
    nbytes = max(nbytes, len(_marker(filler)))
    # Made empty first, so the journal can name the very file (device, inode) before it grows.
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    undo = {"kind": "file", "path": filler, "device": st.st_dev, "inode": st.st_ino, "size": nbytes}
    injection = journal.Injection("fill_spill_disk", target, {}, "fallocate", undo, expires)
    try:
        journal.write_injection(path, injection)
    except BaseException:
        os.close(fd)
        os.unlink(filler)
        raise
    result, started, avail_during = "", time.monotonic(), 0
    try:
        try:
            os.pwrite(fd, _marker(filler), 0)
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as e:
            raise access.CommandFailed(
                f"could not allocate {format_bytes(nbytes)} in {filler}: {e.strerror}; the file "
                "was removed"
            ) from None
        finally:
            os.close(fd)
        avail_during = Disk.of(folder).avail
        started = time.monotonic()
        _hold_file(undo, duration)
    finally:
        result = undo_file(injection)
        journal.write_end(path, injection.id, result)
    return {
        "fault": "fill_spill_disk",
        **{f"target_{k}": v for k, v in target.items()},
        "file": filler,
        "seconds": round(time.monotonic() - started, 3),
        "result": result,
        "injection_id": injection.id,
        "avail_during": avail_during,
        **plan,
    }


def _marker(filler: str) -> bytes:
    """What a filler starts with: its own name, so that another file given its name and (once
    it was removed) its inode is not taken for it."""
    return f"freight chaos filler {os.path.basename(filler)}\n".encode()


def _is_filler(st: os.stat_result, undo: dict[str, Any]) -> bool:
    """Whether ``st`` (of ``undo``'s path) is the filler ``undo`` records: a regular file with
    its device and inode, no larger than it was made, starting with its marker (or still
    empty)."""
    same = (st.st_dev, st.st_ino) == (undo.get("device"), undo.get("inode"))
    if not (stat.S_ISREG(st.st_mode) and same and st.st_size <= int(undo.get("size", 0))):
        return False
    if st.st_size == 0:
        return True  # made, not yet written
    marker = _marker(str(undo["path"]))
    try:
        with open(str(undo["path"]), "rb") as f:
            return f.read(len(marker)) == marker
    except OSError:
        return False


def _hold_file(undo: dict[str, Any], duration: float) -> None:
    """The fault itself: the filler takes the disk ``duration`` seconds, or until it is gone
    (removed by `freight chaos halt` or `recover`: the fault is over). Looked at each second."""
    end = time.monotonic() + duration
    while (left := end - time.monotonic()) > 0:
        try:
            if not _is_filler(os.lstat(undo["path"]), undo):
                return
        except FileNotFoundError:
            return
        time.sleep(min(left, 1.0))


def undo_file(injection: journal.Injection) -> str:
    """Remove the filler file the injection recorded, only if it is that very file (same
    device and inode, a regular file no larger than recorded); anything else is left alone."""
    assert injection.undo is not None
    where = str(injection.undo.get("path", ""))
    if not os.path.basename(where).startswith(FILLER_PREFIX):
        raise journal.JournalError(
            f"injection {injection.id} names {where!r} as its filler, which is no filler of "
            "freight's; look at it by hand, then move the journal aside"
        )
    try:
        st = os.lstat(where)
    except FileNotFoundError:
        return f"{where} was already gone"
    if not _is_filler(st, injection.undo):
        return f"left {where} alone: it is not the file the fault made"
    os.unlink(where)
    return f"removed {where} ({format_bytes(st.st_size)})"
