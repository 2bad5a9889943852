"""``python -m resilience.demo.ai``: the fake AI server as a process (see :func:`main`)."""

import sys

from resilience.demo.ai.process import main

sys.exit(main())
