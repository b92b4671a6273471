"""The batch events of the reference table behave exactly as the single ones, in order."""

from __future__ import annotations

import random

import pytest

from freight.core.refcount import ReferenceTable
from freight.core.transitions import Transition

IDS = [bytes([n]) * 4 for n in range(12)]


def snapshot(table: ReferenceTable) -> dict[bytes, tuple[object, ...]]:
    return {
        oid: (
            e.owned,
            e.local,
            e.submitted,
            frozenset(e.borrowers or ()),
            frozenset(e.contained_in or ()),
            e.contains,
            e.pinned,
        )
        for oid, e in table.entries.items()
    }


def causes(table: ReferenceTable) -> list[tuple[bytes, str]]:
    return [(oid, tr.cause) for oid, tr in table.recent]


@pytest.mark.parametrize("seed", range(40))
def test_batches_match_one_event_at_a_time(seed: int) -> None:
    rng = random.Random(seed)
    single = ReferenceTable(validate=True)
    batch = ReferenceTable(validate=True)
    seen: list[tuple[str, Transition]] = []
    outers: list[bytes] = []
    batch.log.subscribe(lambda key, tr: seen.append((key, tr)))
    for _ in range(300):
        op = rng.randrange(6)
        oids = rng.sample(IDS + outers[-3:], rng.randint(1, 5))
        who = rng.choice(["w1", "w2"])
        if op == 0:
            for oid in oids:
                single.add_local(oid, owned=True)
                batch.add_local(oid, owned=True)
        elif op == 1:
            freed = [f for oid in oids for f in single.remove_local(oid)]
            assert batch.remove_locals(oids) == freed
        elif op == 2:
            missing = [oid for oid in oids if not single.add_borrower(oid, who)]
            assert batch.add_borrowers(oids, who) == missing
        elif op == 3:
            freed = [f for oid in oids for f in single.remove_borrower(oid, who)]
            assert batch.remove_borrowers(oids, who) == freed
        elif op == 4:
            # A new object (put once) that holds some of the others.
            outer = b"outer" + bytes([len(outers)])
            outers.append(outer)
            for table in (single, batch):
                table.add_local(outer, owned=True)
                table.set_contains(outer, oids)
        elif op == 5:
            for table in (single, batch):
                table.add_submitted(oids)
                table.remove_submitted(oids[:1])
        assert snapshot(batch) == snapshot(single)
        assert causes(batch) == causes(single)
        assert batch.freed_total == single.freed_total
    batch.validate()
    assert [key for key, _ in seen] == [oid.hex() for oid, _ in batch.recent][-len(seen) :]


def test_a_batch_of_drops_frees_each_object_once_with_one_cause() -> None:
    table = ReferenceTable(validate=False)
    for oid in IDS[:3]:
        table.add_local(oid, owned=False)
    table.add_local(IDS[0], owned=False)
    assert table.remove_locals([IDS[0], IDS[1], IDS[1], IDS[2], IDS[0]]) == [
        IDS[1],
        IDS[2],
        IDS[0],
    ]
    assert [c for _, c in causes(table)] == ["local reference dropped"] * 3
    assert table.entries == {}


def test_borrowers_batch_reports_missing_and_frees_on_last_release() -> None:
    table = ReferenceTable(validate=True)
    table.add_local(IDS[0], owned=True)
    assert table.add_borrowers([IDS[0], IDS[1]], "w9") == [IDS[1]]
    assert table.remove_locals([IDS[0]]) == []
    assert table.remove_borrowers([IDS[0], IDS[1]], "w9") == [IDS[0]]
    assert causes(table) == [(IDS[0], "borrower w9 released")]
