"""Starting and stopping worker processes for a node agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass


@dataclass
class WorkerProcess:
    worker_id: str
    popen: subprocess.Popen[bytes]
    log_path: str


class WorkerPool:
    """Spawns ``python -m freight.worker`` processes and keeps their handles for reaping."""

    def __init__(self, session_dir: str, node_id: str, agent_socket: str, token: str) -> None:
        self.session_dir = session_dir
        self.node_id = node_id
        self.agent_socket = agent_socket
        self.token = token
        self.procs: dict[str, WorkerProcess] = {}
        self.started_total = 0

    def spawn(self) -> str:
        worker_id = uuid.uuid4().hex[:16]
        log_path = os.path.join(self.session_dir, "logs", f"worker-{worker_id}.out")
        env = dict(os.environ)
        env["FREIGHT_TOKEN"] = self.token
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
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
                env=env,
                close_fds=True,
            )
        self.procs[worker_id] = WorkerProcess(worker_id, popen, log_path)
        self.started_total += 1
        return worker_id

    def pid(self, worker_id: str) -> int:
        p = self.procs.get(worker_id)
        return p.popen.pid if p else 0

    def kill(self, worker_id: str, force: bool = True) -> bool:
        p = self.procs.get(worker_id)
        if p is None or p.popen.poll() is not None:
            return False
        try:
            p.popen.send_signal(signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> list[tuple[str, int]]:
        """Collect exited workers: [(worker_id, returncode)]."""
        gone = []
        for wid, p in list(self.procs.items()):
            rc = p.popen.poll()
            if rc is not None:
                gone.append((wid, rc))
                del self.procs[wid]
        return gone

    def stop_all(self, timeout: float = 3.0) -> None:
        for p in self.procs.values():
            if p.popen.poll() is None:
                try:
                    p.popen.terminate()
                except ProcessLookupError:
                    pass
        for p in self.procs.values():
            try:
                p.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        self.procs.clear()
