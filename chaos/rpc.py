"""RPC faults: a fraction of the calls of one gRPC method (or of the data-plane messages of one
kind a node agent receives) fail with a status code or wait, through the runtime's fault hooks
(:mod:`freight.util.rpc_faults`), switched on with the admin token through the head's operator
API (:func:`freight.actions.set_rpc_fault`). A delay is freight's latency fault: this kernel has
no netem.

Like every fault: journalled before it is switched on (its revert is ``{"kind": "rpc", ...}``:
the cluster, the node and the fault id), time-boxed, and cleared here at expiry (also when the
run is interrupted). The runtime ends it by itself at the same expiry, so a harness that died
leaves nothing in force for long; `freight chaos recover` clears it sooner.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from freight import actions
from freight.client import access
from freight.util import rpc_faults

from . import faults, journal, seed, targets
from .targets import FaultRefused

SIGNAL = "rpc"  # what the journal says was done (no process is signalled)
# What clearing a fault may meet when its process is gone or out of reach: the fault is then
# gone with its process, or ends at its expiry there by itself.
UNREACHABLE = (access.ClusterNotFound, access.ClusterUnreachable, access.NotFound, RuntimeError)


def _where(target: str, method: str) -> str:
    """The component a fault goes to: ``target`` as given, else where ``method`` is served."""
    if target not in ("", rpc_faults.HEAD, rpc_faults.NODE):
        raise access.UsageError(
            f"target is 'head' or 'node' (or empty: where {method!r} is served)"
        )
    if target:
        return target
    try:
        return rpc_faults.served_by(rpc_faults.resolve(method))
    except ValueError as e:
        raise FaultRefused(str(e)) from None


def _node(
    cluster: access.Target, node_id: str, hostname: str, configuration: dict[str, Any] | None
) -> str:
    """The id of an ALIVE node matching ``node_id`` (an id or a prefix) and ``hostname``, picked
    by the run's seeded stream as every target is: a fault through the operator API needs no
    process on this machine."""
    rows = [
        n
        for n in targets.alive_nodes(cluster)
        if str(n["node_id"]).startswith(node_id) and (not hostname or n["hostname"] == hostname)
    ]
    asked = {"node_id": node_id, "hostname": hostname}
    row = targets.one("node", rows, asked, seed.rng(configuration, "targets"), "node_id")
    return str(row["node_id"])


def seed_of(value: int, configuration: dict[str, Any] | None) -> int:
    """The seed of a fault's random fraction: ``value`` as given, or for -1 one drawn from the
    run's seeded stream (:mod:`freight.chaos.seed`), recorded either way, so a rerun with the
    same seed hits the same calls."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise access.UsageError(f"seed must be a whole number, got {value!r}")
    if value == -1:
        return seed.rng(configuration, "rpc").getrandbits(31)
    return value


def rpc_fault(
    fault: str,
    method: str,
    *,
    fraction: float,
    duration: float,
    code: str,
    delay: float,
    node_id: str,
    hostname: str,
    target: str,
    seed: int,
    configuration: dict[str, Any] | None,
) -> dict[str, Any]:
    """The action ``fault`` (``fail_rpc`` with a ``code``, ``delay_rpc`` with a ``delay``):
    its spec under a new fault id, injected by :func:`inject`."""
    action = rpc_faults.FAIL if fault == "fail_rpc" else rpc_faults.DELAY
    spec = rpc_faults.FaultSpec(
        uuid.uuid4().hex[:16],
        method,
        action,
        fraction,
        code,
        delay,
        seed_of(seed, configuration),
        faults.check_duration(duration),
    )
    return inject(fault, spec, node_id, hostname, target, configuration)


def inject(
    fault: str,
    spec: rpc_faults.FaultSpec,
    node_id: str,
    hostname: str,
    target: str,
    configuration: dict[str, Any] | None,
) -> dict[str, Any]:
    """Switch ``spec`` on where ``target`` says, hold it for its duration, clear it; what it
    did (its hits among the calls it saw)."""
    faults.check_duration(spec.duration_s)
    where = _where(target, spec.method)
    try:
        rpc_faults.resolve(spec.method, where)
    except ValueError as e:  # a method nothing there serves: refused, naming what exists
        raise FaultRefused(str(e)) from None
    try:
        spec = rpc_faults.check(spec, where)
    except ValueError as e:
        raise access.UsageError(str(e)) from None
    cluster = targets.cluster(configuration)
    path = faults.journal_path(configuration)
    if where == rpc_faults.NODE:
        nid = _node(cluster, node_id, hostname, configuration)
        faults.refuse_last_healthy_node(cluster, nid, path)
        aim = {"kind": "node", "id": nid, "node_id": nid}
    else:
        nid = ""
        aim = {"kind": "head", "id": cluster.address, "node_id": ""}
    what = {
        "method": spec.method,
        "action": spec.action,
        "fraction": spec.fraction,
        "code": spec.code,
        "delay": spec.delay_s,
        "seed": spec.seed,
        "duration": spec.duration_s,
    }
    if faults.dry_run(configuration):
        return faults.planned(cluster, fault, aim, **what)
    undo = {"kind": "rpc", "address": cluster.address, "node_id": nid, "fault_id": spec.fault_id}
    injection = journal.Injection(fault, aim, {}, SIGNAL, undo, time.time() + spec.duration_s)
    journal.write_injection(path, injection)
    started = time.monotonic()
    try:
        actions.set_rpc_fault(spec, nid, f"chaos {fault}", cluster)
    except Exception as e:
        # It may be on all the same (a reply lost after the switch): clear it to be sure.
        try:
            reverted = undo_rpc_fault(injection)
        except Exception as again:
            reverted = f"could not clear it ({again}); it ends at its expiry"
        journal.write_end(path, injection.id, f"not switched on ({e}); {reverted}")
        raise
    final: dict[str, Any] = {}
    try:
        # The fault itself: it holds this long (the process it is in force in ends it then too).
        time.sleep(spec.duration_s)
    finally:
        try:
            ended = actions.clear_rpc_faults([spec.fault_id], nid, f"chaos {fault} over", cluster)
        except UNREACHABLE as e:
            ended = []
            result = f"not cleared ({e}); its process ends it at its expiry"
        else:
            final = ended[0] if ended else {"state": "gone"}
            result = f"{final['state']}: hit {final.get('hits', 0)} of {final.get('calls', 0)}"
        journal.write_end(path, injection.id, result)
    return {
        "fault": fault,
        **{f"target_{k}": v for k, v in aim.items()},
        **what,
        "fault_id": spec.fault_id,
        "calls": int(final.get("calls", 0)),
        "hits": int(final.get("hits", 0)),
        "state": str(final.get("state", "gone")),
        "seconds": round(time.monotonic() - started, 3),
        "injection_id": injection.id,
    }


def undo_rpc_fault(injection: journal.Injection) -> str:
    """Clear the recorded fault where it was switched on; safe when it has ended (the runtime
    ends it at its expiry by itself) and when its process is gone (faults live in memory)."""
    assert injection.undo is not None
    undo = injection.undo
    fault_id, node_id = str(undo.get("fault_id", "")), str(undo.get("node_id", ""))
    if not fault_id:
        raise journal.JournalError(f"injection {injection.id} records no RPC fault id to clear")
    where = f"node {node_id}" if node_id else "the head"
    try:
        cluster = access.resolve(str(undo.get("address") or "") or None, flag="freight_address")
        ended = actions.clear_rpc_faults([fault_id], node_id, "chaos recover", cluster)
    except UNREACHABLE as e:
        if time.time() >= injection.expires:
            return f"its expiry has passed: {where} switched it off by itself"
        until = time.strftime("%H:%M:%S", time.gmtime(injection.expires))
        return f"could not reach {where} ({e}); it switches itself off at {until} UTC"
    if not ended:
        return f"not in force on {where} (its process no longer had it)"
    state = str(ended[0].get("state", ""))
    return f"already {state}" if ended[0].get("ended_before") else state
