"""One shared cluster for the API suite, and a deadline helper for waiting on conditions."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from freight.testing import wait_for_condition as wait_until

from ._impl import INIT_KWARGS, rt

# Test modules are imported as the package ``api`` (rootdir ``tests/``). Workers inherit the
# environment of the cluster started here, so they can import the classes and helper functions
# that remote functions defined in these modules refer to.
_TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (_TESTS_DIR, os.environ.get("PYTHONPATH", "")) if p
)


def start_shared_cluster() -> None:
    """Start (or restart) the cluster every API test shares."""
    if not rt.is_initialized():
        rt.init(**INIT_KWARGS)


@pytest.fixture(scope="package", autouse=True)
def cluster() -> Iterator[None]:
    # Package scope: the shared cluster stops when tests/api is done, so other suites can start
    # their own clusters in the same process.
    start_shared_cluster()
    yield
    rt.shutdown()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    return wait_until


@pytest.fixture
def own_init() -> Iterator[None]:
    """For tests that call ``init`` themselves: stop the shared cluster, restore it afterwards."""
    rt.shutdown()
    try:
        yield
    finally:
        if rt.is_initialized():
            rt.shutdown()
        start_shared_cluster()
