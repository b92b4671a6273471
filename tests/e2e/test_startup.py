"""Starting a cluster: head and agent side by side, workers from the fork server, failures named.

What is checked here is behaviour (a first task result, who the workers' parent is, what their
command lines say, which error a failed start gives), never how long it takes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from freight.testing import short_temp_dir
from freight.testing import wait_for_condition as wait_until


@pytest.fixture
def temp_dir() -> Iterator[Path]:
    with short_temp_dir() as path:
        yield path


def run_python(
    code: str, temp_dir: Path, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir), PYTHONUNBUFFERED="1", **env)
    full_env.pop("FREIGHT_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=full_env,
        stdin=subprocess.DEVNULL,
    )


def last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


FIRST_TASK = """
    import json, os, sys
    import psutil
    import freight as ray

    info = ray.init(num_cpus=2)

    @ray.remote
    def where():
        return os.getpid()

    pid = ray.get(where.remote())
    me = psutil.Process()
    agent = next(p for p in me.children() if "freight.node" in p.cmdline())
    workers = [p for p in agent.children() if "freight.worker" in p.cmdline()]
    forks = [p for p in agent.children() if "freight.worker.zygote" in p.cmdline()]
    print(json.dumps({
        "session_dir": info["session_dir"],
        "node_id": info["node_id"],
        "task_pid": pid,
        "agent_pid": agent.pid,
        "workers": {str(p.pid): p.cmdline() for p in workers},
        "fork_servers": len(forks),
        "executable": sys.executable,
    }))
    sys.stdout.flush()
    ray.shutdown()
"""


@pytest.mark.parametrize("fork_server", ["1", "0"], ids=["forked", "exec"])
def test_a_fresh_interpreter_gets_a_first_task_result(temp_dir: Path, fork_server: str) -> None:
    report = last_json(run_python(FIRST_TASK, temp_dir, FREIGHT_FORK_SERVER=fork_server))
    session_dir = report["session_dir"]
    workers = report["workers"]
    assert str(report["task_pid"]) in workers, "the task did not run in one of the agent's workers"
    assert report["fork_servers"] == (1 if fork_server == "1" else 0)
    # Forked or not, a worker is the agent's child and reads like `python -m freight.worker ...`.
    socket_path = os.path.join(session_dir, "sockets", f"agent-{report['node_id'][:12]}.sock")
    for cmdline in workers.values():
        worker_id = cmdline[-1]
        assert cmdline == [
            report["executable"],
            "-m",
            "freight.worker",
            session_dir,
            report["node_id"],
            socket_path,
            worker_id,
        ]
        assert (Path(session_dir) / "logs" / f"worker-{worker_id}.out").is_file()
    left = [p for p in psutil.process_iter(["cmdline"]) if session_dir in (p.info["cmdline"] or [])]
    assert not left, [p.info["cmdline"] for p in left]


def test_a_head_that_cannot_start_is_named_in_the_error(temp_dir: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    try:
        proc = run_python(
            """
            import sys
            from freight import _launcher
            session_dir = _launcher.new_session_dir()
            print(session_dir, flush=True)
            try:
                _launcher.start_cluster(session_dir, num_cpus=1, port=int(sys.argv[1]))
            except RuntimeError as e:
                print("ERROR", e)
            """,
            temp_dir,
            str(busy_port),
        )
    finally:
        busy.close()
    assert proc.returncode == 0, proc.stderr[-4000:]
    session_dir, _, error = proc.stdout.partition("\n")
    assert error.startswith("ERROR the head exited with code 1 while starting"), proc.stdout
    assert "bind" in error and str(busy_port) in error, error
    # The agent started beside it learned that the head failed, and is gone too.
    left = [p for p in psutil.process_iter(["cmdline"]) if session_dir in (p.info["cmdline"] or [])]
    assert not left, [p.info["cmdline"] for p in left]


FORK_SERVER = """
    import json, os, sys
    from freight import _launcher
    from freight.node import fork_server as forks
    from freight.testing import wait_for_condition
    from freight.util.process import become_subreaper

    assert become_subreaper()
    session_dir = _launcher.new_session_dir()
    node_id = "f" * 32
    server = forks.ForkServer(
        session_dir, node_id, forks.agent_socket_path(session_dir, node_id), "token"
    )
    worker = server.spawn("0123456789abcdef")
    # There is no agent: the worker fails to connect to it and exits with code 1.
    code = worker.wait(timeout=60)
    pid = worker.pid

    # A worker's own orphan comes to this process (the subreaper) and is reaped here.
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)
    reaped = wait_for_condition(lambda: forks.reap_orphans({server.proc.pid}), 30, "an orphan")

    server.proc.kill()
    server.proc.wait()
    late = server.spawn("fedcba9876543210")
    print(json.dumps({
        "code": code,
        "pid": pid,
        "log": open(os.path.join(session_dir, "logs", "worker-0123456789abcdef.out")).read(),
        "reaped": reaped,
        "late": late is None,
    }))
"""


def test_fork_server_forks_children_of_the_subreaper(temp_dir: Path) -> None:
    report = last_json(run_python(FORK_SERVER, temp_dir))
    assert report["pid"] > 0
    assert report["code"] == 1, report["log"]
    assert "Traceback" in report["log"] or "agent" in report["log"], report["log"]
    assert report["reaped"] == 1
    assert report["late"], "a dead fork server took a request"


def test_start_head_then_a_driver_joins_with_auto(temp_dir: Path) -> None:
    freight = str(Path(sys.executable).with_name("freight"))
    env = dict(os.environ, FREIGHT_TEMP_DIR=str(temp_dir))
    env.pop("FREIGHT_ADDRESS", None)
    start = subprocess.run(
        [freight, "start", "--head", "--port", "0", "--num-cpus", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert start.returncode == 0, start.stderr[-4000:]
        report = last_json(
            run_python(
                """
                import json
                import freight
                info = freight.init(address="auto")
                square = freight.remote(lambda x: x * x)
                print(json.dumps({"value": freight.get(square.remote(7)), **info}))
                freight.shutdown()
                """,
                temp_dir,
            )
        )
        assert report["value"] == 49
        assert report["address"] in start.stdout
    finally:
        stop = subprocess.run(
            [freight, "stop"], capture_output=True, text=True, timeout=120, env=env
        )
    assert stop.returncode == 0, stop.stderr
    wait_until(
        lambda: (
            not [
                p
                for p in psutil.process_iter(["cmdline"])
                if any(str(temp_dir) in a for a in p.info["cmdline"] or [])
            ]
        ),
        30,
        "the processes `freight stop` stopped to exit",
    )
