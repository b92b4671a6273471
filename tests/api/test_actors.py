"""Actors: state, ordering, concurrency, names, lifetimes, handles, kill."""

import asyncio
import gc
import threading
import uuid

import pytest

from ._impl import FREIGHT, ActorHandle, exc, rt


@rt.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def actor_id(self):
        return rt.get_runtime_context().get_actor_id()

    @rt.method(num_returns=2)
    def split(self):
        return self.value, -self.value


@rt.remote
class Log:
    def __init__(self):
        self.seen = []

    def append(self, i):
        self.seen.append(i)

    def items(self):
        return self.seen


@rt.remote
def call_counter(counter, times):
    for _ in range(times):
        rt.get(counter.incr.remote())
    return rt.get(counter.get.remote())


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_actor_keeps_state_between_calls():
    c = Counter.remote(10)
    rt.get(c.incr.remote())
    assert rt.get(c.incr.remote(5)) == 16


def test_actor_creation_returns_actor_handle():
    assert isinstance(Counter.remote(), ActorHandle)


def test_actor_with_resources():
    c = Counter.options(num_cpus=1, resources={"custom": 1}).remote(1)
    assert rt.get(c.get.remote()) == 1
    rt.kill(c)


def test_actor_class_decorator_with_options():
    @rt.remote(num_cpus=0)
    class Light:
        def ping(self):
            return "pong"

    assert rt.get(Light.remote().ping.remote()) == "pong"


def test_calls_from_one_caller_run_in_submission_order():
    log = Log.remote()
    for i in range(1000):
        log.append.remote(i)
    assert rt.get(log.items.remote()) == list(range(1000))


def test_method_decorator_num_returns():
    c = Counter.remote(4)
    a, b = c.split.remote()
    assert rt.get([a, b]) == [4, -4]


def test_threaded_actor_runs_two_calls_at_once():
    @rt.remote
    class Meeting:
        def __init__(self):
            self.barrier = threading.Barrier(2, timeout=60)

        def arrive(self):
            # Both calls pass only if they are inside the actor at the same time.
            self.barrier.wait()
            return True

    m = Meeting.options(max_concurrency=2).remote()
    assert rt.get([m.arrive.remote(), m.arrive.remote()], timeout=120) == [True, True]


def test_threaded_actor_runs_at_most_max_concurrency_calls_at_once():
    @rt.remote
    class Counter:
        def __init__(self):
            self.lock = threading.Lock()
            self.inside = 0
            self.most = 0
            self.barrier = threading.Barrier(3, timeout=60)
            self.threads = set()

        def enter(self):
            with self.lock:
                self.inside += 1
                self.most = max(self.most, self.inside)
                self.threads.add(threading.get_ident())
            self.barrier.wait()  # passes only with three calls inside at once
            with self.lock:
                self.inside -= 1
            return True

        def seen(self):
            return self.most, len(self.threads)

    c = Counter.options(max_concurrency=3).remote()
    assert rt.get([c.enter.remote() for _ in range(12)], timeout=120) == [True] * 12
    most, threads = rt.get(c.seen.remote(), timeout=60)
    assert most == 3 and threads <= 3


def test_async_actor_runs_calls_concurrently():
    @rt.remote
    class Rendezvous:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait_for_signal(self):
            await asyncio.wait_for(self.event.wait(), timeout=60)
            return "released"

        async def signal(self):
            self.event.set()
            return "set"

    r = Rendezvous.remote()
    waiting = r.wait_for_signal.remote()
    signalled = r.signal.remote()
    assert rt.get([waiting, signalled], timeout=120) == ["released", "set"]


def test_named_actor_found_in_its_namespace():
    name, ns = unique("counter"), unique("ns")
    c = Counter.options(name=name, namespace=ns).remote(3)
    found = rt.get_actor(name, namespace=ns)
    assert rt.get(found.get.remote()) == 3
    rt.kill(c)


def test_named_actor_not_found_in_other_namespace():
    name = unique("counter")
    c = Counter.options(name=name, namespace=unique("ns")).remote()
    rt.get(c.get.remote())
    with pytest.raises(ValueError):
        rt.get_actor(name, namespace=unique("other"))
    rt.kill(c)


def test_get_if_exists_returns_the_same_actor():
    name, ns = unique("shared"), unique("ns")
    first = Counter.options(name=name, namespace=ns, get_if_exists=True).remote()
    rt.get(first.incr.remote(7))
    second = Counter.options(name=name, namespace=ns, get_if_exists=True).remote()
    assert rt.get(second.get.remote()) == 7
    rt.kill(first)


def test_detached_actor_survives_its_handle_going_away():
    name, ns = unique("detached"), unique("ns")
    handle = Counter.options(name=name, namespace=ns, lifetime="detached").remote(5)
    rt.get(handle.incr.remote())
    del handle
    gc.collect()
    again = rt.get_actor(name, namespace=ns)
    assert rt.get(again.get.remote()) == 6
    rt.kill(again)


def test_killed_actor_calls_raise_actor_error(wait_for):
    c = Counter.remote()
    rt.get(c.get.remote())
    rt.kill(c)

    def call_fails():
        try:
            rt.get(c.get.remote(), timeout=60)
        except exc.RayActorError:
            return True
        return False

    if FREIGHT:
        assert call_fails()
    else:
        # Ray's kill is asynchronous: a call submitted right after it may still run.
        wait_for(call_fails, what="calls to the killed actor to fail")


def test_handle_passed_to_task_can_call_actor():
    c = Counter.remote()
    assert rt.get(call_counter.remote(c, 3)) == 3


def test_handle_passed_to_another_actor():
    @rt.remote
    class Caller:
        def __init__(self, counter):
            self.counter = counter

        def bump(self, times):
            for _ in range(times):
                rt.get(self.counter.incr.remote())
            return rt.get(self.counter.get.remote())

    c = Counter.remote()
    caller = Caller.remote(c)
    assert rt.get(caller.bump.remote(4)) == 4


def test_repr_of_handle_names_class_and_actor_id():
    c = Counter.remote()
    actor_id = rt.get(c.actor_id.remote())
    assert "Counter" in repr(c)
    assert actor_id in repr(c)
