"""Starting and stopping worker processes for a node agent.

Workers are forked by the fork server when the agent has one (:mod:`freight.node.fork_server`),
else started as new interpreters; either way each is a child of the agent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass

import psutil

from freight.observe.catalogue import OTHER, WORKER_CRASH_CAUSES
from freight.observe.recorder import RECORDER

from . import fork_server as forks


@dataclass
class WorkerProcess:
    worker_id: str
    popen: subprocess.Popen[bytes] | forks.ForkedProcess
    log_path: str


class WorkerPool:
    """Starts ``freight.worker`` processes and keeps their handles for reaping."""

    def __init__(self, session_dir: str, node_id: str, agent_socket: str, token: str) -> None:
        self.session_dir = session_dir
        self.node_id = node_id
        self.agent_socket = agent_socket
        self.token = token
        self.procs: dict[str, WorkerProcess] = {}
        self.started_total = 0
        # Crash accounting: a worker that exits without being asked to is a crash, and the next
        # spawn after a crash is its replacement (a restart).
        self.exit_requested: set[str] = set()
        self.lost: set[str] = set()
        self.owed_replacements = 0
        self.fork_server = forks.adopt(session_dir, node_id, agent_socket)

    def spawn(self) -> str:
        worker_id = uuid.uuid4().hex[:16]
        log_path = os.path.join(self.session_dir, "logs", f"worker-{worker_id}.out")
        forked = self.fork_server.spawn(worker_id) if self.fork_server is not None else None
        popen = forked or self._start(worker_id, log_path)
        self.procs[worker_id] = WorkerProcess(worker_id, popen, log_path)
        self.started_total += 1
        RECORDER.inc("freight_worker_starts_total")
        if self.owed_replacements:
            self.owed_replacements -= 1
            RECORDER.inc("freight_worker_restarts_total")
        return worker_id

    def _start(self, worker_id: str, log_path: str) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "freight.worker",
                    self.session_dir,
                    self.node_id,
                    self.agent_socket,
                    worker_id,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=forks.worker_env(self.token),
                close_fds=True,
            )

    def pid(self, worker_id: str) -> int:
        p = self.procs.get(worker_id)
        return p.popen.pid if p else 0

    def request_exit(self, worker_id: str) -> None:
        """The agent asked this worker to exit: its exit is not a crash."""
        if worker_id in self.procs:
            self.exit_requested.add(worker_id)

    def connection_lost(self, worker_id: str) -> None:
        """The worker's connection closed: make sure it is gone; unasked, a replacement is owed."""
        if worker_id in self.procs and worker_id not in self.exit_requested:
            self.lost.add(worker_id)
            self.owed_replacements += 1
        self.kill(worker_id, requested=False)

    def kill(self, worker_id: str, force: bool = True, requested: bool = True) -> bool:
        p = self.procs.get(worker_id)
        if p is None or p.popen.poll() is not None:
            return False
        if requested:
            self.exit_requested.add(worker_id)
        try:
            p.popen.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> list[tuple[str, int]]:
        """Collect exited workers: [(worker_id, returncode)]."""
        if self.fork_server is not None:
            self.fork_server.pump()  # pids of forked workers first: none is taken for an orphan
        gone = []
        for wid, p in list(self.procs.items()):
            rc = p.popen.poll()
            if rc is not None:
                gone.append((wid, rc))
                del self.procs[wid]
                if wid in self.exit_requested:
                    self.exit_requested.discard(wid)
                    continue
                RECORDER.inc("freight_worker_crashes_total", (exit_cause(rc),))
                if wid in self.lost:
                    self.lost.discard(wid)
                else:  # died before it connected: its replacement is owed from now on
                    self.owed_replacements += 1
        if self.fork_server is not None:
            self.fork_server.alive()  # reaps the fork server itself if it has exited
            known = {p.popen.pid for p in self.procs.values()} | {self.fork_server.proc.pid}
            forks.reap_orphans(known)
        return gone

    def stop_all(self, timeout: float = 3.0) -> None:
        self.exit_requested.update(self.procs)
        for p in self.procs.values():
            if p.popen.poll() is None:
                try:
                    p.popen.terminate()
                except ProcessLookupError:
                    pass
        if self.fork_server is not None:
            self.fork_server.stop()  # forks it had not answered yet never happen
        for p in self.procs.values():
            try:
                p.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        self.procs.clear()
        if self.fork_server is not None:
            # This agent is the subreaper: what is still its child now is a worker forked just
            # before the fork server ended (whose pid never came back), or a worker's orphan.
            _kill_children(timeout)


def _kill_children(timeout: float) -> None:
    """SIGKILL every child of this process and reap them."""
    children = psutil.Process().children()
    for child in children:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(children, timeout=timeout)


def exit_cause(returncode: int) -> str:
    """The crash counter's cause label: ``-9`` -> ``sigkill``, ``1`` -> ``exit_code_1``, and
    ``other`` for a signal or code outside the declared set, so the label stays bounded."""
    if returncode < 0:
        try:
            cause = signal.Signals(-returncode).name.lower()
        except ValueError:
            return OTHER
    else:
        cause = f"exit_code_{returncode}"
    return cause if cause in WORKER_CRASH_CAUSES else OTHER
