"""The rows of the agent's ``ListWorkers`` RPC: its worker slots, with each process's memory/CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from freight.protocol.generated import freight_pb2 as pb

if TYPE_CHECKING:
    import psutil


class WorkerInfoSource:
    """Builds ``WorkerInfo`` rows from an agent's lease table.

    It keeps one ``psutil.Process`` per worker pid, so ``cpu_percent`` measures the time since
    the previous listing (the first listing of a worker shows 0.0).
    """

    def __init__(self) -> None:
        self._procs: dict[int, psutil.Process] = {}

    def rows(self, agent: Any) -> list[pb.WorkerInfo]:
        """One row per worker slot of ``agent`` (a ``NodeAgent``)."""
        out = []
        seen: set[int] = set()
        workers = agent.leases.workers
        for w in list(workers.values()):
            rss, cpu, started = 0, 0.0, 0.0
            if w.pid:
                seen.add(w.pid)
                rss, cpu, started = self._usage(w.pid)
            out.append(
                pb.WorkerInfo(
                    worker_id=w.worker_id,
                    pid=w.pid,
                    state="BLOCKED" if w.blocked else w.state,
                    address=w.address,
                    actor_id=agent.actor_of_worker.get(w.worker_id, ""),
                    start_time=started or (w.transitions[0].time if w.transitions else 0.0),
                    rss_bytes=rss,
                    cpu_percent=cpu,
                    node_id=agent.node_id,
                    lease_holder=self._holder(agent, w.client) if w.state == "LEASED" else "",
                )
            )
        for pid in [p for p in self._procs if p not in seen]:
            del self._procs[pid]
        return out

    def _usage(self, pid: int) -> tuple[int, float, float]:
        import psutil  # loaded at the first listing, not at the agent's start-up

        proc = self._procs.get(pid)
        try:
            if proc is None:
                proc = self._procs[pid] = psutil.Process(pid)
            with proc.oneshot():
                return proc.memory_info().rss, proc.cpu_percent(), proc.create_time()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            self._procs.pop(pid, None)
            return 0, 0.0, 0.0

    @staticmethod
    def _holder(agent: Any, client: int) -> str:
        """The owner socket of the connection that holds a lease."""
        conn = agent.conns.get(client)
        role: Any = conn.role if conn is not None else ()
        if len(role) > 1 and role[0] == "driver":
            return str(role[1])
        if len(role) > 1 and role[0] == "worker":
            slot = agent.leases.workers.get(role[1])
            return slot.address if slot is not None else ""
        return ""
