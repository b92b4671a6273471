"""``get_runtime_context()``: which job, task, actor, node and worker the caller runs in."""

from __future__ import annotations

from typing import Any

from freight import _api


class RuntimeContext:
    """Ids of the current job, task, actor, node and worker (Ray's RuntimeContext)."""

    def __init__(self) -> None:
        self._w = _api._require_worker()

    def get_job_id(self) -> str:
        return self._w.job_id

    def get_task_id(self) -> str | None:
        task = self._w.current_task
        return task.task_id.hex() if task is not None and task.task_id else None

    def get_actor_id(self) -> str | None:
        task = self._w.current_task
        return task.actor_id if task is not None and task.actor_id else None

    def get_node_id(self) -> str:
        return self._w.node_id

    def get_worker_id(self) -> str:
        return self._w.worker_id

    @property
    def namespace(self) -> str:
        return self._w.namespace

    @property
    def node_id(self) -> Any:
        return self._w.node_id

    @property
    def job_id(self) -> Any:
        return self._w.job_id

    def get(self) -> dict[str, Any]:
        return {
            "job_id": self.get_job_id(),
            "task_id": self.get_task_id(),
            "actor_id": self.get_actor_id(),
            "node_id": self.get_node_id(),
            "worker_id": self.get_worker_id(),
            "namespace": self.namespace,
        }


def get_runtime_context() -> RuntimeContext:
    """The ids of the job, task, actor, node and worker this code runs in."""
    return RuntimeContext()
