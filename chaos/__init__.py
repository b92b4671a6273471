"""freight.chaos: fault injection and game days, as a Chaos Toolkit extension.

Experiments are Chaos Toolkit experiment files, run by chaoslib (`freight chaos run FILE`, or the
stock `chaos run FILE`); their activities are the functions of :mod:`freight.chaos.actions` and
:mod:`freight.chaos.probes` (``"provider": {"type": "python", "module":
"freight.chaos.actions", "func": "kill_worker", ...}``). :func:`discover` describes them, for
`chaos discover freight` and `freight chaos discover`. See docs/chaos.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["__version__", "discover"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("freight")
except Exception:  # run from a source tree that was never installed
    __version__ = "0.0.0"

EXTENSION_NAME = "freight"
ACTIVITY_MODULES = ("freight.chaos.actions", "freight.chaos.probes")


def discover(discover_system: bool = True) -> dict[str, Any]:
    """Chaos Toolkit's discovery of this extension: every action and probe with its arguments,
    and, with ``discover_system``, the cluster found the usual way (FREIGHT_ADDRESS, else the
    newest on this machine): its address and nodes, or why none was found."""
    from chaoslib.discovery.discover import (
        discover_actions,
        discover_probes,
        initialize_discovery_result,
    )

    result: dict[str, Any] = initialize_discovery_result(EXTENSION_NAME, __version__, "freight")
    result["activities"].extend(discover_actions("freight.chaos.actions"))
    result["activities"].extend(discover_probes("freight.chaos.probes"))
    if discover_system:
        result["system"] = _system()
    return dict(result)


def _system() -> dict[str, Any]:
    from freight.client import access

    from . import targets

    try:
        cluster = access.resolve(None)
        nodes = targets.alive_nodes(cluster)
    except (ConnectionError, PermissionError, ValueError) as e:
        return {"cluster": None, "error": str(e)}
    return {
        "cluster": {"address": cluster.address, "found_by": cluster.source},
        "nodes": [
            {"node_id": n["node_id"], "hostname": n["hostname"], "is_head_node": n["is_head_node"]}
            for n in nodes
        ],
    }
