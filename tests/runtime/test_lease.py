"""The node agent's lease state machine (``freight.core.lease``), driven directly."""

from __future__ import annotations

import itertools
import random

import pytest

from freight.core.lease import (
    ActorClaim,
    ActorRequest,
    Grant,
    Held,
    Infeasible,
    LeaseManager,
    LeaseRequest,
    StartWorkers,
    Stop,
    WorkerSlot,
)
from freight.core.task_state import (
    INFEASIBLE,
    WAITING_FOR_DRAINED,
    WAITING_FOR_RESOURCES,
    WAITING_FOR_WORKER,
)
from freight.core.transitions import InvalidTransition

_ids = itertools.count(1)


def req(client: int = 1, cpu: float = 1.0, name: str = "f", **res: float) -> LeaseRequest:
    resources = {"CPU": cpu, **res} if cpu else dict(res)
    return LeaseRequest(next(_ids), client, resources, name)


def idle_worker(mgr: LeaseManager, wid: str) -> list[object]:
    return list(mgr.worker_registered(wid, f"/tmp/{wid}.sock", 100))


def grants(actions: list[object]) -> list[tuple[int, str]]:
    return [(a.req.req_id, a.worker.worker_id) for a in actions if isinstance(a, Grant)]


def starts(actions: list[object]) -> int:
    return sum(a.n for a in actions if isinstance(a, StartWorkers))


def actor(mgr: LeaseManager, cpu: float = 1.0, **res: float) -> tuple[ActorRequest, list[object]]:
    resources = {"CPU": cpu, **res} if cpu else dict(res)
    request = ActorRequest(f"actor-{next(_ids)}", resources)
    return request, list(mgr.request_actor(request))


def claims(actions: list[object]) -> list[tuple[str, str]]:
    return [(a.req.actor_id, a.worker.worker_id) for a in actions if isinstance(a, ActorClaim)]


@pytest.fixture
def one_cpu() -> LeaseManager:
    return LeaseManager({"CPU": 1.0}, validate=True)


@pytest.fixture
def two_cpus() -> LeaseManager:
    return LeaseManager({"CPU": 2.0}, validate=True)


# -- grants -----------------------------------------------------------------------------------


def test_request_is_granted_to_an_idle_worker(two_cpus: LeaseManager) -> None:
    assert idle_worker(two_cpus, "w1") == []
    r = req(client=7)
    actions = two_cpus.request(r)
    assert grants(actions) == [(r.req_id, "w1")]
    w = two_cpus.workers["w1"]
    assert (w.state, w.client, w.resources) == ("LEASED", 7, {"CPU": 1.0})
    assert two_cpus.available["CPU"] == 1.0
    assert two_cpus.pending_by_reason() == {}
    assert two_cpus.leases_granted == 1
    assert w.transitions[-1].new == "LEASED"


def test_registration_grants_a_waiting_request(two_cpus: LeaseManager) -> None:
    r = req()
    assert starts(two_cpus.request(r)) == 1
    two_cpus.worker_starting("w1")
    assert grants(idle_worker(two_cpus, "w1")) == [(r.req_id, "w1")]


def test_registration_of_a_running_worker_changes_nothing(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    two_cpus.request(req())
    assert idle_worker(two_cpus, "w1") == []
    assert two_cpus.workers["w1"].state == "LEASED"


def test_start_workers_is_capped_by_the_cpu_count(two_cpus: LeaseManager) -> None:
    asked = []
    for n in range(6):
        k = starts(two_cpus.request(req(cpu=0.25)))
        asked.append(k)
        for i in range(k):  # the agent spawns what it was asked for
            two_cpus.worker_starting(f"s{n}-{i}")
    assert asked == [1, 1, 0, 0, 0, 0]
    assert two_cpus.active_task_workers() == two_cpus.cpu_cap() == 2
    assert two_cpus.pending_by_reason() == {WAITING_FOR_WORKER: 6}


def test_start_workers_counts_workers_already_starting(two_cpus: LeaseManager) -> None:
    assert starts(two_cpus.request(req(cpu=0.5))) == 1
    two_cpus.worker_starting("s1")
    # One worker is on its way for the first request; the second needs one more.
    assert starts(two_cpus.request(req(cpu=0.5))) == 1
    two_cpus.worker_starting("s2")
    assert starts(two_cpus.request(req(cpu=0.5))) == 0


def test_a_task_taking_no_cpu_gets_a_worker_while_every_cpu_is_busy(
    two_cpus: LeaseManager,
) -> None:
    for wid in ("w1", "w2"):
        idle_worker(two_cpus, wid)
    busy = [req(), req(), req()]  # two run, one waits for a CPU
    assert len(grants([a for r in busy for a in two_cpus.request(r)])) == 2
    canary = req(cpu=0)
    assert starts(two_cpus.request(canary)) == 1  # beyond the CPU cap: it needs no CPU
    two_cpus.worker_starting("w3")
    assert grants(idle_worker(two_cpus, "w3")) == [(canary.req_id, "w3")]
    assert two_cpus.pending_by_reason() == {WAITING_FOR_RESOURCES: 1}


def test_fractional_cpu_node_still_gets_one_worker() -> None:
    mgr = LeaseManager({"CPU": 0.5}, validate=True)
    assert mgr.cpu_cap() == 1
    assert starts(mgr.request(req(cpu=0.5))) == 1


def test_cancel_removes_only_the_matching_request(one_cpu: LeaseManager) -> None:
    r1, r2 = req(client=1), req(client=2)
    one_cpu.request(r1)
    one_cpu.request(r2)
    assert one_cpu.cancel(r1.req_id, client=2) is False
    assert one_cpu.cancel(r1.req_id, client=1) is True
    assert one_cpu.cancel(r1.req_id, client=1) is False
    assert [r.req_id for r in one_cpu.pending] == [r2.req_id]


# -- pending reasons and infeasible requests --------------------------------------------------


def test_infeasible_request_is_reported_once_and_kept_pending(two_cpus: LeaseManager) -> None:
    r = req(cpu=4, name="big")
    actions = two_cpus.request(r)
    infeasible = [a for a in actions if isinstance(a, Infeasible)]
    assert len(infeasible) == 1
    assert infeasible[0].req is r
    assert "big" in infeasible[0].message and '"CPU":4' in infeasible[0].message
    assert starts(actions) == 0
    assert r.reason == INFEASIBLE
    # Later events re-run dispatch; the request is not reported again.
    again = two_cpus.request(req(cpu=1)) + idle_worker(two_cpus, "w1")
    assert not [a for a in again if isinstance(a, Infeasible)]
    assert r in two_cpus.pending
    assert two_cpus.pending_by_reason() == {INFEASIBLE: 1}
    assert two_cpus.infeasible_shapes() == ['{"CPU":4}']


def test_unknown_resource_is_infeasible(two_cpus: LeaseManager) -> None:
    r = req(cpu=0, GPU=1)
    actions = two_cpus.request(r)
    assert [type(a) for a in actions] == [Infeasible]
    assert r.reason == INFEASIBLE


def test_waiting_for_resources_when_cpus_are_taken(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    idle_worker(one_cpu, "w2")
    one_cpu.request(req())
    r2 = req()
    actions = one_cpu.request(r2)
    assert actions == []
    assert r2.reason == WAITING_FOR_RESOURCES
    assert one_cpu.pending_by_reason() == {WAITING_FOR_RESOURCES: 1}


def test_waiting_for_a_worker_when_none_is_idle(two_cpus: LeaseManager) -> None:
    r = req()
    actions = two_cpus.request(r)
    assert actions == [StartWorkers(1)]
    assert r.reason == WAITING_FOR_WORKER
    assert two_cpus.pending_by_reason() == {WAITING_FOR_WORKER: 1}


def test_statistics_snapshot(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    two_cpus.worker_starting("w2")
    two_cpus.request(req())
    two_cpus.request(req(cpu=8))
    stats = two_cpus.statistics()
    assert stats["workers"] == {"LEASED": 1, "STARTING": 1}
    assert stats["pending"] == {INFEASIBLE: 1}
    assert stats["available"] == {"CPU": 1.0}
    assert stats["total"] == {"CPU": 2.0}
    assert stats["leases_granted"] == 1


# -- returning leases -------------------------------------------------------------------------


def test_lease_return_makes_the_worker_idle_and_redispatches(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    r1, r2 = req(client=1), req(client=2)
    one_cpu.request(r1)
    one_cpu.request(r2)
    actions = one_cpu.lease_returned("w1")
    assert grants(actions) == [(r2.req_id, "w1")]
    w = one_cpu.workers["w1"]
    assert (w.state, w.client) == ("LEASED", 2)
    assert [t.cause for t in w.transitions][-2:] == ["lease returned", f"lease {r2.req_id}"]


def test_lease_return_without_waiting_requests_leaves_an_idle_worker(
    one_cpu: LeaseManager,
) -> None:
    idle_worker(one_cpu, "w1")
    one_cpu.request(req())
    assert one_cpu.lease_returned("w1") == []
    w = one_cpu.workers["w1"]
    assert (w.state, w.client, w.resources) == ("IDLE", -1, {})
    assert one_cpu.available == {"CPU": 1.0}


def test_returning_an_idle_or_unknown_worker_is_ignored(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    assert one_cpu.lease_returned("w1") == []
    assert one_cpu.lease_returned("nope") == []
    assert one_cpu.available == {"CPU": 1.0}


# -- blocked workers --------------------------------------------------------------------------


def test_blocked_worker_lets_a_nested_task_run_on_one_cpu(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "parent")
    assert grants(one_cpu.request(req(client=1)))
    child = req(client=2)  # the parent's nested task, submitted by the parent's worker
    assert one_cpu.request(child) == []
    assert child.reason == WAITING_FOR_RESOURCES
    # The parent blocks in get(): its CPU goes back, and a second worker may start.
    actions = one_cpu.set_blocked("parent", True)
    assert one_cpu.available["CPU"] == 1.0
    assert actions == [StartWorkers(1)]
    one_cpu.worker_starting("child-w")
    assert grants(idle_worker(one_cpu, "child-w")) == [(child.req_id, "child-w")]
    # The child finishes, the parent wakes up and takes its CPU back.
    one_cpu.lease_returned("child-w")
    assert one_cpu.set_blocked("parent", False) == []
    assert one_cpu.available["CPU"] == 0.0
    one_cpu.validate()


def test_unblocking_may_oversubscribe_but_accounting_stays_exact(
    one_cpu: LeaseManager,
) -> None:
    idle_worker(one_cpu, "a")
    idle_worker(one_cpu, "b")
    one_cpu.request(req())
    leased = next(w for w in one_cpu.workers.values() if w.state == "LEASED")
    one_cpu.set_blocked(leased.worker_id, True)
    one_cpu.request(req())
    one_cpu.set_blocked(leased.worker_id, False)
    assert one_cpu.available["CPU"] == -1.0
    one_cpu.lease_returned(leased.worker_id)
    assert one_cpu.available["CPU"] == 0.0


def test_blocked_worker_in_a_bundle_lets_its_captured_child_run(one_cpu: LeaseManager) -> None:
    one_cpu.reserve_bundles("pg1", [(0, {"CPU": 1.0})])
    one_cpu.commit_bundles("pg1")
    idle_worker(one_cpu, "parent")
    in_bundle = {"CPU_group_pg1": 1.0}
    assert grants(one_cpu.request(LeaseRequest(next(_ids), 1, in_bundle, "parent")))
    child = LeaseRequest(next(_ids), 2, in_bundle, "child")
    assert one_cpu.request(child) == []
    assert child.reason == WAITING_FOR_RESOURCES
    # The parent blocks in get(): the bundle's CPU goes back (the node's own stays reserved).
    assert one_cpu.set_blocked("parent", True) == [StartWorkers(1)]
    assert one_cpu.available["CPU_group_pg1"] == 1.0
    assert one_cpu.available["CPU"] == 0.0
    one_cpu.worker_starting("child-w")
    assert grants(idle_worker(one_cpu, "child-w")) == [(child.req_id, "child-w")]
    one_cpu.lease_returned("child-w")
    one_cpu.set_blocked("parent", False)
    assert one_cpu.available["CPU_group_pg1"] == 0.0
    # Returning the bundles while the parent is blocked again gives its CPU back only once.
    one_cpu.set_blocked("parent", True)
    doomed, _ = one_cpu.return_bundles("pg1")
    assert doomed == ["parent"]
    one_cpu.worker_exited("parent", "killed with its placement group")
    assert one_cpu.available == {"CPU": 1.0}


def test_blocking_twice_or_on_an_idle_worker_is_ignored(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    assert one_cpu.set_blocked("w1", True) == []
    assert one_cpu.workers["w1"].blocked is False
    one_cpu.request(req())
    one_cpu.set_blocked("w1", True)
    one_cpu.set_blocked("w1", True)
    assert one_cpu.available["CPU"] == 1.0
    assert one_cpu.set_blocked("ghost", True) == []


def test_returning_a_blocked_lease_gives_back_the_cpu_once(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    one_cpu.request(req())
    one_cpu.set_blocked("w1", True)
    one_cpu.lease_returned("w1")
    assert one_cpu.available == {"CPU": 1.0}
    assert one_cpu.workers["w1"].blocked is False


# -- worker exit and client disconnect --------------------------------------------------------


def test_worker_exit_releases_its_resources(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    two_cpus.request(req(cpu=2))
    assert two_cpus.available["CPU"] == 0.0
    seen: list[tuple[str, str]] = []
    two_cpus.log.subscribe(lambda key, tr: seen.append((key, tr.new)))
    two_cpus.worker_exited("w1", "killed")
    assert "w1" not in two_cpus.workers
    assert two_cpus.available == {"CPU": 2.0}
    assert seen == [("w1", "DEAD")]


def test_exit_of_a_blocked_worker_does_not_give_its_cpu_twice(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    one_cpu.request(req())
    one_cpu.set_blocked("w1", True)
    one_cpu.worker_exited("w1", "crashed")
    assert one_cpu.available == {"CPU": 1.0}


def test_exit_of_a_starting_worker_asks_for_a_replacement(two_cpus: LeaseManager) -> None:
    assert starts(two_cpus.request(req())) == 1
    two_cpus.worker_starting("s1")
    assert two_cpus.worker_exited("s1", "exited with code 1") == [StartWorkers(1)]
    assert two_cpus.worker_exited("s1", "again") == []


def test_exit_of_an_actor_worker_releases_the_actor_resources(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    _, actions = actor(two_cpus, cpu=1.5)
    assert [w for _, w in claims(actions)] == ["w1"]
    two_cpus.worker_exited("w1", "actor killed")
    assert two_cpus.available == {"CPU": 2.0}


def test_client_gone_drops_its_requests_and_takes_its_leases_back(
    one_cpu: LeaseManager,
) -> None:
    idle_worker(one_cpu, "w1")
    gone, other = req(client=5), req(client=6)
    one_cpu.request(gone)
    one_cpu.request(req(client=5))
    one_cpu.request(other)
    actions = one_cpu.client_gone(5)
    # The worker may still run the gone owner's task: it is stopped, not handed on.
    assert actions[0] == Stop(["w1"])
    assert grants(actions) == []
    assert list(one_cpu.pending) == [other]
    w1 = one_cpu.workers["w1"]
    assert (w1.state, w1.client) == ("STOPPING", -1)
    assert "owner disconnected" in [t.cause for t in w1.transitions]
    assert one_cpu.available == {"CPU": 1.0}
    # Once it has exited, the waiting request gets a new worker.
    assert one_cpu.worker_exited("w1", "killed") == [StartWorkers(1)]


def test_an_owner_that_says_goodbye_has_its_workers_back_as_idle(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    one_cpu.request(req(client=5))
    other = req(client=6)
    one_cpu.request(other)
    actions = one_cpu.client_gone(5, crashed=False)
    assert grants(actions) == [(other.req_id, "w1")]
    assert "owner disconnected" in [t.cause for t in one_cpu.workers["w1"].transitions]


def test_client_gone_stops_a_blocked_worker_and_frees_its_cpu(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    one_cpu.request(req(client=5))
    one_cpu.set_blocked("w1", True)
    assert one_cpu.client_gone(5) == [Stop(["w1"])]
    w = one_cpu.workers["w1"]
    assert (w.state, w.client) == ("STOPPING", -1)
    assert one_cpu.available == {"CPU": 1.0}


# -- actors -----------------------------------------------------------------------------------


def test_an_actor_the_node_can_never_host_gets_a_reason(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    why = two_cpus.actor_infeasible({"CPU": 3})
    assert why.startswith(INFEASIBLE)
    assert '"CPU":3' in why and '"CPU":2' in why
    assert two_cpus.actor_infeasible({"CPU": 2}) == ""
    assert two_cpus.workers["w1"].state == "IDLE"


def test_an_actor_without_an_idle_worker_waits_for_one_to_start(two_cpus: LeaseManager) -> None:
    first, actions = actor(two_cpus)
    assert claims(actions) == [] and starts(actions) == 1
    two_cpus.worker_starting("s1")
    assert two_cpus.available == {"CPU": 2.0}  # nothing is taken while it waits
    assert two_cpus.pending_by_reason() == {WAITING_FOR_WORKER: 1}
    assert claims(idle_worker(two_cpus, "s1")) == [(first.actor_id, "s1")]
    assert two_cpus.pending_by_reason() == {}


def test_an_actor_without_free_resources_waits_for_them(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "w1")
    idle_worker(one_cpu, "w2")
    one_cpu.request(req())
    waiting, actions = actor(one_cpu)
    assert claims(actions) == [] and starts(actions) == 0  # an idle worker is there already
    assert one_cpu.pending_by_reason() == {WAITING_FOR_RESOURCES: 1}
    leased = next(w for w in one_cpu.workers.values() if w.state == "LEASED")
    assert [a for a, _ in claims(one_cpu.lease_returned(leased.worker_id))] == [waiting.actor_id]


def test_an_actor_takes_an_idle_worker(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    _, actions = actor(two_cpus)
    (got,) = [a.worker for a in actions if isinstance(a, ActorClaim)]
    assert got.worker_id == "w1"
    assert (got.state, got.resources) == ("ACTOR", {"CPU": 1})
    assert two_cpus.available == {"CPU": 1.0}
    # An actor worker is never leased to tasks.
    assert two_cpus.request(req()) == [StartWorkers(1)]


def test_zero_cpu_actor_does_not_count_against_task_workers(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "a")
    assert claims(actor(one_cpu, cpu=0)[1])
    assert one_cpu.request(req()) == [StartWorkers(1)]


def test_a_burst_of_actors_starts_workers_within_the_bound_first_come_first_served() -> None:
    mgr = LeaseManager({"CPU": 2.0}, validate=True, startup_limit=2)
    burst = []
    spawned: list[str] = []
    for _ in range(50):
        request, actions = actor(mgr, cpu=0)
        burst.append((request, actions))
        for _ in range(starts(actions)):  # the agent spawns what it is asked for, at once
            spawned.append(f"s{len(spawned)}")
            mgr.worker_starting(spawned[-1])
    assert len(spawned) == 2 and mgr.starting == 2
    assert mgr.pending_by_reason() == {WAITING_FOR_WORKER: 50}
    order: list[str] = []
    while spawned:  # each registration hands its worker to the first in line
        actions = idle_worker(mgr, spawned.pop(0))
        order += [a for a, _ in claims(actions)]
        for _ in range(starts(actions)):
            spawned.append(f"s{len(order)}-{len(spawned)}")
            mgr.worker_starting(spawned[-1])
        assert mgr.starting <= 2
    assert order == [r.actor_id for r, _ in burst]
    assert mgr.statistics()["starting_peak"] == 2
    assert mgr.pending_by_reason() == {}


def test_the_startup_bound_defaults_to_the_cpu_count() -> None:
    assert LeaseManager({"CPU": 3.0}).startup_limit == 3
    assert LeaseManager({"CPU": 0.0}).startup_limit == 1
    assert LeaseManager({"CPU": 3.0}, startup_limit=5).startup_limit == 5


def test_an_actor_given_up_leaves_the_line_and_an_unclaimed_worker_serves_the_next() -> None:
    mgr = LeaseManager({"CPU": 2.0}, validate=True, startup_limit=1)
    gone, _ = actor(mgr, cpu=0)
    kept, _ = actor(mgr, cpu=0)
    assert mgr.cancel_actor(gone) is True and mgr.cancel_actor(gone) is False
    mgr.worker_starting("s1")
    assert claims(idle_worker(mgr, "s1")) == [(kept.actor_id, "s1")]
    late, _ = actor(mgr, cpu=0)
    mgr.worker_starting("s2")
    assert claims(idle_worker(mgr, "s2")) == [(late.actor_id, "s2")]
    # A claimed worker whose creation is given up before it begins goes to the next in line.
    after, _ = actor(mgr, cpu=0)
    assert claims(mgr.unclaim("s2")) == [(after.actor_id, "s2")]
    assert mgr.unclaim("nobody") == []


def test_prestarted_workers_start_within_the_bound() -> None:
    mgr = LeaseManager({"CPU": 4.0}, validate=True, startup_limit=1)
    total = 0
    actions = mgr.prestart(3)
    for i in range(10):
        n = starts(actions)
        assert n <= 1
        total += n
        if not n:
            break
        mgr.worker_starting(f"p{i}")
        actions = idle_worker(mgr, f"p{i}")
    assert total == 3
    assert [w.state for w in mgr.workers.values()] == ["IDLE"] * 3


# -- shrinking the pool ------------------------------------------------------------------------


def test_retire_takes_only_an_idle_worker_out_of_service(one_cpu: LeaseManager) -> None:
    idle_worker(one_cpu, "a")
    idle_worker(one_cpu, "b")
    one_cpu.request(req())
    leased = next(w for w in one_cpu.workers.values() if w.state == "LEASED")
    idle = next(w for w in one_cpu.workers.values() if w.state == "IDLE")
    assert one_cpu.retire(leased.worker_id) is False
    assert one_cpu.retire("ghost") is False
    assert one_cpu.retire(idle.worker_id) is True
    assert idle.state == "STOPPING"
    # A retiring worker is never leased, even when it is the only one not busy.
    one_cpu.lease_returned(leased.worker_id)
    r = req()
    assert grants(one_cpu.request(r)) == [(r.req_id, leased.worker_id)]
    one_cpu.worker_exited(idle.worker_id, "retired")
    assert idle.worker_id not in one_cpu.workers


def test_idle_surplus_names_the_longest_idle_workers_beyond_the_cpu_count(
    one_cpu: LeaseManager,
) -> None:
    for wid in ("old", "mid", "new"):
        idle_worker(one_cpu, wid)
    one_cpu.workers["old"].idle_since = 100.0
    one_cpu.workers["mid"].idle_since = 200.0
    one_cpu.workers["new"].idle_since = 300.0
    assert one_cpu.idle_surplus(now_s=250.0, timeout_s=60.0) == ["old"]
    assert one_cpu.idle_surplus(now_s=400.0, timeout_s=60.0) == ["old", "mid"]
    assert one_cpu.idle_surplus(now_s=110.0, timeout_s=60.0) == []


def test_no_idle_surplus_within_the_cpu_count(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "a")
    idle_worker(two_cpus, "b")
    for w in two_cpus.workers.values():
        w.idle_since = 0.0
    assert two_cpus.idle_surplus(now_s=1e9, timeout_s=1.0) == []


# -- validate() -------------------------------------------------------------------------------


def test_validate_catches_drifted_accounting(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    two_cpus.request(req())
    two_cpus.available["CPU"] += 1
    with pytest.raises(InvalidTransition, match="CPU"):
        two_cpus.validate()


def test_validate_catches_a_lease_to_nobody(two_cpus: LeaseManager) -> None:
    idle_worker(two_cpus, "w1")
    two_cpus.request(req())
    two_cpus.workers["w1"].client = -1
    with pytest.raises(InvalidTransition, match="leased to nobody"):
        two_cpus.validate()


# -- a long random run ------------------------------------------------------------------------

SEED = 20240611
EVENTS = 10_000
SHAPES: list[dict[str, float]] = [
    {"CPU": 1.0},
    {"CPU": 0.5},
    {"CPU": 2.0},
    {"CPU": 1.0, "GPU": 1.0},
    {"GPU": 1.0},
    {},
    {"CPU": 3.0},  # more than the node has
    {"CPU": 1.0, "TPU": 1.0},  # a resource the node lacks
]


def test_random_event_sequence_keeps_the_invariants() -> None:
    print(f"lease random run seed={SEED}")
    rng = random.Random(SEED)
    total = {"CPU": 2.0, "GPU": 1.0}
    mgr = LeaseManager(total)
    wid = itertools.count()
    live_reqs: dict[int, LeaseRequest] = {}
    done_reqs: set[int] = set()
    warned: set[int] = set()
    granted_total = 0

    def apply(actions: list[object]) -> None:
        nonlocal granted_total
        for a in actions:
            if isinstance(a, Grant):
                assert a.req.req_id in live_reqs, "granted a request that is gone"
                assert a.req not in mgr.pending
                assert a.worker.state == "LEASED"
                assert a.worker.client == a.req.client
                assert a.worker.resources == a.req.resources
                del live_reqs[a.req.req_id]
                done_reqs.add(a.req.req_id)
                granted_total += 1
            elif isinstance(a, Stop):
                for stopped in a.worker_ids:
                    assert mgr.workers[stopped].state == "STOPPING"
            elif isinstance(a, ActorClaim):
                assert a.req not in mgr.actor_queue
                assert a.worker.state == "ACTOR"
                assert a.worker.resources == a.req.resources
            elif isinstance(a, StartWorkers):
                assert a.n > 0
                assert mgr.starting + a.n <= mgr.startup_limit
                if not mgr.actor_queue:
                    # Task workers stay within the CPU count, but for those of tasks that
                    # take no CPU, which each may get one of their own.
                    cpuless = sum(
                        1
                        for r in mgr.pending
                        if r.reason == WAITING_FOR_WORKER
                        and not any(v > 0 and k.startswith("CPU") for k, v in r.resources.items())
                    )
                    assert mgr.active_task_workers() + a.n <= mgr.cpu_cap() + cpuless
                for _ in range(a.n):
                    mgr.worker_starting(f"w{next(wid)}")
            else:
                assert isinstance(a, Infeasible)
                assert a.req.req_id not in warned, "infeasible request reported twice"
                warned.add(a.req.req_id)

    def workers_in(*states: str) -> list[WorkerSlot]:
        return sorted(
            (w for w in mgr.workers.values() if w.state in states), key=lambda w: w.worker_id
        )

    for step in range(EVENTS):
        event = rng.randrange(9)
        if event == 0:
            r = LeaseRequest(next(_ids), rng.randrange(4), dict(rng.choice(SHAPES)), "f")
            live_reqs[r.req_id] = r
            apply(mgr.request(r))
        elif event == 1 and mgr.pending:
            r = rng.choice(list(mgr.pending))
            assert mgr.cancel(r.req_id, r.client)
            del live_reqs[r.req_id]
            done_reqs.add(r.req_id)
        elif event == 2 and (starting := workers_in("STARTING")):
            w = rng.choice(starting)
            apply(mgr.worker_registered(w.worker_id, "/tmp/x.sock", step))
        elif event == 3 and (leased := workers_in("LEASED")):
            apply(mgr.lease_returned(rng.choice(leased).worker_id))
        elif event == 4 and mgr.workers and rng.random() < 0.3:
            w = rng.choice(sorted(mgr.workers))
            apply(mgr.worker_exited(w, "random exit"))
        elif event == 5 and rng.random() < 0.2:
            client = rng.randrange(4)
            for r in [r for r in mgr.pending if r.client == client]:
                del live_reqs[r.req_id]
                done_reqs.add(r.req_id)
            apply(mgr.client_gone(client))
            assert all(r.client != client for r in mgr.pending)
            assert all(w.client != client for w in workers_in("LEASED"))
        elif event == 6 and (busy := workers_in("LEASED", "ACTOR")):
            apply(mgr.set_blocked(rng.choice(busy).worker_id, rng.random() < 0.5))
        elif event == 7 and rng.random() < 0.2:
            shape = dict(rng.choice(SHAPES))
            if not mgr.actor_infeasible(shape):
                apply(mgr.request_actor(ActorRequest(f"a{step}", shape)))
        elif event == 8 and mgr.actor_queue and rng.random() < 0.1:
            # The head gave up an actor's creation while it waited for a worker.
            assert mgr.cancel_actor(rng.choice(list(mgr.actor_queue)))
        elif event == 8 and rng.random() < 0.1:
            # The agent shrinks the pool: surplus idle workers are retired, then exit.
            for w in mgr.idle_surplus(now_s=float("inf"), timeout_s=0.0):
                assert mgr.retire(w)
                apply(mgr.worker_exited(w, "retired"))

        mgr.validate()
        for k, v in mgr.total.items():
            assert mgr.available.get(k, 0.0) <= v + 1e-9, f"step {step}: {k} above total"
        assert {r.req_id for r in mgr.pending} == set(live_reqs), f"step {step}"
        assert not done_reqs & set(live_reqs)

    assert granted_total == mgr.leases_granted
    assert granted_total > 500, "the run should exercise grants"
    assert warned, "the run should exercise infeasible requests"


# -- placement group bundles ------------------------------------------------------------------


def test_reserved_bundles_become_the_groups_resources(two_cpus: LeaseManager) -> None:
    error, _ = two_cpus.reserve_bundles("pg1", [(0, {"CPU": 1.0}), (1, {"CPU": 1.0})])
    assert error == ""
    assert two_cpus.available["CPU"] == 0.0
    assert "CPU_group_pg1" not in two_cpus.total  # set aside, not usable before the commit
    assert two_cpus.commit_bundles("pg1")[0] == ""
    assert two_cpus.total["CPU_group_pg1"] == 2.0
    assert two_cpus.available["CPU_group_1_pg1"] == 1.0
    idle_worker(two_cpus, "w1")
    r = LeaseRequest(next(_ids), 1, {"CPU_group_0_pg1": 1.0}, "in group")
    assert grants(two_cpus.request(r)) == [(r.req_id, "w1")]
    plain = req()
    two_cpus.request(plain)
    assert two_cpus.pending[0].reason == WAITING_FOR_RESOURCES  # the bundles hold both CPUs


def test_bundles_that_do_not_fit_change_nothing(two_cpus: LeaseManager) -> None:
    error, actions = two_cpus.reserve_bundles("pg1", [(0, {"CPU": 1.5}), (1, {"CPU": 1.0})])
    assert "needs" in error and actions == []
    assert two_cpus.available == {"CPU": 2.0} and two_cpus.total == {"CPU": 2.0}
    assert two_cpus.groups == {}


def test_returning_bundles_kills_their_workers_and_frees_the_amounts(
    two_cpus: LeaseManager,
) -> None:
    two_cpus.reserve_bundles("pg1", [(0, {"CPU": 1.0})])
    assert two_cpus.reserve_bundles("pg1", [(0, {"CPU": 1.0})])[0] == ""  # a retry: no change
    two_cpus.commit_bundles("pg1")
    assert two_cpus.available["CPU"] == 1.0
    idle_worker(two_cpus, "w1")
    two_cpus.request(LeaseRequest(next(_ids), 1, {"CPU_group_pg1": 1.0}, "in group"))
    doomed, _ = two_cpus.return_bundles("pg1")
    assert doomed == ["w1"]
    assert two_cpus.total == {"CPU": 2.0}
    assert two_cpus.available == {"CPU": 2.0}
    assert two_cpus.return_bundles("pg1") == ([], [])
    two_cpus.worker_exited("w1", "killed with its placement group")
    two_cpus.validate()


# -- GPU ids -----------------------------------------------------------------------------------


def test_gpu_leases_get_distinct_ids_and_fractions_share_one() -> None:
    mgr = LeaseManager({"CPU": 4.0, "GPU": 2.0}, validate=True)
    for wid in ("w1", "w2", "w3", "w4"):
        idle_worker(mgr, wid)
    whole = mgr.request(req(GPU=1.0))
    half_a = mgr.request(req(GPU=0.5))
    half_b = mgr.request(req(GPU=0.5))
    ids = [
        g.worker.gpu_ids for acts in (whole, half_a, half_b) for g in acts if isinstance(g, Grant)
    ]
    assert len(ids) == 3
    assert ids[1] == ids[2] and len(ids[0]) == 1 and ids[0] != ids[1]
    waiting = req(GPU=1.0)
    assert grants(mgr.request(waiting)) == []  # no whole GPU is left: it waits
    assert mgr.pending[-1].reason == WAITING_FOR_RESOURCES
    w = next(g.worker for g in whole if isinstance(g, Grant))
    regrant = mgr.lease_returned(w.worker_id)  # its GPU is free again
    assert [r for r, _ in grants(regrant)] == [waiting.req_id]
    assert next(g.worker for g in regrant if isinstance(g, Grant)).gpu_ids == ids[0]


def test_a_worker_that_ran_cpu_only_work_is_never_given_gpu_work() -> None:
    mgr = LeaseManager({"CPU": 1.0, "GPU": 1.0}, validate=True)
    idle_worker(mgr, "cpu")
    plain = req()
    assert grants(mgr.request(plain)) == [(plain.req_id, "cpu")]
    mgr.lease_returned("cpu")
    gpu = req(GPU=1.0)
    actions = mgr.request(gpu)
    # The only idle worker ran CPU-only work: it is stopped to make room for a new one.
    assert grants(actions) == []
    assert [a.worker_ids for a in actions if isinstance(a, Stop)] == [["cpu"]]
    assert starts(actions) == 1
    assert mgr.workers["cpu"].state == "STOPPING"
    mgr.worker_exited("cpu", "asked to exit")
    mgr.worker_starting("fresh")
    assert grants(idle_worker(mgr, "fresh")) == [(gpu.req_id, "fresh")]


def test_a_worker_that_ran_gpu_work_is_never_given_cpu_only_work() -> None:
    mgr = LeaseManager({"CPU": 2.0, "GPU": 1.0}, validate=True)
    idle_worker(mgr, "gpu")
    first = req(GPU=0.5)
    assert grants(mgr.request(first)) == [(first.req_id, "gpu")]
    mgr.lease_returned("gpu")
    plain = req()
    actions = mgr.request(plain)
    assert grants(actions) == [] and starts(actions) == 1  # room for one more: nothing stopped
    assert mgr.workers["gpu"].state == "IDLE"
    mgr.worker_starting("fresh")
    assert grants(idle_worker(mgr, "fresh")) == [(plain.req_id, "fresh")]
    again = req(GPU=0.5)
    mgr.lease_returned("fresh")
    assert grants(mgr.request(again)) == [(again.req_id, "gpu")]  # its own kind, not "fresh"


def test_a_fresh_worker_serves_either_kind_and_keeps_it() -> None:
    mgr = LeaseManager({"CPU": 2.0, "GPU": 1.0}, validate=True)
    idle_worker(mgr, "w1")
    assert mgr.workers["w1"].gpu is None
    gpu_actor, actions = actor(mgr, GPU=1.0)
    assert claims(actions) == [(gpu_actor.actor_id, "w1")]
    assert mgr.workers["w1"].gpu is True
    idle_worker(mgr, "w2")
    assert grants(mgr.request(plain := req())) == [(plain.req_id, "w2")]
    assert mgr.workers["w2"].gpu is False


def test_bundles_set_aside_but_never_committed_come_back_whole(two_cpus: LeaseManager) -> None:
    two_cpus.reserve_bundles("pg1", [(0, {"CPU": 2.0})])
    assert two_cpus.available["CPU"] == 0.0
    assert two_cpus.return_bundles("pg1") == ([], [])
    assert two_cpus.available == {"CPU": 2.0} and two_cpus.total == {"CPU": 2.0}
    assert "has no bundles" in two_cpus.commit_bundles("pg1")[0]


# -- draining ---------------------------------------------------------------------------------


def test_a_drained_node_grants_nothing_new_and_keeps_what_it_granted(
    two_cpus: LeaseManager,
) -> None:
    idle_worker(two_cpus, "w1")
    idle_worker(two_cpus, "w2")
    running = req()
    ((_, leased),) = grants(two_cpus.request(running))
    assert two_cpus.set_draining(True) == []
    waiting = req(client=2)
    actions = two_cpus.request(waiting)
    assert grants(actions) == [] and starts(actions) == 0
    # The owner hears why its request waits, once.
    assert [a.req for a in actions if isinstance(a, Held)] == [waiting]
    assert not [
        a for a in two_cpus.request(req(client=3)) if isinstance(a, Held) and a.req is waiting
    ]
    assert two_cpus.pending_by_reason() == {WAITING_FOR_DRAINED: 2}
    assert two_cpus.workers[leased].state == "LEASED"  # what runs goes on
    assert two_cpus.statistics()["draining"] is True
    # Undrained: what waited is granted.
    assert [r for r, _ in grants(two_cpus.set_draining(False))] == [waiting.req_id]


def test_a_drained_node_still_says_what_no_node_can_run(two_cpus: LeaseManager) -> None:
    two_cpus.set_draining(True)
    actions = two_cpus.request(req(cpu=8))
    assert [type(a) for a in actions] == [Infeasible]
    assert two_cpus.pending_by_reason() == {INFEASIBLE: 1}
