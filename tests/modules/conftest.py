"""Fixtures of the module tests; the helpers live in module_helpers.py."""
from __future__ import annotations

from module_helpers import fixture_root  # noqa: F401  (a fixture: pytest collects it here)
