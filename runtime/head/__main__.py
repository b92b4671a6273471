"""``python -m freight.head --session-dir DIR [--port 0] [--bind 127.0.0.1] [--cluster-name NAME]``

Runs the head until ``Shutdown`` or SIGTERM/SIGINT (exit 0). Logs go to
``<session_dir>/logs/head.log`` as JSON lines; only a failed start-up is reported on stderr.
``--ready-fd N`` (repeatable) names inherited pipes the head writes its address to, as one JSON
line, once it serves (see :mod:`freight.util.process`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from loguru import logger

from freight.config import SettingsError, check_settings, settings
from freight.head.server import HeadConfig, run_head
from freight.observe import logging as observe_logging
from freight.util.grpc_tracing import setup as setup_tracing
from freight.util.process import set_parent_death_signal


def parse_args(argv: list[str] | None = None) -> HeadConfig:
    parser = argparse.ArgumentParser(prog="python -m freight.head", description=__doc__)
    parser.add_argument("--session-dir", required=True, help="the cluster's session directory")
    parser.add_argument("--port", type=int, default=0, help="gRPC port (0: any free port)")
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--cluster-name", default="freight", help="shown by `freight status`")
    parser.add_argument(
        "--node-timeout-s",
        type=float,
        default=None,
        help="a node that sends no heartbeat for this long is marked dead (default: twice the "
        "time the FREIGHT_HEALTH_CHECK_* settings take to find an unresponsive node dead, at "
        "least 30 s)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=0, help="/metrics and /sd port (0: any free port)"
    )
    parser.add_argument(
        "--die-with-parent", action="store_true", help="exit when the starting process exits"
    )
    parser.add_argument(
        "--storage",
        default="",
        help="the control store's SQLite file (default: control.db in the session directory); "
        "a head started on the file of one that died carries on its cluster",
    )
    parser.add_argument(
        "--ready-fd",
        type=int,
        action="append",
        default=[],
        help="an inherited pipe to write the address to once serving (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.node_timeout_s is None and settings.node_timeout_s:
        args.node_timeout_s = settings.node_timeout_s
    if args.node_timeout_s is not None and args.node_timeout_s <= 0:
        parser.error("--node-timeout-s (or FREIGHT_NODE_TIMEOUT_S) must be positive")
    folder = os.path.dirname(os.path.abspath(args.storage)) if args.storage else ""
    if folder and not os.path.isdir(folder):
        parser.error(
            f"--storage: the folder {folder} does not exist; create it first, closed to other "
            f"users: `mkdir -m 700 {folder}`"
        )
    return HeadConfig(
        session_dir=os.path.abspath(args.session_dir),
        port=args.port,
        bind=args.bind,
        cluster_name=args.cluster_name,
        node_timeout_s=args.node_timeout_s,
        metrics_port=args.metrics_port,
        ready_fds=tuple(args.ready_fd),
        die_with_parent=args.die_with_parent,
        storage=os.path.abspath(args.storage) if args.storage else "",
    )


def configure_logging(session_dir: str) -> None:
    """Send this process's logs to ``<session_dir>/logs/head.log`` as JSON lines."""
    # JSON lines with the ids that apply, bounded in size, tracebacks without locals.
    observe_logging.configure_logging(session_dir, "head", "head", level=settings.log_level)


def main(argv: list[str] | None = None) -> int:
    try:
        check_settings()  # never serve with a FREIGHT_* value that is not valid
    except SettingsError as e:
        print(f"freight head: {e}", file=sys.stderr)
        return 2
    config = parse_args(argv)
    if config.die_with_parent:
        set_parent_death_signal()
    try:
        if not os.path.isdir(config.session_dir):
            raise FileNotFoundError(f"the session directory {config.session_dir} does not exist")
        configure_logging(config.session_dir)
        setup_tracing("head", config.session_dir, cluster=config.cluster_name, background=True)
        asyncio.run(run_head(config))
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        logger.exception("the head failed")
        print(f"freight head: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
