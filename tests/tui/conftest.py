"""One cluster for the inspector's test files whose tests read the cluster, or act only on rows
of their own (a file's tasks and actors carry its own names): it starts once for them all. A file
whose tests change the cluster itself (kill or restart the head, stop a node) keeps a cluster of
its own, defined in the file under the same fixture name, ``cluster``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import freight
from freight.testing import Cluster, patched_environ, short_temp_dir

ENV = {
    "FREIGHT_TASK_ROWS_SAMPLE": "0",  # every task gets its record
    "FREIGHT_HEALTH_CHECK_PERIOD_S": "0.3",
    "FREIGHT_HEALTH_CHECK_FAILURE_THRESHOLD": "2",
}


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[tuple[Path, Cluster]]:
    """The shared cluster (two CPUs on one node) and the temp folder it lives under; no driver
    is connected (a file with a cluster of its own connects to that one meanwhile)."""
    with short_temp_dir() as tmp:
        with patched_environ(FREIGHT_TEMP_DIR=str(tmp), **ENV):
            cluster = Cluster()
        with cluster:
            with patched_environ(FREIGHT_TEMP_DIR=str(tmp), **ENV):
                cluster.add_node(num_cpus=2)
            yield tmp, cluster


@pytest.fixture(scope="module")
def cluster(shared_cluster: tuple[Path, Cluster]) -> Iterator[Cluster]:
    """The shared cluster, with this process connected to it as a driver for one file's tests
    (as :func:`freight.testing.connected_cluster` connects to a cluster of the file's own)."""
    tmp, shared = shared_cluster
    env = {"FREIGHT_TEMP_DIR": str(tmp), "FREIGHT_TOKEN": None, "FREIGHT_ADDRESS": None, **ENV}
    with patched_environ(**env):
        freight.init(address=shared.address)
        try:
            yield shared
        finally:
            freight.shutdown()
