"""Tasks that submit tasks and create actors; references inside values."""

from ._impl import rt


@rt.remote
def tree_sum(depth):
    """Sum of the leaves of a binary tree of tasks; each level waits on its children."""
    if depth == 0:
        return 1
    return sum(rt.get([tree_sum.remote(depth - 1), tree_sum.remote(depth - 1)]))


@rt.remote
def square(x):
    return x * x


@rt.remote
def kinds(items):
    return [type(item).__name__ for item in items]


@rt.remote
def fetch_all(items):
    return rt.get(items)


@rt.remote
def dict_kinds(mapping):
    return {key: isinstance(value, rt.ObjectRef) for key, value in mapping.items()}


@rt.remote
class Accumulator:
    def __init__(self):
        self.total = 0

    def add(self, x):
        self.total += x
        return self.total


def test_task_tree_with_get_inside():
    assert rt.get(tree_sum.remote(3), timeout=120) == 8


def test_task_submits_tasks_and_returns_results():
    @rt.remote
    def fan_out(n):
        return rt.get([square.remote(i) for i in range(n)])

    assert rt.get(fan_out.remote(5)) == [0, 1, 4, 9, 16]


def test_task_creates_an_actor_and_calls_it():
    @rt.remote
    def use_actor(values):
        acc = Accumulator.remote()
        for v in values:
            acc.add.remote(v)
        return rt.get(acc.add.remote(0))

    assert rt.get(use_actor.remote([1, 2, 3])) == 6


def test_task_returns_actor_handle_created_inside():
    @rt.remote
    def make_actor():
        return Accumulator.remote()

    acc = rt.get(make_actor.remote())
    assert rt.get(acc.add.remote(5)) == 5


def test_refs_nested_in_a_list_arrive_as_refs():
    refs = [rt.put(1), square.remote(3)]
    assert rt.get(kinds.remote(refs)) == ["ObjectRef", "ObjectRef"]


def test_task_can_get_refs_nested_in_its_argument():
    refs = [rt.put(1), square.remote(3)]
    assert rt.get(fetch_all.remote(refs)) == [1, 9]


def test_refs_nested_in_a_dict_arrive_as_refs():
    assert rt.get(dict_kinds.remote({"a": rt.put(1), "b": 2})) == {"a": True, "b": False}


def test_task_returns_a_ref_it_created():
    @rt.remote
    def make_ref():
        return [square.remote(4)]

    (inner,) = rt.get(make_ref.remote())
    assert isinstance(inner, rt.ObjectRef)
    assert rt.get(inner) == 16


def test_put_of_a_value_containing_refs_keeps_them():
    inner = rt.put("inner")
    outer = rt.get(rt.put({"ref": inner}))
    assert rt.get(outer["ref"]) == "inner"
