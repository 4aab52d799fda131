"""Editing shared configuration text so that our changes can be found and undone.

Where we must touch a file we do not own (``/etc/hosts``, ``chrony.conf``,
``ntp.conf``, ``/etc/network/interfaces``), our lines go into one marked block and the
lines we disable are commented out with a marker. Both are recognisable, so an edit is
always computed from the text *without* our earlier edit: applying it twice gives the
same text (idempotency), and removing it gives the original back.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence

DISABLED = "#ovm# "


def _markers(name: str):
    return ("# BEGIN ovm-template-config %s" % name, "# END ovm-template-config %s" % name)


def has_managed(text: str, name: str) -> bool:
    """Whether ``text`` holds the block ``name``."""
    begin = _markers(name)[0]
    return any(line.strip() == begin for line in text.splitlines())


def strip_managed(text: str, name: str) -> str:
    """``text`` without the block ``name`` and with the lines we disabled restored."""
    begin, end = _markers(name)
    out: List[str] = []
    inside = False
    for line in text.splitlines():
        if line.strip() == begin:
            inside = True
            continue
        if inside:
            if line.strip() == end:
                inside = False
            continue
        if line.startswith(DISABLED):
            line = line[len(DISABLED):]
        out.append(line)
    return "\n".join(out) + "\n" if out else ""


def apply_managed(text: str, name: str, lines: Sequence[str],
                  disable: Optional[Callable[[str], bool]] = None) -> str:
    """``text`` with the block ``name`` holding ``lines`` (appended at the end), and every
    line for which ``disable(line)`` is true commented out with a marker.

    The previous block and disabled lines are undone first, so the result only depends on
    the original text and the arguments. No lines means no block.
    """
    base = strip_managed(text, name)
    out: List[str] = []
    for line in base.splitlines():
        if disable is not None and disable(line):
            line = DISABLED + line
        out.append(line)
    if lines:
        begin, end = _markers(name)
        out += [begin] + list(lines) + [end]
    return "\n".join(out) + "\n" if out else ""
