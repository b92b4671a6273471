"""``python -m freight.node``: a node agent (see :mod:`freight.node.server` for the options).

The worker fork server is started first, before the agent's own imports, so that the two load
side by side (docs/decisions/0013-worker-fork-server.md).
"""

import sys


def _start_fork_server(argv: list[str]) -> None:
    """Start the fork server for the agent these arguments describe, when settings allow it."""

    def value(flag: str) -> str:
        i = argv.index(flag) if flag in argv else -1
        return argv[i + 1] if 0 <= i < len(argv) - 1 else ""

    session_dir, node_id = value("--session-dir"), value("--node-id")
    if not session_dir or not node_id:
        return  # the agent reports bad arguments itself
    from freight.config import settings

    try:
        if not settings.fork_server:
            return
        from freight.node.fork_server import start_early
        from freight.util.tokens import read_token

        start_early(session_dir, node_id, read_token(session_dir))
    except (OSError, ValueError):
        return  # no fork server: the agent starts each worker as a new interpreter


_start_fork_server(sys.argv[1:])

from freight.node.server import main  # noqa: E402  (after the fork server started)

main()
