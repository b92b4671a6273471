"""What `freight stop` and ``init(address="auto")`` trust: only this user's own session files,
only processes that are the ones those files recorded, only clusters `freight start` started."""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import freight
from freight.testing import patched_environ, short_temp_dir, wait_for_condition

CLI = str(Path(sys.executable).with_name("freight"))
OTHER_USER = "freight-other"  # a local user that is not the one running the tests


def _env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FREIGHT_TOKEN", "FREIGHT_ADDRESS")}
    env["FREIGHT_TEMP_DIR"] = str(root)
    return env


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([CLI, *args], capture_output=True, text=True, env=_env(root), timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


@pytest.fixture
def root() -> Iterator[Path]:
    with short_temp_dir() as path:
        try:
            yield path
        finally:
            subprocess.run([CLI, "stop"], env=_env(path), capture_output=True, timeout=120)


def _other_user() -> pwd.struct_passwd:
    """A second local user, made for the test when missing (that takes root)."""
    try:
        return pwd.getpwnam(OTHER_USER)
    except KeyError:
        pass
    if os.geteuid() != 0:
        pytest.skip(f"needs a second local user: run as root, or create {OTHER_USER!r}")
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", OTHER_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(OTHER_USER)


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for folder, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)


def test_auto_refuses_a_session_root_another_user_planted(root: Path) -> None:
    """Another local user made the session root and runs a head there: `address="auto"` must
    not join it (the driver would run its code on that user's cluster)."""
    other = _other_user()
    if os.geteuid() == other.pw_uid:
        pytest.skip(f"the tests run as {OTHER_USER!r} itself")
    _cli(root, "start", "--head", "--port", "0", "--num-cpus", "1")
    _chown_tree(root, other.pw_uid, other.pw_gid)  # as if that user had made it all
    try:
        with (
            patched_environ(FREIGHT_TEMP_DIR=str(root), FREIGHT_ADDRESS=None),
            pytest.raises(PermissionError) as e,
        ):
            freight.init(address="auto")
            freight.shutdown()  # it joined: the assertion below fails
        message = str(e.value)
        assert message.startswith("init(address='auto'): freight: the session root")
        assert f"belongs to user {OTHER_USER!r}" in message and "not to you" in message
        assert "FREIGHT_TEMP_DIR" in message
    finally:
        _chown_tree(root, os.geteuid(), os.getegid())  # to stop it


def test_freight_stop_leaves_a_process_that_got_a_dead_heads_pid_alone(root: Path) -> None:
    """The head crashed (its head.json stays) and its pid now belongs to an unrelated process:
    `freight stop` stops the agent, leaves that process alone and removes the stale files."""
    _cli(root, "start", "--head", "--port", "0", "--num-cpus", "1")
    session = (root / "session_latest").resolve()
    head_file = session / "head.json"
    head = json.loads(head_file.read_text())
    (agent_file,) = (session / "nodes").glob("*.json")
    agent = psutil.Process(json.loads(agent_file.read_text())["pid"])
    os.kill(head["pid"], signal.SIGKILL)
    wait_for_condition(lambda: not psutil.pid_exists(head["pid"]), 30, "the head to die")
    unrelated = subprocess.Popen(["sleep", "600"])
    try:
        head_file.write_text(json.dumps({**head, "pid": unrelated.pid}))  # the pid was reused
        out = _cli(root, "stop").stdout
        assert unrelated.poll() is None, "freight stop killed a process it did not start"
        assert f"left pid {unrelated.pid} alone" in out
        assert not agent.is_running() or agent.status() == psutil.STATUS_ZOMBIE
        assert not head_file.exists() and not list((session / "nodes").iterdir())
    finally:
        unrelated.kill()
        unrelated.wait()


PRIVATE_DRIVER = """
    import sys
    import freight

    freight.init(num_cpus=1)

    @freight.remote
    def add(a, b):
        return a + b

    print(freight.get(add.remote(1, 2)), flush=True)
    sys.stdin.readline()  # `freight stop` runs meanwhile
    print(freight.get(add.remote(3, 4), timeout=60), flush=True)
"""


def test_freight_stop_leaves_a_programs_own_cluster_running(root: Path) -> None:
    _cli(root, "start", "--head", "--port", "0", "--num-cpus", "1")
    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(PRIVATE_DRIVER)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=_env(root),
    ) as driver:  # fmt: skip
        assert driver.stdout is not None and driver.stdin is not None
        try:
            assert driver.stdout.readline().strip() == "3"
            out = _cli(root, "stop").stdout
            assert "stopped 2 process(es)" in out  # the head and agent `freight start` started
            out, err = driver.communicate("\n", timeout=120)
            assert out.strip() == "7", err[-3000:]
            assert driver.returncode == 0
        finally:
            driver.kill()
