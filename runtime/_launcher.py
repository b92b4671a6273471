"""Starting and stopping the head and node-agent processes of a cluster on this machine."""

from __future__ import annotations

import ctypes
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from freight.config import settings
from freight.util.grpc_auth import create_token

LATEST = "session_latest"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


def new_session_dir() -> str:
    """Create a fresh session directory under FREIGHT_TEMP_DIR and return its path."""
    root = settings.temp_dir
    os.makedirs(root, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    path = os.path.join(root, f"session_{stamp}_{os.getpid()}_{secrets.token_hex(3)}")
    longest = os.path.join(path, "sockets", "worker-" + "x" * 16 + ".sock")
    if len(longest.encode()) > MAX_UNIX_PATH:
        raise ValueError(
            f"FREIGHT_TEMP_DIR={root!r} is too long: session sockets would have "
            f"{len(longest.encode())}-byte paths, and Unix sockets allow {MAX_UNIX_PATH}. "
            "Point FREIGHT_TEMP_DIR at a shorter folder (e.g. /tmp/freight-sessions)."
        )
    sweep_stale_segments(root)
    for sub in ("", "sockets", "logs", "nodes"):
        os.makedirs(os.path.join(path, sub), mode=0o700, exist_ok=True)
    create_token(path)
    return path


def _session_alive(session_dir: str) -> bool:
    for path in [os.path.join(session_dir, "head.json"), *glob.glob(f"{session_dir}/nodes/*.json")]:
        info = read_json(path)
        pid = info.get("pid") if info else None
        if isinstance(pid, int) and os.path.exists(f"/proc/{pid}"):
            return True
    return False


def sweep_stale_segments(root: str) -> int:
    """Remove object-store folders of sessions under ``root`` with no live process left.

    A node agent killed with SIGKILL cannot remove its shared-memory folder; the next session
    started on the machine does it.
    """
    removed = 0
    for shm_dir in glob.glob(os.path.join(settings.shm_dir, "freight-session_*")):
        session = os.path.join(root, os.path.basename(shm_dir).removeprefix("freight-"))
        if os.path.isdir(session) and not _session_alive(session):
            shutil.rmtree(shm_dir, ignore_errors=True)
            removed += 1
    return removed


def point_latest(session_dir: str) -> None:
    link = os.path.join(settings.temp_dir, LATEST)
    tmp = f"{link}.{os.getpid()}"
    try:
        os.symlink(session_dir, tmp)
        os.replace(tmp, link)
    except OSError:
        pass


def latest_session() -> str | None:
    link = os.path.join(settings.temp_dir, LATEST)
    return os.path.realpath(link) if os.path.exists(link) else None


def find_session_for(address: str) -> str | None:
    """The local session directory whose head listens on ``address``, if any."""
    root = settings.temp_dir
    try:
        names = sorted(os.listdir(root), reverse=True)
    except OSError:
        return None
    for name in names:
        if not name.startswith("session_2"):
            continue
        info = read_json(os.path.join(root, name, "head.json"))
        if info and info.get("address") == address:
            return os.path.join(root, name)
    return None


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


@dataclass
class Processes:
    """The processes this launcher started, to stop them (and only them) later."""

    session_dir: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    head_address: str = ""
    node_id: str = ""


def _spawn(
    args: list[str], session_dir: str, log_name: str, attached: bool
) -> subprocess.Popen[bytes]:
    log = open(os.path.join(session_dir, "logs", f"{log_name}.err"), "ab")  # noqa: SIM115
    try:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            preexec_fn=_die_with_parent if attached else None,
            start_new_session=not attached,
        )
    finally:
        log.close()


def _wait_for_file(path: str, proc: subprocess.Popen[bytes], what: str, log: str) -> dict[str, Any]:
    deadline = time.monotonic() + settings.start_timeout_s
    delay = 0.002
    while time.monotonic() < deadline:
        info = read_json(path)
        if info is not None:
            return info
        if proc.poll() is not None:
            tail = _tail(log)
            raise RuntimeError(
                f"the {what} exited with code {proc.returncode} while starting:\n{tail}"
            )
        time.sleep(delay)  # waiting for another process to write its ready file
        delay = min(delay * 2, 0.05)
    raise TimeoutError(f"the {what} did not start within {settings.start_timeout_s} s; see {log}")


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def start_head(
    session_dir: str,
    port: int = 0,
    cluster_name: str = "freight",
    attached: bool = True,
    bind: str = "127.0.0.1",
    metrics_port: int = 0,
) -> tuple[subprocess.Popen[bytes], str]:
    args = [
        "freight.head",
        "--session-dir",
        session_dir,
        "--port",
        str(port),
        "--bind",
        bind,
        "--cluster-name",
        cluster_name,
        "--metrics-port",
        str(metrics_port),
    ]
    proc = _spawn(args, session_dir, "head", attached)
    info = _wait_for_file(
        os.path.join(session_dir, "head.json"),
        proc,
        "head",
        os.path.join(session_dir, "logs", "head.err"),
    )
    return proc, str(info["address"])


def start_agent(
    session_dir: str,
    head_address: str,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    head_node: bool = True,
    attached: bool = True,
    node_id: str | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    node_id = node_id or uuid.uuid4().hex
    args = [
        "freight.node",
        "--session-dir",
        session_dir,
        "--node-id",
        node_id,
        "--head",
        head_address,
    ]
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if num_gpus:
        args += ["--num-gpus", str(num_gpus)]
    if resources:
        args += ["--resources", json.dumps(resources)]
    if object_store_memory:
        args += ["--object-store-memory", str(int(object_store_memory))]
    if head_node:
        args.append("--head-node")
    log = f"agent-{node_id[:12]}"
    proc = _spawn(args, session_dir, log, attached)
    _wait_for_file(
        os.path.join(session_dir, "nodes", f"{node_id}.json"),
        proc,
        "node agent",
        os.path.join(session_dir, "logs", f"{log}.err"),
    )
    return proc, node_id


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 5.0) -> None:
    """SIGTERM each process, wait, then SIGKILL what is left; never leave one behind."""
    for p in procs:
        if p.poll() is None:
            try:
                p.terminate()
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
