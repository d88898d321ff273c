"""The ``borderphase`` command. Each sub-command lives in :mod:`plugin.commands` as a module
with ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes (GUIDE contract): 0 done; 1 input problems reported (some series skipped);
2 usage or configuration error.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("inspect", "phantom", "analyze", "conformance", "serve", "status", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="borderphase",
        description="Tell cerebral microbleeds from calcifications on GRE phase (border-slice method).",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: DEBUG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"plugin.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: a one-line message, the traceback only with -vv
        logging.getLogger("borderphase").debug("unexpected error", exc_info=True)
        text = " ".join(str(exc).split())[:300]
        print(f"borderphase {args.command}: internal error: {type(exc).__name__}: {text} "
              f"(run with -vv for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
