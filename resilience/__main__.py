"""``python -m resilience``: the command line (``resilience demo``, and the operator commands
``status``, ``breaker``, ``pause``, ``resume``, ``reset``, ``audit``; see ``--help`` and
``docs/operations.md``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from resilience.admin import _cli as admin_cli
from resilience.demo import cli as demo_cli

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``resilience`` command's argument parser."""
    parser = argparse.ArgumentParser(
        prog="resilience",
        description="resilience: asyncio resilience for fleets of workers.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo_cli.add_demo(sub)
    admin_cli.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m resilience`` and of the ``resilience`` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return demo_cli.run(args)
    return admin_cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
