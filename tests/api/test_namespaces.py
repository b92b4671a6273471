"""Namespaces: every task and actor of a job runs in the job's namespace."""

import uuid

from ._impl import INIT_KWARGS, rt


@rt.remote
class Box:
    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


@rt.remote
def namespace_here():
    return rt.get_runtime_context().namespace


@rt.remote
def read_named(name):
    return rt.get(rt.get_actor(name).get.remote())


@rt.remote
def read_named_nested(name):
    return rt.get(read_named.remote(name))


@rt.remote
class Reader:
    def namespace(self):
        return rt.get_runtime_context().namespace

    def read(self, name):
        return rt.get(rt.get_actor(name).get.remote())


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_tasks_and_actors_run_in_the_job_namespace():
    ns = rt.get_runtime_context().namespace
    assert ns  # an anonymous namespace of this job, never ''
    assert rt.get(namespace_here.remote()) == ns
    reader = Reader.remote()
    assert rt.get(reader.namespace.remote()) == ns


def test_named_actor_of_the_driver_is_found_inside_a_task():
    name = unique("box")
    box = Box.options(name=name).remote("from the driver")
    assert rt.get(read_named.remote(name)) == "from the driver"
    assert rt.get(read_named_nested.remote(name)) == "from the driver"
    rt.kill(box)


def test_named_actor_of_the_driver_is_found_inside_an_actor():
    name = unique("box")
    box = Box.options(name=name).remote(7)
    reader = Reader.remote()
    assert rt.get(reader.read.remote(name)) == 7
    rt.kill(box)
    rt.kill(reader)


def test_init_namespace_reaches_tasks_and_actors(own_init):
    ns = unique("x")
    rt.init(namespace=ns, **INIT_KWARGS)
    assert rt.get_runtime_context().namespace == ns
    assert rt.get(namespace_here.remote()) == ns
    name = unique("box")
    box = Box.options(name=name).remote("in x")
    assert rt.get_actor(name, namespace=ns) is not None
    assert rt.get(read_named.remote(name)) == "in x"
    reader = Reader.remote()
    assert rt.get(reader.namespace.remote()) == ns
    assert rt.get(reader.read.remote(name)) == "in x"
    rt.kill(box)
