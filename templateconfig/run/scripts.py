"""A module script as the runner sees it: its record, and what its interpreter line says.

The interpreter line decides how a module runs: a Python module (its ``#!`` names a
python) runs in a fork of the runner, any other script is exec'd; and only a module that
records its changes through ``templateconfig.common`` can be trusted in plan mode.
"""
from __future__ import annotations

import os
from typing import List, NamedTuple, Optional

#: Source markers of a module that makes its changes through ``templateconfig.common``
#: (directly or through a standard module).
_COMMON_MARKERS = (b"templateconfig.common", b"templateconfig.modules",
                   b"from templateconfig import common")


class Module(NamedTuple):
    """One enabled module of a target."""

    priority: int
    name: str
    path: str


def read_shebang(path: str) -> Optional[List[str]]:
    """The interpreter line of a script, split (``#!/usr/bin/env python`` ->
    ``['/usr/bin/env', 'python']``), or None."""
    try:
        with open(path, "rb") as handle:
            first = handle.readline(256)
    except OSError:
        return None
    if not first.startswith(b"#!"):
        return None
    return first[2:].decode("utf-8", "replace").split() or None


def is_python_script(path: str) -> bool:
    """True if the script's shebang names a Python interpreter."""
    shebang = read_shebang(path)
    return shebang is not None and any("python" in os.path.basename(word) for word in shebang[:2])


def uses_common(path: str) -> bool:
    """True if a module records its changes through ``templateconfig.common`` (directly
    or through a standard module), so that it can be trusted in plan mode."""
    if not is_python_script(path):
        return False
    try:
        with open(path, "rb") as handle:
            source = handle.read(1 << 20)
    except OSError:
        return False
    return any(marker in source for marker in _COMMON_MARKERS)
