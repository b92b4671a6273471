"""The node agent's side of the worker fork server (:mod:`freight.worker.zygote`).

``python -m freight.node`` starts the fork server before it imports the agent
(:func:`start_early`), so the two import side by side; the agent's :class:`WorkerPool` then
adopts it and asks it for workers instead of starting interpreters. A forked worker is a
:class:`ForkedProcess`, which offers the parts of :class:`subprocess.Popen` the pool uses. When
there is no fork server (turned off, not Linux, or it died), the pool starts workers as before.
See docs/decisions/0013-worker-fork-server.md.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from freight.worker.zygote import ZYGOTE_MODULE, pad_argument

FORK_FAILED = 1  # the exit code a worker that could not be forked reports

_early: ForkServer | None = None


def worker_env(token: str | None) -> dict[str, str]:
    """The environment of a worker process (forked or started).

    ``None``: the token is not known yet; the fork server reads it and puts it in its workers'
    environment itself.
    """
    env = dict(os.environ)
    if token is not None:
        env["FREIGHT_TOKEN"] = token
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def agent_socket_path(session_dir: str, node_id: str) -> str:
    """The data-plane socket of the node agent ``node_id`` (as :class:`NodeAgent` names it)."""
    return os.path.join(session_dir, "sockets", f"agent-{node_id[:12]}.sock")


class ForkServer:
    """A running fork server: send it worker ids, read back the pids of the forked workers."""

    def __init__(
        self, session_dir: str, node_id: str, agent_socket: str, token: str | None = None
    ) -> None:
        self.key = (session_dir, node_id, agent_socket)
        ours, theirs = socket.socketpair()
        log_path = os.path.join(session_dir, "logs", f"zygote-{node_id[:12]}.err")
        try:
            with open(log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        ZYGOTE_MODULE,
                        session_dir,
                        node_id,
                        agent_socket,
                        pad_argument(),
                    ],
                    stdin=theirs,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=worker_env(token),
                    close_fds=True,
                )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.lock = threading.RLock()
        self.waiting: dict[str, ForkedProcess] = {}
        self.buf = b""
        self.failed = False

    def alive(self) -> bool:
        return not self.failed and self.proc.poll() is None

    def spawn(self, worker_id: str) -> ForkedProcess | None:
        """Ask for a worker; None if the fork server cannot take the request."""
        with self.lock:
            if not self.alive():
                return None
            try:
                self.sock.sendall(f"spawn {worker_id}\n".encode())
            except OSError:
                self._fail()
                return None
            handle = ForkedProcess(worker_id, self)
            self.waiting[worker_id] = handle
            return handle

    def pump(self, timeout: float = 0.0) -> None:
        """Take the answers that have arrived; wait up to ``timeout`` for one if some are due."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.waiting and not self.failed:
                try:
                    chunk = self.sock.recv(4096)
                except BlockingIOError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    select.select([self.sock], [], [], left)
                    continue
                except OSError:
                    chunk = b""
                if not chunk:  # the fork server is gone: no more answers will come
                    self._fail()
                    return
                self.buf += chunk
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    worker_id, _, pid = line.decode(errors="replace").partition(" ")
                    handle = self.waiting.pop(worker_id, None)
                    if handle is not None:
                        handle._born(int(pid) if pid.isdigit() else 0)
                deadline = time.monotonic()  # something came: take the rest without waiting

    def _fail(self) -> None:
        self.failed = True
        waiting, self.waiting = self.waiting, {}
        for handle in waiting.values():
            handle._born(0)

    def stop(self) -> None:
        """End the fork server at once; the workers it forked are not affected.

        Requests it has not answered are dropped (their handles report ``FORK_FAILED``).
        """
        with self.lock:
            if self.proc.poll() is None:
                self.proc.kill()  # it holds no state: a kill is the quickest clean end
            self.proc.wait()
            self.pump()  # answers it wrote before it went; the rest never come
            self._fail()
            self.sock.close()


class ForkedProcess:
    """A worker forked by the fork server, with the parts of ``subprocess.Popen`` the pool uses.

    Its pid is known once the fork server has answered; signals sent before that are delivered
    then. It is a child of this process (the subreaper), so ``waitpid`` reaps it.
    """

    def __init__(self, worker_id: str, server: ForkServer) -> None:
        self.args = [ZYGOTE_MODULE, worker_id]
        self.returncode: int | None = None
        self._pid: int | None = None
        self._server = server
        self._signals: list[int] = []

    @property
    def pid(self) -> int:
        """The worker's pid; 0 while the fork server has not answered (or could not fork)."""
        if self._pid is None:
            self._server.pump()
        return self._pid or 0

    def _born(self, pid: int) -> None:
        self._pid = pid
        if not pid:
            self.returncode = FORK_FAILED
            return
        for sig in self._signals:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        self._signals.clear()

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        pid = self.pid
        if not pid:
            return self.returncode
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            self.returncode = 0  # reaped elsewhere; subprocess.Popen says 0 then too
            return 0
        if done:
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            if self._pid is None:
                self._server.pump(min(left, 1.0))
            else:
                _wait_exit(self._pid, min(left, 1.0))
        return self.returncode  # type: ignore[return-value]  # set by poll()

    def send_signal(self, sig: int) -> None:
        if self.poll() is not None:
            return
        if self._pid:
            os.kill(self._pid, sig)
        else:
            self._signals.append(sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _wait_exit(pid: int, timeout: float) -> None:
    """Block until ``pid`` exits or ``timeout`` passes (a pidfd where Linux has them)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        time.sleep(min(timeout, 0.01))  # no pidfd: poll the child's state at a short interval
        return
    try:
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


def reap_orphans(known: set[int]) -> int:
    """Reap exited children that are not in ``known``; returns how many.

    As a subreaper, the agent inherits the orphaned descendants of its workers (a task's own
    subprocesses, say); without this they would stay zombies.
    """
    reaped = 0
    for _ in range(1000):
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            break
        if info is None or info.si_pid in known:
            break  # one of ours: its handle reaps it
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            pass
        reaped += 1
    return reaped


def start_early(session_dir: str, node_id: str) -> ForkServer | None:
    """Start the fork server for the agent about to run in this process, before its imports
    (this module and its imports are the standard library's and light ones)."""
    global _early
    from freight.util.process import become_subreaper

    if not sys.platform.startswith("linux") or not become_subreaper():
        return None
    try:
        _early = ForkServer(session_dir, node_id, agent_socket_path(session_dir, node_id))
    except OSError:
        return None
    return _early


def adopt(session_dir: str, node_id: str, agent_socket: str) -> ForkServer | None:
    """The fork server :func:`start_early` started for this pool, if it matches it (its workers
    get the token the agent has: both read it from the same place)."""
    global _early
    server, _early = _early, None
    if server is None:
        return None
    if server.key != (session_dir, node_id, agent_socket) or not server.alive():
        server.stop()
        return None
    return server
