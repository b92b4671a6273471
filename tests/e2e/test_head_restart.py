"""The head is SIGKILLed in the middle of a job and started again on its control store: the
job completes, actors keep their state, placement groups and jobs are still known, tasks leased
before the kill keep running while the head is down, and a new driver can connect."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import freight
from freight.state import list_actors, list_jobs
from freight.testing import (
    Cluster,
    connected_cluster,
    short_temp_dir,
    wait_for_condition,
)
from freight.util.placement_group import placement_group, placement_group_table


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    nodes = ({"num_cpus": 1}, {"num_cpus": 2}, {"num_cpus": 2})
    with connected_cluster(*nodes, namespace="books") as c:
        yield c


@freight.remote
def square(x: int) -> int:
    time.sleep(0.02)  # the work: long enough that the job is under way when the head dies
    return x * x


@freight.remote(num_cpus=0)  # not queued behind the job's tasks, which hold every CPU
def one() -> int:
    return 1


@freight.remote
class Tally:
    def __init__(self) -> None:
        self.n = 0

    def add(self) -> int:
        self.n += 1
        return self.n


NEW_DRIVER = """
    import sys
    import freight

    freight.init(address=sys.argv[1], namespace="books")
    print(freight.get(freight.get_actor("ledger").add.remote(), timeout=60))
"""


def test_a_job_survives_the_head_being_killed_and_restarted(cluster: Cluster) -> None:
    ledger = Tally.options(name="ledger", lifetime="detached").remote()
    tally = Tally.options(name="tally").remote()
    assert freight.get([ledger.add.remote() for _ in range(5)])[-1] == 5
    assert freight.get([tally.add.remote() for _ in range(3)])[-1] == 3
    pg = placement_group([{"CPU": 1}], strategy="PACK")
    assert pg.wait(timeout_seconds=60)
    job_id = freight.get_runtime_context().get_job_id()

    refs = [square.remote(i) for i in range(400)]
    freight.wait(refs, num_returns=20, timeout=60, fetch_local=False)
    cluster.kill_head()
    killed = time.monotonic()
    # While it is down, tasks already leased keep running and their results arrive.
    done_at_kill = len(freight.wait(refs, num_returns=len(refs), timeout=0)[0])
    wait_for_condition(
        lambda: len(freight.wait(refs, num_returns=len(refs), timeout=0)[0]) > done_at_kill + 10,
        30,
        "results to keep coming while the head is down",
    )

    restarted = time.monotonic()
    cluster.restart_head()
    serving = time.monotonic()
    assert freight.get(one.remote(), timeout=60) == 1  # new work is accepted
    first_task = time.monotonic()
    print(
        f"\nhead down {restarted - killed:.2f} s; restarted head serving after "
        f"{serving - restarted:.2f} s; first new task result after {first_task - restarted:.2f} s"
    )

    assert freight.get(refs, timeout=120) == [i * i for i in range(400)]
    # Actors kept their state: the detached one and the driver's own.
    assert freight.get(ledger.add.remote(), timeout=60) == 6
    assert freight.get(tally.add.remote(), timeout=60) == 4
    assert freight.get(freight.get_actor("tally").add.remote(), timeout=60) == 5
    # The control store kept the placement group and the job.
    assert placement_group_table(pg)["state"] == "CREATED"
    job = next(j for j in list_jobs() if j["job_id"] == job_id)
    assert job["state"] == "RUNNING"
    wait_for_condition(
        lambda: cluster.alive_node_ids() == {n.node_id for n in cluster.nodes},
        60,
        "every node to be registered with the new head",
    )
    # A new driver connects and finds the detached actor by name.
    new = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NEW_DRIVER), cluster.address],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert new.returncode == 0, new.stderr[-4000:]
    assert new.stdout.split()[-1] == "7"
    freight.kill(ledger)


def test_actors_created_while_the_head_is_down_are_created_once_it_is_back(
    cluster: Cluster,
) -> None:
    cluster.kill_head()
    named: list[Any] = []
    try:
        unnamed = Tally.remote()  # created in the background
        call = unnamed.add.remote()
        # A named actor is created in the calling thread, which waits for the head.
        creating = threading.Thread(
            target=lambda: named.append(Tally.options(name="made-while-down").remote())
        )
        creating.start()
    finally:
        cluster.restart_head()
    assert freight.get(call, timeout=120) == 1
    creating.join(timeout=120)
    assert named, "the named actor's creation did not return"
    assert freight.get(named[0].add.remote(), timeout=60) == 1
    assert freight.get(freight.get_actor("made-while-down").add.remote(), timeout=60) == 2
    freight.kill(named[0])
    freight.kill(unnamed)


@freight.remote(num_cpus=0)
def call_by_name(name: str, folder: str) -> int:
    """Look the actor up once told to (the head names its worker, which is gone), then call."""
    where = Path(folder)
    (where / "started").touch()
    wait_for_condition((where / "go").exists, 120, "the go-ahead")
    handle = freight.get_actor(name, namespace="books")
    (where / "looked-up").touch()
    return freight.get(handle.add.remote(), timeout=120)


def test_a_call_to_the_stale_worker_the_head_names_waits_for_the_restart(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A process that looks an actor up while the head still names its dead worker (here its
    agent is stopped, so the death is not reported; after a head restart, the old node is not
    yet found dead) waits for the restart instead of failing on the stale address."""
    ledger = Tally.options(name="stale", max_restarts=1).remote()
    assert freight.get(ledger.add.remote(), timeout=60) == 1
    row = next(a for a in list_actors(filters=[("name", "=", "stale")]) if a["state"] == "ALIVE")
    agent = next(n for n in cluster.nodes if n.node_id == row["node_id"]).process.pid
    ref = call_by_name.remote("stale", str(tmp_path))
    wait_for_condition((tmp_path / "started").exists, 60, "the caller to start")
    os.kill(agent, signal.SIGSTOP)
    try:
        os.kill(row["pid"], signal.SIGKILL)
        wait_for_condition(lambda: _exited(row["pid"]), 30, "the actor's worker to exit")
        (tmp_path / "go").touch()
        wait_for_condition(
            lambda: (tmp_path / "looked-up").exists() or freight.wait([ref], timeout=0)[0],
            60,
            "the caller to look the actor up",
        )
    finally:
        os.kill(agent, signal.SIGCONT)
    assert freight.get(ref, timeout=120) == 1  # the restarted actor, from a fresh constructor
    freight.kill(ledger)


def _exited(pid: int) -> bool:
    """Gone, or a zombie (its stopped parent cannot reap it): its sockets are closed."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


SUBMITTED = """
    import freight

    freight.init()  # the head's address, token and job id are in the environment


    @freight.remote
    def cube(x):
        import time

        time.sleep(0.02)
        return x**3


    refs = [cube.remote(i) for i in range(300)]
    print("submitted", flush=True)
    print("total", sum(freight.get(refs, timeout=300)), flush=True)
"""


def test_a_submitted_job_survives_the_head_being_killed_and_restarted(
    cluster: Cluster, tmp_path: Path
) -> None:
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent(SUBMITTED))
    cli = str(Path(sys.executable).with_name("freight"))
    env = dict(os.environ, FREIGHT_TOKEN=cluster._token())
    submit = subprocess.run(
        [cli, "job", "submit", "--address", cluster.address, "--no-wait", "--",
         sys.executable, str(script)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert submit.returncode == 0, submit.stderr
    job_id = next(j["job_id"] for j in list_jobs() if j["entrypoint"].endswith("job.py"))

    def job() -> dict:
        return next(j for j in list_jobs() if j["job_id"] == job_id)

    log = Path(job()["log_path"])
    wait_for_condition(lambda: "submitted" in log.read_text(), 60, "the job's tasks")
    driver_pid = job()["driver_pid"]
    cluster.kill_head()
    cluster.restart_head()
    ended = wait_for_condition(
        lambda: job()["state"] in ("SUCCEEDED", "FAILED", "STOPPED") and job(), 300, "the job"
    )
    assert (ended["state"], ended["exit_code"]) == ("SUCCEEDED", 0), (ended, log.read_text())
    assert ended["driver_pid"] == driver_pid  # the same driver: it ran on through the restart
    assert f"total {sum(i**3 for i in range(300))}" in log.read_text()


HEAD_NODE_DRIVER = """
    import sys
    import freight

    freight.init(address=sys.argv[1], namespace="books")

    @freight.remote
    class Ledger:
        __freight_checkpoint_calls__ = 1

        def __init__(self):
            self.n = 0

        def add(self):
            self.n += 1
            return self.n

        def __freight_checkpoint__(self):
            return self.n

        def __freight_restore__(self, n):
            self.n = n

    if sys.argv[2] == "create":
        a = Ledger.options(name="ledger", lifetime="detached", max_restarts=1).remote()
    else:
        a = freight.get_actor("ledger")
    print(freight.get(a.add.remote(), timeout=120))
"""


def test_freight_start_on_the_old_storage_carries_the_cluster_on(tmp_path) -> None:
    """The whole head node goes (head, agent, actor) and `freight start --head` runs again on
    the same control store: same token, the detached actor restarts with its checkpoint."""
    freight_cli = str(Path(sys.executable).with_name("freight"))
    storage = tmp_path / "control.db"
    with short_temp_dir() as tmp:
        env = {k: v for k, v in os.environ.items() if k not in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS")}
        env.update(
            FREIGHT_TEMP_DIR=str(tmp),
            FREIGHT_ACTOR_CHECKPOINT_DIR=str(tmp_path / "ckpt"),  # outlives the session
            FREIGHT_HEALTH_CHECK_PERIOD_S="0.3",
            FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD="2",
        )
        port = str(_free_port())
        start = [freight_cli, "start", "--head", "--port", port, "--num-cpus", "1"]
        start += ["--storage", str(storage)]

        def run(*cmd: str) -> str:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
            return done.stdout

        def driver(step: str) -> int:
            script = textwrap.dedent(HEAD_NODE_DRIVER)
            return int(run(sys.executable, "-c", script, f"127.0.0.1:{port}", step).split()[-1])

        try:
            run(*start)
            first_token = (tmp / "session_latest" / "token").read_text()
            assert [driver("create"), driver("use")] == [1, 2]
            run(freight_cli, "stop")
            run(*start)
            assert (tmp / "session_latest" / "token").read_text() == first_token
            # Its node is gone: once the new head finds it dead, the actor restarts on the new
            # node and restores its checkpoint.
            assert driver("use") == 3
        finally:
            subprocess.run([freight_cli, "stop"], env=env, capture_output=True, timeout=120)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS")}
    env["FREIGHT_TEMP_DIR"] = str(tmp)
    return env


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_and_the_control_store_are_private(tmp_path: Path) -> None:
    """Every file that holds the token or the control store is 0600 in a 0700 folder, and the
    token is nowhere in the store's bytes; a head started again on the store keeps the token."""
    freight_cli = str(Path(sys.executable).with_name("freight"))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    storage = state / "control.db"
    with short_temp_dir() as tmp:
        env = _cli_env(tmp)
        start = [freight_cli, "start", "--head", "--port", str(_free_port()), "--num-cpus", "1"]
        start += ["--storage", str(storage)]

        def run(*cmd: str) -> None:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]

        def check_files() -> str:
            session = (tmp / "session_latest").resolve()
            token = (session / "token").read_text()
            assert _mode(tmp) == 0o700 and _mode(session) == 0o700 and _mode(state) == 0o700
            assert _mode(session / "token") == 0o600
            store_files = sorted(p.name for p in state.iterdir())
            assert store_files == [
                "control.db", "control.db-shm", "control.db-wal", "control.db.token"
            ]  # fmt: skip
            for p in state.iterdir():
                assert _mode(p) == 0o600, p
                if p.name != "control.db.token":
                    assert token.encode() not in p.read_bytes(), f"the token is in {p}"
            assert (state / "control.db.token").read_text() == token
            return token

        try:
            run(*start)
            first = check_files()
            run(freight_cli, "stop")
            run(*start)
            assert check_files() == first
        finally:
            subprocess.run([freight_cli, "stop"], env=env, capture_output=True, timeout=120)


@pytest.mark.parametrize("damage", ["empty", "not sqlite", "a bad row"])
def test_freight_start_refuses_a_damaged_control_store(tmp_path: Path, damage: str) -> None:
    storage = tmp_path / "control.db"
    if damage == "a bad row":  # a placement group the head cannot decode
        from freight.head.control_store import ControlStore
        from freight.head.events import EventStore
        from freight.head.placement_groups import KV_NAMESPACE

        with ControlStore(storage) as store:
            EventStore(store)  # its tables, as a head that ran leaves them
            store.kv_put(KV_NAMESPACE, "pg1", b"\xff\xff\xff\xff")
    else:
        storage.write_bytes(b"" if damage == "empty" else b"\x00garbage" * 1000)
    before = storage.read_bytes()
    freight_cli = str(Path(sys.executable).with_name("freight"))
    with short_temp_dir() as tmp:
        try:
            done = subprocess.run(
                [freight_cli, "start", "--head", "--port", "0", "--storage", str(storage)],
                capture_output=True, text=True, env=_cli_env(tmp), timeout=120,
            )  # fmt: skip
            stopped = subprocess.run(
                [freight_cli, "stop"], env=_cli_env(tmp), capture_output=True, text=True
            )
        finally:
            subprocess.run([freight_cli, "stop"], env=_cli_env(tmp), capture_output=True)
    assert done.returncode != 0
    assert "stopped 0 process(es)" in stopped.stdout  # nothing was left running
    if damage == "a bad row":
        assert f"the control store {storage} has a row it cannot read: kv" in done.stderr
        assert "key='pg1'" in done.stderr and "DELETE FROM kv WHERE" in done.stderr
    else:
        assert f"freight start: the control store {storage} is" in done.stderr
    assert "Traceback" not in done.stderr
    assert storage.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["control.db"]


def test_the_restart_recipe_reattaches_to_the_agent_that_outlived_the_head(
    tmp_path: Path,
) -> None:
    """Only the head dies; the README's recipe (`freight start --head --storage PATH` again)
    starts the head alone, and the cluster keeps the nodes and CPUs it had."""
    from freight.client.head_client import HeadClient
    from freight.client.head_client import pb_module as pb

    freight_cli = str(Path(sys.executable).with_name("freight"))
    port = str(_free_port())
    address = f"127.0.0.1:{port}"
    recipe = [freight_cli, "start", "--head", "--port", port, "--num-cpus", "2"]
    recipe += ["--storage", str(tmp_path / "control.db")]
    with short_temp_dir() as tmp:
        env = _cli_env(tmp)
        env.update(FREIGHT_HEALTH_CHECK_PERIOD_S="0.3", FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD="2")

        def run(*cmd: str) -> str:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
            return done.stdout

        def alive_cpus(heard_since: float = 0.0) -> dict[str, float]:
            """CPUs of the ALIVE nodes (with a heartbeat since ``heard_since``), by node."""
            token = (tmp / "session_latest" / "token").read_text()
            client = HeadClient(address, token)
            try:
                nodes = client.call("ListNodes", pb.ListNodesRequest(), timeout=10).nodes
            finally:
                client.close()
            return {
                n.node_id: n.total.amounts["CPU"]
                for n in nodes
                if n.state == "ALIVE" and n.last_heartbeat >= heard_since
            }

        try:
            run(*recipe)
            run(freight_cli, "start", "--address", address, "--num-cpus", "2")
            before = wait_for_condition(lambda: len(alive_cpus()) == 2 and alive_cpus(), 60)
            head_pid = json.loads((tmp / "session_latest" / "head.json").read_text())["pid"]
            os.kill(head_pid, signal.SIGKILL)
            wait_for_condition(lambda: not psutil.pid_exists(head_pid), 30, "the head to die")
            restarted = time.time()
            out = run(*recipe)
            # Both agents rejoin (they re-register at their next heartbeat), and nothing else.
            wait_for_condition(
                lambda: set(alive_cpus(restarted)) >= set(before), 60, "both agents to rejoin"
            )
            assert alive_cpus() == before
            assert sum(before.values()) == 4
            assert "outlived the head" in out
        finally:
            subprocess.run([freight_cli, "stop"], env=env, capture_output=True, timeout=120)
