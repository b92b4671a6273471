"""``python -m freight.node``: a node agent (see :mod:`freight.node.server` for the options).

The worker fork server is started first, before the agent's own imports, so that the two load
side by side (docs/decisions/0013-worker-fork-server.md). That start imports only the standard
library and freight's light process helpers.
"""

import os
import sys


def _fork_server_wanted() -> bool:
    if not os.environ.get("FREIGHT_FORK_SERVER"):
        return True  # the default; the settings module is loaded only when the variable is set
    from freight.config import settings

    return bool(settings.fork_server)


def _start_fork_server(argv: list[str]) -> None:
    """Start the fork server for the agent these arguments describe, when settings allow it."""

    def value(flag: str) -> str:
        i = argv.index(flag) if flag in argv else -1
        return argv[i + 1] if 0 <= i < len(argv) - 1 else ""

    session_dir, node_id = value("--session-dir"), value("--node-id")
    # Workers listen for other nodes' processes on the node's address (freight.node.server's
    # node_ip); they inherit it, forked or started, from here.
    bind = value("--bind")
    os.environ["FREIGHT_NODE_IP"] = value("--node-ip") or (
        bind if bind and bind not in ("0.0.0.0", "::", "[::]") else "127.0.0.1"
    )
    if not session_dir or not node_id:
        return  # the agent reports bad arguments itself
    try:
        if not _fork_server_wanted():
            return
        from freight.node.fork_server import start_early

        start_early(session_dir, node_id)
    except (OSError, ValueError):
        return  # no fork server: the agent starts each worker as a new interpreter


def _check_settings() -> None:
    """Stop with the bad FREIGHT_* variables named before the agent's modules load (some read
    settings as they load)."""
    from freight.config import SettingsError, check_settings

    try:
        check_settings()
    except SettingsError as e:
        print(f"freight node agent: {e}", file=sys.stderr)
        sys.exit(2)


_start_fork_server(sys.argv[1:])
_check_settings()

from freight.node.server import main  # noqa: E402  (after the fork server started)

main()
