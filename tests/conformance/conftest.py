"""The conformance suite lives in ``resilience.testing.conformance`` (importable by anyone
writing a store); here it runs over every store of the library, through the ``store`` fixture
of ``tests/conftest.py`` (memory, fakeredis, a real redis-server, a 3-master cluster)."""

from __future__ import annotations

import pytest

# Detailed assertion messages from the suite's modules (imported by the tests of this folder).
pytest.register_assert_rewrite("resilience.testing.conformance")
