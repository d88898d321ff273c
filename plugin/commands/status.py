"""``borderphase status --config FILE``: studies pending / analysed / failed (with reasons),
speculative analyses in progress, outbox."""
from __future__ import annotations

import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("status", help="show the node's studies and outbox")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="the node's TOML config")
    g.add_argument("--state-dir", help="the node's state directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def run(args) -> int:
    from plugin.service.config import ConfigError, load_config
    from plugin.service.status import collect, format_status, to_json
    config = None
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(f"borderphase status: {exc}", file=sys.stderr)
            return 2
        state_dir = config.state_dir
    else:
        state_dir = args.state_dir
    doc = collect(state_dir, lease_s=config.analysis.lease_s) if config is not None else collect(state_dir)
    if config is not None:
        try:  # the work queue itself (SQLite file or Redis)
            from plugin.service.queue import make_huey
            h = make_huey(config)
            doc["queue"] = {"backend": config.queue.backend, "ready": h.pending_count(),
                            "scheduled": h.scheduled_count()}
        except Exception as exc:  # queue unreachable: say so, still show the rest
            doc["queue"] = {"backend": config.queue.backend, "error": str(exc)}
    print(to_json(doc) if args.json else format_status(doc))
    return 0
