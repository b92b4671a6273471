"""The owner's lineage table: which finished tasks it keeps, for how long, and within what
memory (freight.client.lineage)."""

from __future__ import annotations

from freight.client.lineage import ENTRY_OVERHEAD, Lineage
from freight.client.submitter import TaskSpec

PREFIX = b"owner-01"
OTHER = b"other-02"


def oid(n: int, prefix: bytes = PREFIX) -> bytes:
    return prefix + n.to_bytes(8, "little")


def spec(
    task: int, returns: list[bytes], args: list[bytes] = (), size: int = 10, inline: bool = False
) -> TaskSpec:
    """A finished task's spec; its arguments were passed from a store (or ``inline``)."""
    value = ("v", b"packed") if inline else ("s", "/dev/shm/store/x", 4096)
    return TaskSpec(
        task_id=task.to_bytes(16, "little"),
        name=f"t{task}",
        function_id=b"f",
        function_blob=b"",
        args=b"a" * size,
        arg_refs=[(a, "owner") for a in args],
        nested=[],
        return_ids=returns,
        resources={"CPU": 1.0},
        max_retries=3,
        resolved=[(a, "owner", value) for a in args],
    )


def test_a_kept_task_is_found_by_each_of_its_returns() -> None:
    lin = Lineage(10**6, PREFIX)
    s = spec(1, [oid(1), oid(2)])
    lin.keep(s)
    assert lin.spec_of(oid(1)).spec is s
    assert lin.spec_of(oid(2)).spec is s
    assert lin.spec_of(oid(3)) is None


def test_a_spec_goes_once_every_return_is_freed() -> None:
    lin = Lineage(10**6, PREFIX)
    lin.keep(spec(1, [oid(1), oid(2)]))
    lin.value_freed(oid(1))
    assert lin.spec_of(oid(2)) is not None
    lin.value_freed(oid(2))
    assert lin.spec_of(oid(2)) is None
    assert lin.statistics() == {"specs": 0, "bytes": 0}


def test_a_freed_argument_keeps_its_lineage_while_a_kept_spec_takes_it() -> None:
    lin = Lineage(10**6, PREFIX)
    lin.keep(spec(1, [oid(1)]))  # a -> oid 1
    lin.keep(spec(2, [oid(2)], args=[oid(1)]))  # b(oid 1) -> oid 2
    lin.value_freed(oid(1))  # b ran: a's value is freed
    assert lin.spec_of(oid(1)) is not None  # b may need a rebuilt
    lin.value_freed(oid(2))  # b's value freed too: nothing needs either
    assert lin.spec_of(oid(1)) is None
    assert lin.statistics() == {"specs": 0, "bytes": 0}
    assert lin.arg_uses == {} and lin.freed == set()


def test_arguments_owned_by_another_process_are_not_tracked() -> None:
    lin = Lineage(10**6, PREFIX)
    lin.keep(spec(1, [oid(1)], args=[oid(5, OTHER)]))
    assert lin.arg_uses == {}


def test_arguments_passed_inline_need_no_lineage() -> None:
    lin = Lineage(10**6, PREFIX)
    lin.keep(spec(1, [oid(1)]))
    lin.keep(spec(2, [oid(2)], args=[oid(1)], inline=True))  # its value is in spec 2
    assert lin.arg_uses == {}
    lin.value_freed(oid(1))
    assert lin.spec_of(oid(1)) is None


def test_the_oldest_specs_are_evicted_over_the_bound_and_say_so() -> None:
    one = 10 + ENTRY_OVERHEAD + 40  # packed args, overhead, one return
    lin = Lineage(3 * one, PREFIX)
    for n in range(5):
        lin.keep(spec(n, [oid(n)]))
    assert lin.bytes <= 3 * one
    assert lin.spec_of(oid(0)) is None and lin.spec_of(oid(1)) is None
    assert all(lin.spec_of(oid(n)) is not None for n in (2, 3, 4))
    assert "FREIGHT_LINEAGE_MAX_BYTES" in lin.why_not(oid(0))
    assert "put()" in lin.why_not(oid(99))


def test_evicting_the_oldest_spec_leaves_the_specs_that_take_its_returns() -> None:
    one = 10 + ENTRY_OVERHEAD + 40
    lin = Lineage(10 * one, PREFIX)
    lin.keep(spec(1, [oid(1)]))
    lin.keep(spec(2, [oid(2)], args=[oid(1)]))
    lin.value_freed(oid(1))  # kept only for spec 2
    lin.max_bytes = 2 * one + 40  # room for two of them
    lin.keep(spec(3, [oid(3)]))
    assert lin.spec_of(oid(1)) is None  # the oldest went: object 1 cannot be rebuilt now
    assert lin.spec_of(oid(2)) is not None and lin.spec_of(oid(3)) is not None
    assert lin.bytes == 2 * one + 40
    lin.value_freed(oid(2))
    assert lin.arg_uses == {} and lin.freed == set()


def test_evicting_a_spec_releases_the_lineage_only_it_needed() -> None:
    one = 10 + ENTRY_OVERHEAD + 40
    lin = Lineage(10 * one, PREFIX)
    first = spec(1, [oid(1)])
    lin.keep(first)
    lin.keep(spec(2, [oid(2)], args=[oid(1)]))
    lin.value_freed(oid(1))
    lin.keep(first)  # rebuilt: now the newest
    lin.max_bytes = one  # room for one
    lin.keep(spec(3, [oid(3)]))
    # Spec 2 (the oldest) went, and spec 1 with it: only spec 2 needed it.
    assert lin.spec_of(oid(2)) is None and lin.spec_of(oid(1)) is None
    assert lin.spec_of(oid(3)) is not None
    assert lin.statistics() == {"specs": 1, "bytes": one}
    assert lin.arg_uses == {} and lin.freed == set()


def test_a_spec_larger_than_the_bound_is_not_kept() -> None:
    lin = Lineage(100, PREFIX)
    lin.keep(spec(1, [oid(1)], size=1000))
    assert lin.spec_of(oid(1)) is None
    assert "FREIGHT_LINEAGE_MAX_BYTES" in lin.why_not(oid(1))


def test_keeping_a_rebuilt_task_again_counts_it_once() -> None:
    lin = Lineage(10**6, PREFIX)
    s = spec(1, [oid(1)], args=[oid(7)])
    lin.keep(s)
    size = lin.bytes
    lin.keep(s)
    assert lin.bytes == size and lin.arg_uses == {oid(7): 1}
