"""The store conformance suite: point it at your store, and pytest checks the whole contract.

Every store the library ships passes it (memory, Redis through fakeredis, a real
``redis-server``, a 3-master Redis Cluster). A store of your own (see ``docs/stores.md``,
"Writing a store") runs it by subclassing :class:`StoreConformance` in a test module and
giving it a ``store`` fixture::

    import pytest
    from resilience.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        @pytest.fixture
        async def store(self):
            s = MyStore(...)  # a fresh, empty store for each test
            yield s
            await s.aclose()

        @pytest.fixture
        def unavailable_store(self):  # optional: enables the error-contract tests
            return MyStore(url="an address where nothing listens")

The tests are ``async def``: run them with pytest-asyncio (``asyncio_mode = "auto"``, or add
``pytestmark = pytest.mark.asyncio`` to the class, and decorate async fixtures with
``pytest_asyncio.fixture`` in its strict mode). Each test needs a fresh store (or one whose
names cannot collide with an earlier test's, e.g. a new key prefix). The suite takes about a
minute: its windows and breaks are real sub-second to few-second durations.

For assertion details in failures, have pytest rewrite the suite's asserts: put
``pytest.register_assert_rewrite("resilience.testing.conformance")`` in your ``conftest.py``.

The parts, to run only some: :class:`WindowConformance`, :class:`SettleConformance` (reserve,
settle, refund), :class:`BreakerConformance`, :class:`BudgetConformance`,
:class:`PresenceConformance`, :class:`ConcurrencyConformance`, :class:`RegistryConformance` (the
optional registry of the operator tools: skipped for a store without one) and
:class:`ContractConformance` (capabilities, tokens, the error contract, pushed transitions).
This package imports pytest: import it from tests only.
"""

from __future__ import annotations

from resilience.testing.conformance._breaker import BreakerConformance
from resilience.testing.conformance._budget import BudgetConformance
from resilience.testing.conformance._concurrency import ConcurrencyConformance
from resilience.testing.conformance._contract import ContractConformance
from resilience.testing.conformance._presence import PresenceConformance
from resilience.testing.conformance._registry import RegistryConformance
from resilience.testing.conformance._settle import SettleConformance
from resilience.testing.conformance._window import WindowConformance

__all__ = [
    "BreakerConformance",
    "BudgetConformance",
    "ConcurrencyConformance",
    "ContractConformance",
    "PresenceConformance",
    "SettleConformance",
    "RegistryConformance",
    "StoreConformance",
    "WindowConformance",
]


class StoreConformance(
    ContractConformance,
    WindowConformance,
    SettleConformance,
    BreakerConformance,
    BudgetConformance,
    PresenceConformance,
    ConcurrencyConformance,
    RegistryConformance,
):
    """Every conformance test: subclass it as ``Test...`` and give it a ``store`` fixture
    (and optionally ``unavailable_store``; see the module docs)."""
