"""Starting and stopping the head and node-agent processes of a cluster on this machine."""

from __future__ import annotations

import glob
import json
import os
import secrets
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from freight.config import settings
from freight.util.private_files import check_owned
from freight.util.process import is_recorded_process, read_ready
from freight.util.tokens import create_token

LATEST = "session_latest"
# In a session `freight start` made: what `freight stop` may stop (never a program's own
# init() cluster, whose session has none).
STARTED_FILE = "started.json"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes on Linux, including the terminating NUL


def new_session_dir() -> str:
    """Create a fresh session directory under FREIGHT_TEMP_DIR and return its path."""
    root = settings.temp_dir
    if not os.path.isdir(root):
        os.makedirs(root, mode=0o700, exist_ok=True)
    check_owned(os.path.realpath(root), "the session root (FREIGHT_TEMP_DIR)")
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


def process_files(session_dir: str) -> list[tuple[str, dict[str, Any]]]:
    """The files of ``session_dir`` that name a process (``head.json``, ``nodes/*.json``) with
    what they say, only those this user owns and no other user may write."""
    out = []
    for path in [os.path.join(session_dir, "head.json"), *glob.glob(f"{session_dir}/nodes/*.json")]:
        info = read_trusted_json(path)
        if info is not None and isinstance(info.get("pid"), int):
            out.append((path, info))
    return out


def session_alive(session_dir: str) -> bool:
    return any(is_recorded_process(info) for _, info in process_files(session_dir))


def remove_stale_files(session_dir: str) -> int:
    """Remove the files of ``session_dir`` that name a process which has ended (a crash leaves
    ``head.json``): nothing should take them for a live cluster, nor signal their pids."""
    removed = 0
    for path, info in process_files(session_dir):
        if not is_recorded_process(info):
            try:
                os.unlink(path)
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def sweep_stale_segments(root: str) -> int:
    """Remove object-store folders of sessions under ``root`` with no live process left.

    A node agent killed with SIGKILL cannot remove its shared-memory folder; the next session
    started on the machine does it.
    """
    removed = 0
    for shm_dir in glob.glob(os.path.join(settings.shm_dir, "freight-session_*")):
        session = os.path.join(root, os.path.basename(shm_dir).removeprefix("freight-"))
        if os.path.isdir(session) and not session_alive(session):
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
    """The session ``freight start --head`` made last on this machine (``session_latest``), or
    None. Raises :class:`UntrustedPath` when the session root, the link or the folder it names
    is another user's or open to their writes: a planted folder must not name the cluster."""
    root = settings.temp_dir
    link = os.path.join(root, LATEST)
    if not os.path.exists(link):
        return None
    check_owned(os.path.realpath(root), "the session root (FREIGHT_TEMP_DIR)")
    check_owned(link, "the session link")
    session = os.path.realpath(link)
    check_owned(session, "the session folder")
    return session


def auto_head() -> tuple[str, dict[str, Any]] | None:
    """(session dir, ``head.json``) of the cluster ``address="auto"`` means: the latest session
    (checked as :func:`latest_session` does) while its head runs; None if there is none. A
    ``head.json`` whose head has ended is removed."""
    session = latest_session()
    if session is None:
        return None
    path = os.path.join(session, "head.json")
    info = read_trusted_json(path)
    if info is None:
        return None
    if not info.get("remote") and not is_recorded_process(info):
        remove_stale_files(session)
        return None
    return session, info


def find_session_for(address: str) -> str | None:
    """The local session directory whose head listens on ``address``, if any (only this user's
    own sessions count)."""
    root = settings.temp_dir
    try:
        names = sorted(os.listdir(root), reverse=True)
    except OSError:
        return None
    for name in names:
        if not name.startswith("session_2"):
            continue
        info = read_trusted_json(os.path.join(root, name, "head.json"))
        # A joined node's folder names its head too ("remote"): the head's own folder counts.
        if info and info.get("address") == address and not info.get("remote"):
            return os.path.join(root, name)
    return None


def read_trusted_json(path: str) -> dict[str, Any] | None:
    """``read_json`` of a file this user owns in a folder no other user may write; None for
    any other (or a missing) file."""
    try:
        check_owned(os.path.dirname(path), "the folder")
        check_owned(path, "the file")
    except OSError:
        return None
    return read_json(path)


def read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class Processes:
    """The processes this launcher started, to stop them (and only them) later."""

    session_dir: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    head_address: str = ""
    node_id: str = ""


@dataclass
class _Starting:
    """A process that was started and has not said it is ready yet."""

    proc: subprocess.Popen[bytes]
    what: str  # "head", "node agent"
    log: str  # its stderr file, quoted when it fails
    ready: int  # read end of its ready pipe


def _spawn(
    args: list[str],
    session_dir: str,
    log_name: str,
    attached: bool,
    pass_fds: tuple[int, ...] = (),
    env: dict[str, str] | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m <args>`` with its output in the session's logs; ``wrap`` turns the
    command into the one to run (e.g. inside a network namespace)."""
    log = open(os.path.join(session_dir, "logs", f"{log_name}.err"), "ab")  # noqa: SIM115
    # An attached process asks Linux itself to end it with its parent: Python code between
    # fork and exec (preexec_fn) can crash the child of a process with gRPC threads.
    argv = [sys.executable, "-m", *args, *(["--die-with-parent"] if attached else [])]
    try:
        return subprocess.Popen(
            wrap(argv) if wrap is not None else argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            pass_fds=pass_fds,
            start_new_session=not attached,
        )
    finally:
        log.close()


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _wait_ready(starting: _Starting, others: tuple[_Starting, ...] = ()) -> dict[str, Any]:
    """Wait for ``starting``'s ready line; on failure say which process failed and why.

    The line arrives through a pipe, so this wakes at once; when the process dies first, the
    pipe ends and this reports its exit code and the tail of its log (or that of one of
    ``others`` that died, which is usually the cause).
    """
    try:
        info = read_ready(starting.ready, settings.start_timeout_s)
    except TimeoutError:
        raise TimeoutError(
            f"the {starting.what} did not start within {settings.start_timeout_s} s; "
            f"see {starting.log}"
        ) from None
    finally:
        _close(starting.ready)
    if info is not None:
        return info
    try:
        starting.proc.wait(timeout=5)  # its pipe ended: it has exited or is exiting
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"the {starting.what} closed its ready pipe without starting; see {starting.log}"
        ) from None
    failed = next((o for o in others if o.proc.poll() is not None), starting)
    raise RuntimeError(
        f"the {failed.what} exited with code {failed.proc.returncode} while starting:\n"
        f"{_tail(failed.log)}"
    )


def _tail(path: str, n: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return "(no log)"


def _head_args(
    session_dir: str, port: int, cluster_name: str, bind: str, metrics_port: int, storage: str = ""
) -> list[str]:
    return [
        "freight.head",
        *(["--storage", storage] if storage else []),
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


def _agent_args(
    session_dir: str,
    node_id: str,
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
    head_node: bool,
    labels: dict[str, str] | None = None,
    node_ip: str = "",
) -> list[str]:
    args = ["freight.node", "--session-dir", session_dir, "--node-id", node_id]
    if labels:
        args += ["--labels", json.dumps(labels)]
    if node_ip:
        args += ["--node-ip", node_ip, "--bind", node_ip]
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
    return args


def _start_head(
    session_dir: str,
    port: int,
    cluster_name: str,
    attached: bool,
    bind: str,
    metrics_port: int,
    ready_w: int | None = None,
    storage: str = "",
) -> _Starting:
    """Start the head with a ready pipe; with ``ready_w``, the head writes to that one instead
    (the caller keeps the read end, which has no use here: ``ready`` is then -1)."""
    r, w = os.pipe() if ready_w is None else (-1, ready_w)
    head_args = _head_args(session_dir, port, cluster_name, bind, metrics_port, storage)
    args = [*head_args, "--ready-fd", str(w)]
    try:
        proc = _spawn(args, session_dir, "head", attached, (w,))
    except BaseException:
        _close(r)
        raise
    finally:
        if ready_w is None:
            _close(w)
    return _Starting(proc, "head", os.path.join(session_dir, "logs", "head.err"), r)


def _start_agent(
    session_dir: str,
    args: list[str],
    node_id: str,
    attached: bool,
    head_fd: int | None = None,
    env: dict[str, str] | None = None,
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> _Starting:
    r, w = os.pipe()
    args = [*args, "--ready-fd", str(w)]
    fds = (w,) if head_fd is None else (w, head_fd)
    if head_fd is not None:
        args += ["--head-ready-fd", str(head_fd)]
    log = f"agent-{node_id[:12]}"
    try:
        proc = _spawn(args, session_dir, log, attached, fds, env, wrap)
    except BaseException:
        _close(r)
        raise
    finally:
        _close(w)
    return _Starting(proc, "node agent", os.path.join(session_dir, "logs", f"{log}.err"), r)


def start_head(
    session_dir: str,
    port: int = 0,
    cluster_name: str = "freight",
    attached: bool = True,
    bind: str = "127.0.0.1",
    metrics_port: int = 0,
    storage: str = "",
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a head and wait until it serves; return its process and address."""
    head = _start_head(
        session_dir, port, cluster_name, attached, bind, metrics_port, storage=storage
    )
    try:
        info = _wait_ready(head)
    except BaseException:
        stop_processes([head.proc])
        raise
    return head.proc, str(info["address"])


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
    labels: dict[str, str] | None = None,
    node_ip: str = "",
    token: str = "",
    wrap: Callable[[list[str]], list[str]] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a node agent for the head at ``head_address``; wait until it has registered.

    ``token`` (else the session's) goes to the agent in its environment; ``wrap`` turns the
    command into the one to run (e.g. inside a network namespace)."""
    node_id = node_id or uuid.uuid4().hex
    args = _agent_args(
        session_dir,
        node_id,
        num_cpus,
        num_gpus,
        resources,
        object_store_memory,
        head_node,
        labels,
        node_ip,
    )
    env = {**os.environ, "FREIGHT_TOKEN": token} if token else None
    agent = _start_agent(
        session_dir, [*args, "--head", head_address], node_id, attached, env=env, wrap=wrap
    )
    try:
        _wait_ready(agent)
    except BaseException:
        stop_processes([agent.proc])
        raise
    return agent.proc, node_id


def start_cluster(
    session_dir: str,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    attached: bool = True,
    port: int = 0,
    cluster_name: str = "freight",
    bind: str = "127.0.0.1",
    metrics_port: int = 0,
    while_starting: Callable[[], object] | None = None,
    labels: dict[str, str] | None = None,
    storage: str = "",
) -> Processes:
    """Start a head and this machine's node agent at the same time; wait until both serve.

    The agent gets the head's address through a pipe the head writes to once it listens, so
    the two import and set up side by side; this returns once the agent has registered.
    ``while_starting`` runs in between (a driver loads what it needs to connect meanwhile).
    """
    node_id = uuid.uuid4().hex
    procs = Processes(session_dir, node_id=node_id)
    head_r, head_w = os.pipe()  # the head tells the agent its address through this pipe
    try:
        try:
            head = _start_head(
                session_dir,
                port,
                cluster_name,
                attached,
                bind,
                metrics_port,
                ready_w=head_w,
                storage=storage,
            )
            procs.procs.append(head.proc)
        finally:
            _close(head_w)
        try:
            # The head machine's agent serves other nodes on the head's address when it is a
            # single one (not a wildcard), else on loopback.
            node_ip = "" if bind in ("", "0.0.0.0", "::", "[::]", "127.0.0.1") else bind
            args = _agent_args(
                session_dir,
                node_id,
                num_cpus,
                num_gpus,
                resources,
                object_store_memory,
                True,
                labels,
                node_ip,
            )
            # Its workers may start before the head has written head.json, where processes
            # otherwise find the cluster's name (for their traces): hand it to them here.
            env = {**os.environ, "FREIGHT_CLUSTER_NAME": cluster_name}
            agent = _start_agent(session_dir, args, node_id, attached, head_fd=head_r, env=env)
            procs.procs.insert(0, agent.proc)
        finally:
            _close(head_r)
        if while_starting is not None:
            while_starting()
        info = _wait_ready(agent, (head,))
        procs.head_address = str(info.get("head_address") or "")
        if not procs.head_address:
            raise RuntimeError("the node agent started without telling the head's address")
    except BaseException:
        stop_processes(procs.procs)
        raise
    return procs


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
        _wait_exit(p, deadline)
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait_exit(proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Block until ``proc`` exits or the deadline passes, woken by the exit itself (a pidfd)
    rather than by ``Popen.wait``'s polling; a no-op where pidfds are missing."""
    if proc.poll() is not None:
        return
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return
    try:
        select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
    finally:
        os.close(fd)
