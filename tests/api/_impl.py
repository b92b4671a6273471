"""The runtime under test: freight, or Ray when FREIGHT_TEST_AGAINST=ray.

The API suite is written against Ray core's names and meanings, so the same tests run against both.
Assertions on freight's own wording are gated with ``FREIGHT``.
"""

import importlib
import os

if os.environ.get("FREIGHT_TEST_AGAINST") == "ray":
    import ray as rt
else:
    import freight as rt

exc = importlib.import_module(f"{rt.__name__}.exceptions")

FREIGHT = rt.__name__ == "freight"

# Ray exports ActorHandle from ray.actor only; freight exports it at the top level.
ActorHandle = rt.ActorHandle if FREIGHT else importlib.import_module("ray.actor").ActorHandle

INIT_KWARGS = {"num_cpus": 4, "resources": {"custom": 2}}

__all__ = ["FREIGHT", "INIT_KWARGS", "ActorHandle", "exc", "rt"]
