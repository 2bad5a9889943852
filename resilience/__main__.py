"""``python -m resilience``: the command line (``resilience demo``; see ``--help``)."""

from __future__ import annotations

import sys

from resilience.demo.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
