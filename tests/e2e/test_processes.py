"""Process lifecycle of a cluster: clean shutdown, a killed driver, the worker pool, log output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest

import freight
from freight.testing import short_temp_dir
from freight.testing import wait_for_condition as wait_until

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROLES = ("freight.head", "freight.node", "freight.worker")
SHM_ROOT = "/dev/shm"
NUM_CPUS = 2


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    with short_temp_dir() as path:
        yield path


def session_processes(session_dir: str) -> dict[str, list[psutil.Process]]:
    """The live head, node agent and worker processes of one session, by role."""
    found: dict[str, list[psutil.Process]] = {role: [] for role in ROLES}
    prefix = session_dir.rstrip(os.sep) + os.sep
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        role = next((a for a in cmd if a in ROLES), None)
        if role is None:
            continue
        if any(a == session_dir or a.startswith(prefix) for a in cmd):
            found[role].append(proc)
    return found


def describe(procs: dict[str, list[psutil.Process]]) -> str:
    return ", ".join(f"{role}: {[p.pid for p in ps]}" for role, ps in procs.items() if ps)


def shm_dir_of(session_dir: str) -> str:
    return os.path.join(SHM_ROOT, f"freight-{os.path.basename(os.path.normpath(session_dir))}")


def run_driver(
    script: str, temp_dir: Path, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# -- (a) a clean shutdown leaves nothing behind ------------------------------------------------


CLEAN_DRIVER = """
    import json, os, sys
    import psutil
    import freight

    info = freight.init(num_cpus=2)

    @freight.remote
    def pid():
        return os.getpid()

    big = freight.put(bytes(1024 * 1024))  # a shared-memory segment exists during the run
    pids = freight.get([pid.remote() for _ in range(20)])
    shm = os.path.join("/dev/shm", "freight-" + os.path.basename(info["session_dir"]))
    print(json.dumps({
        "session_dir": info["session_dir"],
        "task_pids": sorted(set(pids)),
        "shm_files": len(os.listdir(shm)),
    }))
    sys.stdout.flush()
    freight.shutdown()
"""


def test_shutdown_leaves_no_process_and_no_shared_memory(temp_dir: Path) -> None:
    proc = run_driver(CLEAN_DRIVER, temp_dir)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    session_dir = report["session_dir"]
    assert session_dir.startswith(str(temp_dir))
    assert report["shm_files"] >= 1, "the 1 MiB put did not reach the shared-memory store"
    # shutdown() waits for what it stopped: nothing may remain once the driver has exited.
    left = session_processes(session_dir)
    assert not any(left.values()), f"left behind after shutdown(): {describe(left)}"
    assert not os.path.exists(shm_dir_of(session_dir))


# -- (b) a driver killed with SIGKILL leaves nothing behind -------------------------------------


KILLED_DRIVER = """
    import os, sys, threading, time
    import freight

    ready_file = sys.argv[1]
    info = freight.init(num_cpus=2)

    @freight.remote
    def block_forever(marker):
        open(marker, "w").close()
        threading.Event().wait()

    marker = ready_file + ".task"
    ref = block_forever.remote(marker)
    while not os.path.exists(marker):
        time.sleep(0.01)  # waiting for the task to start in its worker
    with open(ready_file + ".tmp", "w") as f:
        f.write(info["session_dir"])
    os.replace(ready_file + ".tmp", ready_file)
    threading.Event().wait()
"""


def test_driver_killed_with_sigkill_leaves_no_process(tmp_path: Path, temp_dir: Path) -> None:
    ready = tmp_path / "ready"
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir))
    driver = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_DRIVER), str(ready)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_until(
            lambda: ready.exists() or driver.poll() is not None, 60, "the driver to start a task"
        )
        assert driver.poll() is None, driver.communicate()[1].decode(errors="replace")[-4000:]
        session_dir = ready.read_text()
        running = session_processes(session_dir)
        assert running["freight.head"], describe(running)
        assert running["freight.node"], describe(running)
        assert running["freight.worker"], describe(running)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        wait_until(
            lambda: not any(session_processes(session_dir).values()),
            30,
            "the head, node agent and workers of a killed driver to exit",
        )
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.communicate()
        if ready.exists():
            # A SIGKILLed agent cannot remove its store folder: do not leave it in /dev/shm.
            shutil.rmtree(shm_dir_of(ready.read_text()), ignore_errors=True)


# -- (c) workers: prestarted, reused, capped by the CPU count -----------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, Any]]:
    if freight.is_initialized():
        freight.shutdown()  # another module's shared cluster: this module needs its own
    with short_temp_dir() as temp_dir:
        saved = os.environ.get("FREIGHT_TEMP_DIR")
        os.environ["FREIGHT_TEMP_DIR"] = str(temp_dir)
        try:
            info = freight.init(num_cpus=NUM_CPUS)
        finally:
            if saved is None:
                os.environ.pop("FREIGHT_TEMP_DIR", None)
            else:
                os.environ["FREIGHT_TEMP_DIR"] = saved
        yield info
        freight.shutdown()


@freight.remote
def report_pid() -> int:
    return os.getpid()


@freight.remote
def barrier_task(folder: str, total: int) -> tuple[int, int]:
    """Run in pairs: hold a 'running' marker until another task runs too (or none is left).

    Returns (pid, most tasks seen running at once, this one included).
    """
    running = os.path.join(folder, "running")
    done = os.path.join(folder, "done")
    me = uuid.uuid4().hex
    marker = os.path.join(running, me)
    open(marker, "x").close()
    most = 0
    polls = 0
    while True:
        now = len(os.listdir(running))
        most = max(most, now)
        polls += 1
        released = now >= 2 or len(os.listdir(done)) + now >= total
        if released and polls >= 2:
            break
        time.sleep(0.01)  # poll interval of the file-based barrier
    os.unlink(marker)
    open(os.path.join(done, me), "x").close()
    return os.getpid(), most


def test_workers_are_prestarted(cluster: dict[str, Any]) -> None:
    # Before any task: the node agent starts one worker per CPU on its own.
    workers = wait_until(
        lambda: (lambda w: w if len(w) >= NUM_CPUS else None)(
            session_processes(cluster["session_dir"])["freight.worker"]
        ),
        30,
        f"{NUM_CPUS} prestarted workers",
    )
    assert len(workers) == NUM_CPUS
    node_pids = {p.pid for p in session_processes(cluster["session_dir"])["freight.node"]}
    assert {w.ppid() for w in workers} <= node_pids


def test_workers_are_reused(cluster: dict[str, Any]) -> None:
    pids = [freight.get(report_pid.remote()) for _ in range(100)]
    assert len(set(pids)) <= NUM_CPUS, sorted(set(pids))
    assert os.getpid() not in pids
    workers = {p.pid for p in session_processes(cluster["session_dir"])["freight.worker"]}
    assert set(pids) <= workers


def test_cpu_tasks_are_capped_by_cpu_count(cluster: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "running").mkdir()
    (tmp_path / "done").mkdir()
    total = 10
    results = freight.get(
        [barrier_task.remote(str(tmp_path), total) for _ in range(total)], timeout=120
    )
    most = max(seen for _, seen in results)
    assert most <= NUM_CPUS, f"{most} CPU tasks ran at once with num_cpus={NUM_CPUS}"
    assert most == NUM_CPUS, "the two CPUs never ran tasks at the same time"
    assert len({pid for pid, _ in results}) <= NUM_CPUS
    assert len(os.listdir(tmp_path / "done")) == total


def test_every_process_writes_a_log_file(cluster: dict[str, Any]) -> None:
    freight.get([report_pid.remote() for _ in range(4)])
    session_dir = cluster["session_dir"]
    logs = Path(session_dir) / "logs"
    procs = session_processes(session_dir)
    assert procs["freight.head"] and procs["freight.node"] and procs["freight.worker"]
    assert (logs / "head.log").stat().st_size > 0
    for agent in procs["freight.node"]:
        cmd = agent.cmdline()
        node_id = cmd[cmd.index("--node-id") + 1]
        assert (logs / f"agent-{node_id[:12]}.log").stat().st_size > 0
    for worker in procs["freight.worker"]:
        worker_id = worker.cmdline()[-1]
        assert (logs / f"worker-{worker_id}.out").is_file(), sorted(os.listdir(logs))


# -- (d) task output reaches the driver ---------------------------------------------------------


LOG_DRIVER = """
    import json, os, sys
    import freight

    log_to_driver = sys.argv[1] == "on"
    line = sys.argv[2]
    info = freight.init(num_cpus=2, log_to_driver=log_to_driver)

    @freight.remote
    def emit(box):
        print(line)
        # Fetching the driver's object goes over the connection the line went on, after it:
        # once this returns, the driver has handled the line.
        return freight.get(box[0]), os.getpid()

    value, pid = freight.get(emit.remote([freight.put("fetched")]))
    assert value == "fetched", value
    print(json.dumps({"session_dir": info["session_dir"], "pid": pid}))
    sys.stdout.flush()
    freight.shutdown()
"""


@pytest.mark.parametrize("log_to_driver", [True, False], ids=["log_to_driver", "quiet"])
def test_task_output_goes_to_the_driver(temp_dir: Path, log_to_driver: bool) -> None:
    line = f"a line from a task {uuid.uuid4().hex}"
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir))
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(LOG_DRIVER),
            "on" if log_to_driver else "off",
            line,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    # The report is the driver's own JSON line; a forwarded task line may be printed after it.
    report = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("{")))
    pattern = re.compile(rf"^\(emit pid={report['pid']}\b.*\) {re.escape(line)}$", re.MULTILINE)
    if log_to_driver:
        assert pattern.search(proc.stdout), proc.stdout
    else:
        assert line not in proc.stdout, proc.stdout
        assert line not in proc.stderr, proc.stderr
    # Either way the line is in the worker's own log file.
    logs = Path(report["session_dir"]) / "logs"
    assert any(line in p.read_text(errors="replace") for p in logs.glob("worker-*.out"))
