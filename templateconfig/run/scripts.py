"""A module script as the runner sees it: its record, what its interpreter line says, and
the spec a standard module's header names.

The interpreter line decides how a module runs: a Python module (its ``#!`` names a
python) runs in a fork of the runner, any other script is exec'd; and only a module that
records its changes through ``templateconfig.common`` can be trusted in plan mode.

A standard module's header names its declaration (``# spec:
templateconfig.modules.NAME``): the runner then takes its descriptors and validators
from that :class:`~templateconfig.modules.support.spec.ModuleSpec`, in its own process,
instead of running the script. Only the standard modules' package is imported this way:
a third-party script is never imported nor run with an option of ours.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, List, NamedTuple, Optional

if TYPE_CHECKING:
    from templateconfig.modules.support.spec import ModuleSpec

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


class SpecError(Exception):
    """A script's header names a spec that cannot be used; the message says why."""


def declared_spec(path: str) -> Optional[str]:
    """The ``spec`` field of the script's header (``templateconfig.modules.NAME``), or
    None (no such field, or no readable header: a third-party module)."""
    from templateconfig.header import HeaderError, parse_header

    try:
        return parse_header(path).fields.get("spec") or None
    except HeaderError:
        return None


def load_spec(dotted: str) -> ModuleSpec:
    """The ``SPEC`` of the standard module ``dotted``; :class:`SpecError` if ``dotted`` is
    not a module of the standard modules' package or has no spec."""
    import importlib

    from templateconfig.modules.support.spec import SPEC_PACKAGE, ModuleSpec

    name = dotted[len(SPEC_PACKAGE):] if dotted.startswith(SPEC_PACKAGE) else ""
    if not name.isidentifier():
        raise SpecError("spec %r is not a module of %s (only the standard modules name a "
                        "spec)" % (dotted, SPEC_PACKAGE.rstrip(".")))
    try:
        module = importlib.import_module(dotted)
    except Exception as exc:
        raise SpecError("cannot import its spec %s: %s: %s" % (dotted, type(exc).__name__, exc))
    spec = getattr(module, "SPEC", None)
    if not isinstance(spec, ModuleSpec):
        raise SpecError("%s has no SPEC (a ModuleSpec)" % dotted)
    return spec
