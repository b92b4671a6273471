"""Worker process entry point: ``python -m freight.worker SESSION NODE AGENT_SOCKET WORKER_ID``.

Workers forked by the fork server (:mod:`freight.worker.zygote`) run :func:`main` too, with the
same arguments.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from freight._launcher import read_json
from freight.client.core_worker import CoreWorker
from freight.config import SettingsError, check_settings
from freight.protocol import messages as m
from freight.util.grpc_tracing import setup as setup_tracing
from freight.util.process import set_parent_death_signal, setup_process_logging

from .executor import Executor, install_output_forwarding


def main(argv: list[str] | None = None) -> None:
    """Serve as the worker ``WORKER_ID`` of the node agent at ``AGENT_SOCKET``, until told to
    exit."""
    session_dir, node_id, agent_socket, worker_id = (sys.argv[1:] if argv is None else argv)[:4]
    try:
        check_settings()  # its agent checked the same environment; never run with a bad value
    except SettingsError as e:
        print(f"freight worker: {e}", file=sys.stderr)
        sys.exit(2)
    set_parent_death_signal()
    # `kill -USR1 <pid>` writes every thread's stack to the worker's log: for stuck tasks.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    # JSON log lines carry the ids of the task the logging thread runs (see task_ids below).
    ex: Executor | None = None
    cw: CoreWorker | None = None

    def task_ids() -> dict[str, str] | None:
        task = cw.current_task if cw is not None else None
        if task is None:  # between tasks: the actor this worker hosts, if any
            return {"actor_id": ex.actor_id, "job_id": cw.job_id} if ex and cw else None
        return {
            "job_id": task.job_id,
            "task_id": task.task_id.hex() if task.task_id else "",
            "actor_id": task.actor_id,
        }

    setup_process_logging(
        session_dir,
        f"worker-{worker_id}",
        "worker",
        {"node_id": node_id, "worker_id": worker_id},
        task_ids,
    )
    setup_tracing("worker", session_dir, node_id, worker_id)
    token = os.environ.get("FREIGHT_TOKEN", "")
    # A worker can start before the head serves (they start side by side); the core worker then
    # reads head.json when it first needs the head, which is never before the agent registered.
    head_info = read_json(os.path.join(session_dir, "head.json")) or {}
    head_address = str(head_info.get("address", ""))
    cw = CoreWorker(
        session_dir=session_dir,
        node_id=node_id,
        agent_socket=agent_socket,
        head_address=head_address,
        token=token,
        job_id="",
        worker_id=worker_id,
        is_driver=False,
        node_ip=os.environ.get("FREIGHT_NODE_IP", ""),
    )
    from freight import _api

    _api._attach_worker(cw)
    ex = Executor(cw)
    cw.on_push = ex.on_push
    cw.on_agent_message = ex.on_agent
    install_output_forwarding(cw)
    cw.agent.send(m.RegisterWorker(worker_id, cw.address, os.getpid()))
    ex.run_forever()


if __name__ == "__main__":
    main()
