"""Fixtures of the module tests; the helpers live in module_helpers.py."""
from __future__ import annotations

from module_helpers import (
    GoldenSuite,
    fixture_root,  # noqa: F401  (a fixture: pytest collects it here)
)


def pytest_generate_tests(metafunc):
    """Parametrize the shared golden checks from the test class's CASES and INVALID."""
    cls = metafunc.cls
    if cls is None or not issubclass(cls, GoldenSuite):
        return
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", cls.CASES, ids=repr)
    if "invalid_case" in metafunc.fixturenames:
        metafunc.parametrize("invalid_case", cls.INVALID, ids=repr)
