"""The driver-facing API: init, shutdown, get, put, wait, cancel, kill and cluster queries."""

from __future__ import annotations

import atexit
import itertools
import math
import numbers
import os
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any

from freight import _launcher
from freight.client.refs import ObjectRef
from freight.config import check_settings, settings
from freight.util.tokens import read_token

INIT_PING_TIMEOUT_S = 15.0  # how long init() waits for a head that is there to answer

if TYPE_CHECKING:
    # Loaded by init() once the cluster's processes are starting, so both happen at once.
    from freight.client.core_worker import CoreWorker

_lock = threading.RLock()
_worker: CoreWorker | None = None
_cluster: _launcher.Processes | None = None
_in_worker = False

INIT_OPTIONS = (
    "address, num_cpus, num_gpus, resources, object_store_memory, namespace, "
    "ignore_reinit_error, log_to_driver, include_dashboard, logging_level, configure_logging, "
    "_temp_dir"
)


def _attach_worker(cw: CoreWorker) -> None:
    """Inside a worker process: the API uses the worker's own core worker."""
    global _worker, _in_worker
    _worker = cw
    _in_worker = True


def _require_worker() -> CoreWorker:
    w = _worker
    if w is None:
        raise RuntimeError(
            "freight is not initialized: call freight.init() before submitting work."
        )
    return w


def is_initialized() -> bool:
    """True once ``init`` has connected this process to a cluster."""
    return _worker is not None


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    namespace: str | None = None,
    ignore_reinit_error: bool = False,
    log_to_driver: bool = True,
    include_dashboard: bool | None = None,
    logging_level: Any = None,
    configure_logging: bool = True,
    _temp_dir: str | None = None,
    **unknown: Any,
) -> dict[str, Any]:
    """Connect to a cluster, or (with no address) start a private one on this machine.

    ``address`` may be ``None`` (start a local cluster that stops at exit), ``"auto"`` (the
    newest cluster started with ``freight start --head`` here) or ``"host:port"`` of a head.
    """
    global _worker, _cluster
    if unknown:
        raise ValueError(
            f"init() got unknown argument(s) {', '.join(sorted(unknown))}; "
            f"valid ones are: {INIT_OPTIONS}."
        )
    # A FREIGHT_* variable with a value that is not valid stops init() here, named, before any
    # process starts with it (the head and agents inherit this environment).
    check_settings()
    with _lock:
        if _worker is not None:
            if ignore_reinit_error:
                return _context_info()
            raise RuntimeError(
                "Maybe you called freight.init() twice by accident? freight is already "
                "initialized; call freight.shutdown() first, or pass ignore_reinit_error=True."
            )
        for key, val in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            if val is not None and (not isinstance(val, numbers.Real) or val < 0):
                raise ValueError(f"init(): {key} must be a non-negative number, got {val!r}.")
        if address is not None and not isinstance(address, str):
            raise TypeError(f"init(): address must be a string like 'host:port', got {address!r}.")
        if address is None:
            address = settings.address or None
        if address is None:
            session_dir, head_address, node_id = _start_private_cluster(
                num_cpus, num_gpus, resources, object_store_memory
            )
            token = read_token(session_dir)
        else:
            if num_cpus is not None or resources is not None or num_gpus is not None:
                raise ValueError(
                    "init(): num_cpus, num_gpus and resources describe a new local cluster; "
                    "they cannot be given together with an address. Set them with "
                    "`freight start` on the nodes instead."
                )
            session_dir, head_address, token = _resolve_address(address)
            node_id = ""
        try:
            _worker = _connect(session_dir, head_address, token, node_id, namespace, log_to_driver)
        except BaseException:
            _stop_private_cluster()
            raise
        from freight.util.grpc_tracing import setup_driver as setup_tracing

        setup_tracing(
            _worker.head,
            _worker.session_dir,
            _worker.node_id,
            _worker.worker_id,
            joined=_cluster is None,
        )
        atexit.register(shutdown)
        return _context_info()


def _start_private_cluster(
    num_cpus: float | None,
    num_gpus: float | None,
    resources: dict[str, float] | None,
    object_store_memory: int | None,
) -> tuple[str, str, str]:
    global _cluster
    if resources is not None:
        if not isinstance(resources, dict):
            raise ValueError("init(): resources must be a dict of name -> amount.")
        for k, v in resources.items():
            if k in ("CPU", "GPU"):
                raise ValueError(f"init(): use num_cpus/num_gpus instead of resources['{k}'].")
            if not isinstance(v, numbers.Real) or v < 0:
                raise ValueError(f"init(): resource {k!r} must be a non-negative number.")
    session_dir = _launcher.new_session_dir()
    procs = _launcher.start_cluster(
        session_dir,
        num_cpus=float(num_cpus) if num_cpus is not None else float(os.cpu_count() or 1),
        num_gpus=num_gpus,
        resources=resources,
        object_store_memory=object_store_memory,
        while_starting=_load_driver_modules,
    )
    _cluster = procs
    return session_dir, procs.head_address, procs.node_id


def _load_driver_modules() -> None:
    """Import what connecting needs (gRPC, the core worker) while the cluster starts."""
    import freight.client.core_worker
    import freight.client.head_client
    import freight.client.telemetry
    import freight.util.grpc_tracing  # noqa: F401


def _resolve_address(address: str) -> tuple[str, str, str]:
    from freight.client.head_client import HeadClient, HeadUnavailable

    if address == "auto":
        try:
            found = _launcher.auto_head()
        except PermissionError as e:
            raise PermissionError(f"init(address='auto'): {e}") from None
        if found is None:
            raise ConnectionError(
                "init(address='auto'): no running freight cluster was found on this machine. "
                "Start one with `freight start --head`, or call init() with no address."
            )
        session_dir, info = found
        head_address = str(info["address"])
    else:
        if ":" not in address:
            raise ValueError(f"init(): address must look like 'host:port', got {address!r}.")
        head_address = address
        session_dir = _launcher.find_session_for(address) or ""
    token = settings.token or (read_token(session_dir) if session_dir else "")
    client = HeadClient(head_address, token)
    try:
        # A refused connection fails at once; the deadline only waits on a head that is there
        # but busy (a loaded machine, a head just started).
        client.ping(timeout=INIT_PING_TIMEOUT_S)
    except HeadUnavailable:
        raise ConnectionError(
            f"init(address={address!r}): no freight head is listening at {head_address}. "
            "Check the address, or start a cluster with `freight start --head`."
        ) from None
    except ConnectionError as e:
        raise ConnectionError(
            f"init(address={address!r}): the freight head at {head_address} did not answer "
            f"within {INIT_PING_TIMEOUT_S:g} s ({e}). It may be overloaded; check it with "
            "`freight status`."
        ) from None
    except PermissionError as e:
        raise PermissionError(f"init(address={address!r}): {e}") from None
    finally:
        client.close()
    return session_dir, head_address, token


def _connect(
    session_dir: str,
    head_address: str,
    token: str,
    node_id: str,
    namespace: str | None,
    log_to_driver: bool,
) -> CoreWorker:
    import grpc

    from freight.client.core_worker import CoreWorker
    from freight.client.head_client import HeadClient
    from freight.client.head_client import pb_module as pb
    from freight.client.telemetry import parse_labels

    head = HeadClient(head_address, token)
    try:
        # The head runs (it was just started, or it answered a ping): on a loaded machine a
        # first connection can still fail once, so let gRPC try again until the start deadline.
        nodes = head.call(
            "ListNodes", pb.ListNodesRequest(), timeout=settings.start_timeout_s, wait=True
        ).nodes
        local = [n for n in nodes if n.state == "ALIVE" and os.path.exists(n.data_socket)]
        if node_id:
            local = [n for n in local if n.node_id == node_id] or local
        if not local:
            raise ConnectionError(
                f"the cluster at {head_address} has no node agent on this machine; start one "
                f"with `freight start --address {head_address}`."
            )
        node = local[0]
        # The driver's sockets and store are those of the node it attaches to.
        session_dir = node.session_dir or session_dir
        labels = parse_labels(settings.job_labels)
        request = pb.RegisterJobRequest(
            job=pb.JobInfo(
                # Set by `freight job submit`: the head merges this driver into the
                # submission's record (its id, entrypoint and labels stay).
                job_id=settings.job_id,
                namespace=namespace or "",
                driver_pid=os.getpid(),
                state="RUNNING",
                labels=labels,
                entrypoint=" ".join(sys.argv)[:500],
            )
        )
        try:
            job = head.call("RegisterJob", request).job
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
                raise
            raise ValueError(f"init(): {e.details()}") from None
    finally:
        head.close()
    cw = CoreWorker(
        session_dir=session_dir,
        node_id=node.node_id,
        agent_socket=node.data_socket,
        head_address=head_address,
        token=token,
        job_id=job.job_id,
        worker_id=uuid.uuid4().hex,
        is_driver=True,
        namespace=namespace or f"anonymous-{job.job_id}",
        log_to_driver=log_to_driver,
        job_labels=dict(job.labels),  # a submission's labels as the head merged them
        node_ip=node.node_ip,
    )
    return cw


def _context_info() -> dict[str, Any]:
    w = _require_worker()
    return {
        "address": w.head_address,
        "session_dir": w.session_dir,
        "node_id": w.node_id,
        "job_id": w.job_id,
    }


def shutdown() -> None:
    """Disconnect from the cluster; stop it too if ``init`` started it."""
    global _worker
    with _lock:
        w = _worker
        if w is None or _in_worker:
            return
        _worker = None
        try:
            from freight.client.head_client import pb_module as pb

            w.head.call(
                "FinishJob", pb.FinishJobRequest(job_id=w.job_id, state="FINISHED"), timeout=5
            )
        except Exception:
            pass  # the head may already be gone; the processes are stopped below regardless
        from freight.observe import tracing

        if tracing.ENABLED:
            # Bounded; a short program's spans are sent before it exits, and those that cannot
            # be are counted as dropped in the last telemetry report, which close() sends.
            tracing.settle()
        w.close()
        _stop_private_cluster()
        atexit.unregister(shutdown)


def _stop_private_cluster() -> None:
    global _cluster
    procs, _cluster = _cluster, None
    if procs is not None:
        _launcher.stop_processes(procs.procs)


# -- objects -----------------------------------------------------------------------------------


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the object store and return a reference to it."""
    return _require_worker().put(value)


def _check_timeout(timeout: Any, fn: str) -> float | None:
    """Seconds to wait, None for no limit (also what ``inf`` means); ValueError for a negative
    or NaN timeout, TypeError for one that is not a number."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real):
        raise TypeError(
            f"{fn}(): timeout must be None or a number of seconds >= 0, got "
            f"{type(timeout).__name__} {timeout!r:.80}."
        )
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(
            f"{fn}(): timeout must be None (wait as long as it takes) or a number of seconds "
            f">= 0, got {timeout!r}."
        )
    if timeout >= threading.TIMEOUT_MAX:
        return None  # inf, or longer than a lock can wait (years): no limit
    return float(timeout)


def get(object_refs: Any, *, timeout: float | None = None) -> Any:
    """Wait for and return the value(s) of an ObjectRef or a list of ObjectRefs."""
    w = _require_worker()
    t = _check_timeout(timeout, "get")
    if isinstance(object_refs, ObjectRef):
        return w.get([object_refs], t)[0]
    if isinstance(object_refs, (list, tuple)):
        for i, r in enumerate(object_refs):
            if not isinstance(r, ObjectRef):
                raise TypeError(
                    f"get() expects ObjectRefs, but element {i} of the list is a "
                    f"{type(r).__name__}: {r!r:.80}"
                )
        return w.get(list(object_refs), t)
    raise TypeError(
        f"get() expects an ObjectRef or a list of ObjectRefs, got a {type(object_refs).__name__}: "
        f"{object_refs!r:.80}. Pass the reference returned by .remote() or put()."
    )


def wait(
    object_refs: list[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """Return (ready, not_ready) once ``num_returns`` refs are ready or ``timeout`` passes."""
    w = _require_worker()
    if isinstance(object_refs, ObjectRef) or not isinstance(object_refs, (list, tuple)):
        raise TypeError(f"wait() expects a list of ObjectRefs, got {type(object_refs).__name__}.")
    refs = list(object_refs)
    # Checked at C speed where possible: programs call wait() in a loop on long lists.
    if not all(map(isinstance, refs, itertools.repeat(ObjectRef))):
        bad = next(r for r in refs if not isinstance(r, ObjectRef))
        raise TypeError(f"wait() expects a list of ObjectRefs, found a {type(bad).__name__}.")
    ids = [r._id for r in refs]
    if len(set(ids)) != len(ids):
        raise ValueError("wait() got the same ObjectRef more than once.")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or num_returns < 1:
        raise ValueError(f"wait(): num_returns must be a positive integer, got {num_returns!r}.")
    if num_returns > len(refs):
        raise ValueError(
            f"wait(): num_returns ({num_returns}) is larger than the number of refs ({len(refs)})."
        )
    t = _check_timeout(timeout, "wait")
    return w.wait(refs, num_returns, t, ids)


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that produces ``object_ref``; ``get`` then raises TaskCancelledError."""
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(object_ref).__name__}.")
    _require_worker().submitter.cancel(object_ref._id, force, recursive, object_ref._owner)


# -- actors ------------------------------------------------------------------------------------


def kill(actor: Any, *, no_restart: bool = True) -> None:
    """Kill an actor at once; calls in flight and later calls raise RayActorError.

    With ``no_restart=False`` an actor that has restarts left (``max_restarts``) is restarted.
    """
    from freight._remote import ActorHandle
    from freight.client.head_client import pb_module as pb
    from freight.util.grpc_auth import action_metadata

    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() expects an actor handle, got {type(actor).__name__}.")
    w = _require_worker()
    aid = actor._freight_actor_id
    # An action like `freight kill actor`: its cluster event names this driver's job.
    by = f"freight.kill() in job {w.job_id} (pid {os.getpid()})"
    w.head.call(
        "KillActor",
        pb.KillActorRequest(actor_id=aid, no_restart=no_restart, cause="killed by freight.kill()"),
        metadata=action_metadata(by, ""),
    )
    if no_restart:
        w.actors.created(aid, "", "the actor was killed by freight.kill()")
    else:
        w.actors.restarting(aid)


def get_actor(name: str, namespace: str | None = None) -> Any:
    """Return a handle to the live actor called ``name`` in ``namespace``."""
    import json

    from freight._remote import ActorHandle
    from freight.client.head_client import pb_module as pb

    if not isinstance(name, str) or not name:
        raise ValueError(f"get_actor(): name must be a non-empty string, got {name!r}.")
    w = _require_worker()
    ns = namespace or w.namespace
    reply = w.head.call("GetActor", pb.GetActorRequest(name=name, namespace=ns))
    if not reply.found or reply.actor.state == "DEAD":
        raise ValueError(f"Failed to look up actor with name '{name}' in namespace '{ns}'.")
    a = reply.actor
    kv = w.head.call("KVGet", pb.KVGetRequest(ns="actor_methods", key=a.actor_id))
    methods = json.loads(kv.value) if kv.found else None
    # Whether a call may wait for a restart when this address turns out to be stale.
    w.actors.state(a.actor_id, a.class_name).max_restarts = a.max_restarts
    if a.state == "ALIVE" and a.worker_address:
        w.actors.created(a.actor_id, a.worker_address, "")
    ref = w.actors.borrow_handle(a)  # a handle got by name keeps the actor alive too
    return ActorHandle(a.actor_id, a.class_name, methods, a.max_task_retries, ref)


# -- cluster -----------------------------------------------------------------------------------


def nodes() -> list[dict[str, Any]]:
    """Every node of the cluster, as Ray's ``ray.nodes()`` describes them."""
    from freight.client.head_client import pb_module as pb

    w = _require_worker()
    out = []
    for n in w.head.call("ListNodes", pb.ListNodesRequest(include_dead=True)).nodes:
        host = n.node_ip or n.agent_address.rsplit(":", 1)[0]
        out.append(
            {
                "NodeID": n.node_id,
                "Alive": n.state == "ALIVE",
                "NodeManagerAddress": host,
                "NodeManagerHostname": n.hostname,
                "NodeName": host,
                "Resources": dict(n.total.amounts),
                "Labels": dict(n.labels),
                "IsHeadNode": n.is_head_node,
                "ObjectStoreSocketName": n.data_socket,
                "DataAddress": n.data_address,
                "alive": n.state == "ALIVE",
            }
        )
    return out


def _status() -> Any:
    from freight.client.head_client import pb_module as pb

    return _require_worker().head.call("ClusterStatus", pb.ClusterStatusRequest())


def cluster_resources() -> dict[str, float]:
    """Total resources of the cluster's alive nodes."""
    return dict(_status().total.amounts)


def get_gpu_ids() -> list[int]:
    """The GPUs the calling task or actor was given (``CUDA_VISIBLE_DEVICES``), as in Ray."""
    ids = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return [int(x) for x in ids.split(",") if x.strip().isdigit()]


def available_resources() -> dict[str, float]:
    """Resources not in use right now (as of the nodes' last heartbeats)."""
    return {k: v for k, v in _status().available.amounts.items() if v > 0}
