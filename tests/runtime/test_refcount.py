"""Reference counting (``freight.core.refcount``), driven directly."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from freight.core.refcount import ReferenceTable
from freight.core.transitions import InvalidTransition, Transition

A, B, C, D = b"A" * 4, b"B" * 4, b"C" * 4, b"D" * 4


@pytest.fixture
def table() -> ReferenceTable:
    return ReferenceTable(validate=True)


# -- local references -------------------------------------------------------------------------


def test_last_local_reference_frees_the_object(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_local(A, owned=True)
    assert table.remove_local(A) == []
    assert table.remove_local(A) == [A]
    assert A not in table.entries
    assert table.statistics() == {"objects": 0, "freed_total": 1}


def test_removing_an_unknown_or_already_freed_reference_is_a_no_op(
    table: ReferenceTable,
) -> None:
    assert table.remove_local(A) == []
    table.add_local(A, owned=True)
    assert table.remove_local(A) == [A]
    assert table.remove_local(A) == []
    assert table.freed_total == 1


def test_owned_flag_is_kept(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_local(B, owned=False)
    assert table.entries[A].owned is True
    assert table.entries[B].owned is False


# -- submitted task arguments -----------------------------------------------------------------


def test_pending_task_argument_keeps_the_object_alive(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_submitted([A])
    assert table.remove_local(A) == []
    assert table.entries[A].holders() == ["pending task argument x1"]
    assert table.remove_submitted([A]) == [A]


def test_an_argument_passed_twice_counts_twice(table: ReferenceTable) -> None:
    table.add_submitted([A, A])
    assert table.remove_submitted([A]) == []
    assert table.remove_submitted([A]) == [A]
    assert table.remove_submitted([A]) == []


def test_remove_submitted_frees_several_at_once(table: ReferenceTable) -> None:
    table.add_submitted([A, B, C])
    table.add_local(B, owned=True)
    assert sorted(table.remove_submitted([A, B, C, D])) == [A, C]
    assert list(table.entries) == [B]


# -- borrowers --------------------------------------------------------------------------------


def test_borrower_keeps_the_object_alive_until_it_releases(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    assert table.add_borrower(A, "worker-1") is True
    assert table.remove_local(A) == []
    assert table.remove_borrower(A, "someone-else") == []
    assert table.remove_borrower(A, "worker-1") == [A]


def test_add_borrower_of_a_freed_object_reports_it_missing(table: ReferenceTable) -> None:
    assert table.add_borrower(A, "worker-1") is False
    assert A not in table.entries


def test_the_same_borrower_twice_counts_once(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_borrower(A, "w")
    table.add_borrower(A, "w")
    table.remove_local(A)
    assert table.remove_borrower(A, "w") == [A]


def test_remove_borrower_everywhere_frees_what_only_it_held(table: ReferenceTable) -> None:
    for oid in (A, B, C):
        table.add_local(oid, owned=True)
        table.add_borrower(oid, "dead")
    table.add_borrower(B, "alive")
    table.remove_local(A)
    table.remove_local(B)
    assert table.remove_borrower_everywhere("dead") == [A]
    assert table.entries[B].borrowers == {"alive"}
    assert table.entries[C].borrowers == set()
    assert table.remove_borrower_everywhere("dead") == []


def test_remove_borrower_everywhere_takes_what_it_held_inside_task_returns(
    table: ReferenceTable,
) -> None:
    for oid in (A, B):
        table.add_local(oid, owned=True)
    table.add_borrower(A, "dead#0102")  # held for "dead" inside the return value 0102
    table.add_borrower(B, "deadly#0102")  # another process whose address merely starts alike
    table.remove_local(A)
    table.remove_local(B)
    assert table.remove_borrower_everywhere("dead") == [A]
    assert table.entries[B].borrowers == {"deadly#0102"}


def test_remove_borrower_everywhere_cascades_into_contained_objects(
    table: ReferenceTable,
) -> None:
    table.add_local(A, owned=True)
    table.add_local(B, owned=True)
    table.set_contains(A, [B])
    table.add_borrower(A, "dead")
    table.add_borrower(B, "dead")
    table.remove_local(A)
    table.remove_local(B)
    assert sorted(table.remove_borrower_everywhere("dead")) == [A, B]
    assert table.entries == {}


# -- containment ------------------------------------------------------------------------------


def test_freeing_the_outer_object_frees_the_inner_ones(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.set_contains(A, [B, C])
    assert table.entries[B].holders() == ["contained in 1 object(s)"]
    assert sorted(table.remove_local(A)) == [A, B, C]
    assert table.entries == {}


def test_inner_object_with_its_own_holder_survives_the_outer(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_local(B, owned=True)
    table.set_contains(A, [B, C])
    freed = table.remove_local(A)
    assert sorted(freed) == [A, C]
    assert table.entries[B].contained_in == set()
    assert table.entries[B].holders() == ["local reference x1"]
    assert table.remove_local(B) == [B]


def test_inner_held_by_two_outers_lives_until_both_are_freed(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_local(B, owned=True)
    table.set_contains(A, [C])
    table.set_contains(B, [C])
    assert table.entries[C].holders() == ["contained in 2 object(s)"]
    assert table.remove_local(A) == [A]
    assert table.remove_local(B) == [B, C]


def test_containment_cascades_through_several_levels(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_local(B, owned=True)
    table.add_local(C, owned=True)
    table.set_contains(A, [B])
    table.set_contains(B, [C])
    table.remove_local(B)
    table.remove_local(C)
    assert sorted(table.remove_local(A)) == [A, B, C]
    assert table.entries == {}
    causes = [tr.cause for _, tr in table.recent]
    assert f"container {A.hex()} freed" in causes
    assert f"container {B.hex()} freed" in causes


def test_set_contains_of_an_unknown_outer_or_no_inners_does_nothing(
    table: ReferenceTable,
) -> None:
    table.set_contains(A, [B])
    assert table.entries == {}
    table.add_local(A, owned=True)
    table.set_contains(A, [])
    assert table.entries[A].contains == ()


# -- pins -------------------------------------------------------------------------------------


def test_pin_keeps_the_object_until_unpinned(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    assert table.pin(A) == []
    assert table.remove_local(A) == []
    assert table.entries[A].holders() == ["pinned"]
    assert table.pin(A, False) == [A]
    assert [tr.cause for _, tr in table.recent] == ["unpinned"]


def test_unpinning_a_still_held_object_frees_nothing(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.pin(A)
    assert table.pin(A, False) == []
    assert A in table.entries


def test_pin_of_an_unknown_object_is_a_no_op(table: ReferenceTable) -> None:
    assert table.pin(A) == []
    assert table.pin(A, False) == []
    assert table.entries == {}


# -- holders() and telemetry ------------------------------------------------------------------


def test_holders_lists_every_reason_in_order(table: ReferenceTable) -> None:
    table.add_local(A, owned=True)
    table.add_local(A, owned=True)
    table.add_submitted([A])
    table.add_local(B, owned=True)
    table.set_contains(B, [A])
    table.add_local(C, owned=True)
    table.set_contains(C, [A])
    table.add_borrower(A, "w1")
    table.add_borrower(A, "w2")
    table.add_borrower(A, "w3")
    table.pin(A)
    assert table.entries[A].holders() == [
        "local reference x2",
        "pending task argument x1",
        "contained in 2 object(s)",
        "borrowed by 3 process(es)",
        "pinned",
    ]


def test_holders_is_empty_for_a_dead_entry() -> None:
    table = ReferenceTable()
    table.add_local(A, owned=True)
    e = table.entries[A]
    table.remove_local(A)
    assert e.holders() == []
    assert e.dead()


def test_each_free_is_one_transition_with_its_cause(table: ReferenceTable) -> None:
    seen: list[tuple[str, Transition]] = []
    table.log.subscribe(lambda key, tr: seen.append((key, tr)))
    table.add_local(A, owned=True)
    table.add_borrower(A, "w9")
    table.remove_local(A)
    table.remove_borrower(A, "w9")
    assert [(k, tr.old, tr.new, tr.cause) for k, tr in seen] == [
        (A.hex(), "ALIVE", "FREED", "borrower w9 released")
    ]


def test_failing_listener_does_not_stop_freeing(table: ReferenceTable) -> None:
    def bad(key: str, tr: Transition) -> None:
        raise ValueError("exporter down")

    table.log.subscribe(bad)
    for oid in (A, B):
        table.add_local(oid, owned=True)
        assert table.remove_local(oid) == [oid]
    assert table.freed_total == 2


def test_recent_history_is_bounded() -> None:
    table = ReferenceTable(history=3)
    for n in range(10):
        oid = n.to_bytes(2, "big")
        table.add_local(oid, owned=True)
        table.remove_local(oid)
    assert [oid for oid, _ in table.recent] == [n.to_bytes(2, "big") for n in (7, 8, 9)]
    assert table.freed_total == 10


# -- validate() -------------------------------------------------------------------------------


def test_validate_passes_on_a_consistent_table() -> None:
    table = ReferenceTable()
    table.add_local(A, owned=True)
    table.set_contains(A, [B])
    table.add_submitted([C])
    table.validate()


def test_validate_catches_a_negative_count() -> None:
    table = ReferenceTable()
    table.add_local(A, owned=True)
    table.entries[A].submitted = -1
    with pytest.raises(InvalidTransition, match="negative"):
        table.validate()


def test_validate_catches_a_dangling_container_link() -> None:
    table = ReferenceTable()
    table.add_local(A, owned=True)
    table.set_contains(A, [B])
    table.entries[A].contains = ()
    with pytest.raises(InvalidTransition, match="dangling"):
        table.validate()


def test_validate_catches_a_link_to_a_missing_container() -> None:
    table = ReferenceTable()
    table.add_local(A, owned=True)
    table.set_contains(A, [B])
    del table.entries[A]
    with pytest.raises(InvalidTransition, match="dangling"):
        table.validate()


# -- a random run against a model ------------------------------------------------------------

SEED = 715517
STEPS = 20_000


def test_random_run_frees_each_object_once_and_only_when_unheld() -> None:
    """Model every holder in plain Python and compare with the table after each event."""
    print(f"refcount random run seed={SEED}")
    rng = random.Random(SEED)
    table = ReferenceTable(validate=True)
    oids = [n.to_bytes(2, "big") for n in range(40)]

    # The model: holders per object id, and which objects each object contains.
    local: Counter[bytes] = Counter()
    submitted: Counter[bytes] = Counter()
    borrowers: dict[bytes, set[str]] = {}
    pinned: set[bytes] = set()
    contains: dict[bytes, tuple[bytes, ...]] = {}
    containers: dict[bytes, set[bytes]] = {}
    alive: set[bytes] = set()
    freed_count: Counter[tuple[bytes, int]] = Counter()
    generation: Counter[bytes] = Counter()  # an id may be reused after it was freed

    def held(oid: bytes) -> bool:
        return bool(
            local[oid]
            or submitted[oid]
            or borrowers.get(oid)
            or oid in pinned
            or containers.get(oid)
        )

    def model_collect(start: list[bytes]) -> set[bytes]:
        out: set[bytes] = set()
        stack = [o for o in start if o in alive and not held(o)]
        while stack:
            cur = stack.pop()
            if cur in out:
                continue
            out.add(cur)
            alive.discard(cur)
            borrowers.pop(cur, None)
            for inner in contains.pop(cur, ()):
                containers.get(inner, set()).discard(cur)
                if inner in alive and not held(inner):
                    stack.append(inner)
        return out

    def check(freed: list[bytes], expected: set[bytes], step: int) -> None:
        assert len(freed) == len(set(freed)), f"step {step}: freed twice in one call"
        assert set(freed) == expected, f"step {step}: freed {freed}, model {expected}"
        for oid in freed:
            freed_count[(oid, generation[oid])] += 1
            generation[oid] += 1
            assert oid not in table.entries

    def pick(candidates: list[bytes]) -> bytes:
        # Mostly release something that is actually held, sometimes anything at all.
        return rng.choice(candidates) if candidates and rng.random() < 0.9 else rng.choice(oids)

    for step in range(STEPS):
        oid = rng.choice(oids)
        op = rng.choices(range(10), weights=(25, 40, 10, 15, 10, 15, 1, 5, 6, 5))[0]
        freed: list[bytes] = []
        expected: set[bytes] = set()
        if op == 0:
            table.add_local(oid, owned=True)
            local[oid] += 1
            alive.add(oid)
        elif op == 1:
            oid = pick(sorted(o for o in alive if local[o]))
            if local[oid]:
                local[oid] -= 1
            freed = table.remove_local(oid)
            expected = model_collect([oid])
        elif op == 2:
            args = rng.sample(oids, rng.randrange(1, 4))
            table.add_submitted(args)
            for a in args:
                submitted[a] += 1
                alive.add(a)
        elif op == 3:
            args = [pick(sorted(o for o in alive if submitted[o])) for _ in range(3)]
            for a in args:
                if submitted[a]:
                    submitted[a] -= 1
            freed = table.remove_submitted(args)
            expected = model_collect(args)
        elif op == 4:
            who = f"w{rng.randrange(3)}"
            ok = table.add_borrower(oid, who)
            assert ok == (oid in alive), f"step {step}"
            if ok:
                borrowers.setdefault(oid, set()).add(who)
        elif op == 5:
            oid = pick(sorted(o for o in alive if borrowers.get(o)))
            who = rng.choice(sorted(borrowers.get(oid) or {"w0"}))
            borrowers.get(oid, set()).discard(who)
            freed = table.remove_borrower(oid, who)
            expected = model_collect([oid])
        elif op == 6:
            who = f"w{rng.randrange(3)}"
            for s in borrowers.values():
                s.discard(who)
            freed = table.remove_borrower_everywhere(who)
            expected = model_collect(sorted(alive))
        elif op == 7:
            if oid in alive:
                pinned.add(oid)
            assert table.pin(oid) == []
        elif op == 8:
            oid = pick(sorted(pinned))
            pinned.discard(oid)
            freed = table.pin(oid, False)
            expected = model_collect([oid])
        elif op == 9 and oid in alive and oid not in contains:
            # Objects are immutable: an object's contents are set once, to ids that are
            # newer than itself (no cycles), as when a value holding refs is stored.
            newer = [o for o in oids if o > oid]
            if newer:
                inners = rng.sample(newer, min(len(newer), rng.randrange(1, 4)))
                table.set_contains(oid, inners)
                contains[oid] = tuple(inners)
                for i in inners:
                    containers.setdefault(i, set()).add(oid)
                    alive.add(i)
        check(freed, expected, step)
        assert set(table.entries) == alive, f"step {step}"
        for o in alive:
            assert table.entries[o].dead() is False, f"step {step}: unheld object kept"

    assert all(n == 1 for n in freed_count.values())
    assert table.freed_total == sum(freed_count.values())
    assert table.freed_total > 1000, "the run should exercise frees"
    table.validate()
