"""The time bound the library states for a decision whose store does not answer in time."""

from __future__ import annotations

import redis

__all__ = ["CANCEL_ALLOWANCE", "OLD_REDIS_PY"]

#: The oldest redis-py pyproject.toml allows (5.x, tested by ``.ci/lowest``).
OLD_REDIS_PY = int(redis.__version__.split(".")[0]) < 8

#: What a decision may take beyond the store's ``timeout``: 50 ms of scheduling with the
#: redis-py the bound is tuned on (>= 8). On redis-py 5, cancelling a command in flight costs
#: its connection teardown as well (the clean-clone CI measured up to 0.26 s more), so there
#: the tests hold the looser bound docs/failure-modes.md states.
CANCEL_ALLOWANCE = 0.3 if OLD_REDIS_PY else 0.05
