"""The first-boot flag ``INITIAL_CONFIG=yes|no`` in the sysconfig files.

Oracle Linux 5/6 keep the flag in ``/etc/sysconfig/ovmd``; OL7+ in
``/etc/sysconfig/ovm-template-initial-config`` (docs/command-lines.md). We read both
(where both set the flag, the OL7+ file wins) and, when setting the flag, rewrite every
one of them that exists (``/etc/sysconfig/ovmd`` when neither does), preserving all
other lines. The daemon and the runner both read and write the flag through this module.
"""
from __future__ import annotations

import re
from typing import List, Optional

from ..fsutil import atomic_write, read_text
from ..paths import Paths

VARIABLE = "INITIAL_CONFIG"
_LINE = re.compile(r"^\s*(?:export\s+)?INITIAL_CONFIG\s*=\s*(.*?)\s*$")


def _value(text: str) -> Optional[str]:
    found = None
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            found = match.group(1).strip("'\"").lower()
    return found


def sysconfig_files(paths: Paths) -> List[str]:
    return [paths.sysconfig_ovmd, paths.sysconfig_initial_config]


def initial_config_value(paths: Paths) -> Optional[str]:
    """INITIAL_CONFIG (lower case), the OL7+ file winning; None when neither sets it."""
    value = None
    for path in sysconfig_files(paths):
        try:
            text = read_text(path)
        except OSError:  # a directory there, say: it sets nothing
            text = None
        found = _value(text) if text is not None else None
        if found is not None:
            value = found
    return value


_YES = ("yes", "true", "1")
_NO = ("no", "false", "0")


def initial_config_enabled(paths: Paths) -> bool:
    """True if the guest still waits for its first-boot run (``INITIAL_CONFIG=yes``)."""
    return initial_config_value(paths) in _YES


def initial_config_state(paths: Paths) -> Optional[bool]:
    """True for yes, False for an explicit no; None while the flag says neither (not set,
    or a file caught half rewritten in place: ``INITIAL_CONFIG=`` with its value not
    written yet)."""
    value = initial_config_value(paths)
    return True if value in _YES else False if value in _NO else None


def set_initial_config(paths: Paths, enabled: bool) -> List[str]:
    """Write ``INITIAL_CONFIG=yes|no`` durably; returns the files written."""
    wanted = "%s=%s" % (VARIABLE, "yes" if enabled else "no")
    written = []
    existing = [p for p in sysconfig_files(paths) if read_text(p) is not None]
    for path in existing or [paths.sysconfig_ovmd]:
        text = read_text(path)
        lines = (text or "").splitlines()
        replaced = False
        for index, line in enumerate(lines):
            if _LINE.match(line):
                lines[index] = wanted
                replaced = True
        if not replaced:
            lines.append(wanted)
        # mode None: the file's own (never a symbolic link's), 0644 for a new one
        atomic_write(path, ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"),
                     None, make_dirs=0o755, root=paths.root)
        written.append(path)
    return written


def mark_configured(paths: Paths) -> List[str]:
    """Set INITIAL_CONFIG=no (atomically, durably, keeping every other line and the
    mode); the files written."""
    return set_initial_config(paths, False)
