"""GPU work and CPU-only work never share a worker process (as in Ray): a process keeps what it
set up for its devices. The node declares a GPU it does not have; nothing here touches one."""

from __future__ import annotations

import os
import sys

import cloudpickle

import freight
from freight.testing import local_cluster

# Workers cannot import this test module: ship the remote functions below by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@freight.remote
def process() -> tuple[int, str]:
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


@freight.remote
class Device:
    def process(self) -> tuple[int, str]:
        return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES", "")


def test_gpu_and_cpu_only_work_run_in_different_worker_processes() -> None:
    # One CPU: the node has room for one task worker, so each switch of kind must replace it.
    with local_cluster(num_cpus=1, num_gpus=1):
        cpu_pid, cpu_visible = freight.get(process.remote(), timeout=60)
        gpu_pid, gpu_visible = freight.get(process.options(num_gpus=1).remote(), timeout=60)
        assert (cpu_visible, gpu_visible) == ("", "0")
        assert gpu_pid != cpu_pid
        cpu_again, _ = freight.get(process.remote(), timeout=60)
        assert cpu_again != gpu_pid
        gpu_again, _ = freight.get(process.options(num_gpus=1).remote(), timeout=60)
        assert gpu_again not in (cpu_pid, cpu_again)
        # An actor with a GPU does not take a worker CPU-only tasks ran either.
        device = Device.options(num_gpus=1, num_cpus=0).remote()
        actor_pid, actor_visible = freight.get(device.process.remote(), timeout=60)
        assert actor_visible == "0"
        assert actor_pid not in (cpu_pid, cpu_again)
