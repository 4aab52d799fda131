"""The process title of a forked module process: what ``ps`` shows for it.

A Python module runs in a fork of the runner (:mod:`templateconfig.run.child`), so ``ps``,
``top`` and ``/proc/PID/cmdline`` would show the runner's command line for every module,
and a hung module could not be told from the runner or from another module. The child
shows what a fresh ``python SCRIPT TARGET`` would: the interpreter as its ``#!`` line
names it (``#!/usr/bin/env python3``: ``python3``, as ``env`` executes it;
``#!/usr/bin/python3``: ``/usr/bin/python3``, as the kernel does), then the script and
its arguments; and its ``comm`` (``ps -o comm``, ``top``, ``pgrep``) is the script's
name, as for an executed script.

How. The kernel reads ``/proc/PID/cmdline`` from the process's own memory: the area
between ``arg_start`` and ``arg_end`` (``/proc/self/stat`` fields 48 and 49) that holds
the argv the runner was started with. The child, a copy of the runner's memory, writes
its arguments there in place, NUL-separated, and NUL-pads the rest (``ps`` drops the
padding), as setproctitle does; this needs no privilege. The other way, pointing the
kernel at a new area with ``prctl(PR_SET_MM_ARG_START/ARG_END)``, needs
``CAP_SYS_RESOURCE``, which containers commonly drop (the test machine's does), so it
is not used. A title longer than the runner's argv (``ovm-template-config configure``
typed by hand, a module with a long name) continues into the environment strings that
follow it, as setproctitle does: the child has the C library copy its environment off
that area first (``clearenv``, then ``setenv`` of every variable: the module's
environment, unchanged), and the kernel then shows the title up to its first NUL, so it
is one string there, its words joined by spaces. ``prctl(PR_SET_NAME)`` sets ``comm``
(15 bytes).

Cost: the parent reads ``/proc/self/stat`` once per runner and builds each title
(:func:`prepare`, a few string operations, done for a module started ahead while the
previous one runs); the child makes one ``memmove`` and one ``prctl``, and only when the
title does not fit, one ``setenv`` per variable.
"""
from __future__ import annotations

import functools
import os
from typing import Any, List, NamedTuple, Optional, Sequence

#: prctl(2) options
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
#: The longest ``comm`` the kernel keeps (TASK_COMM_LEN less its NUL).
COMM_LENGTH = 15


class ArgumentArea(NamedTuple):
    """Where the kernel finds this process's command line and environment strings."""

    arg_start: int
    arg_end: int
    env_start: int
    env_end: int

    @property
    def room(self) -> int:
        """How many bytes a title may have (its NUL included), the environment strings
        included when they follow the arguments directly (they always do on Linux)."""
        if self.env_start == self.arg_end and self.env_end > self.env_start:
            return self.env_end - self.arg_start
        return self.arg_end - self.arg_start


@functools.lru_cache(maxsize=None)
def libc() -> Optional[Any]:
    """The C library, with ``prctl``'s argument types declared (loaded once, in the
    runner: its children only call it), or None where there is none."""
    import ctypes

    try:
        library = ctypes.CDLL(None, use_errno=True)
        prctl = library.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                      ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return library


@functools.lru_cache(maxsize=None)
def argument_area() -> Optional[ArgumentArea]:
    """This process's argument area (the same in its forks), or None where the kernel
    does not say (not Linux, Linux before 3.5)."""
    try:
        with open("/proc/self/stat", "rb") as handle:
            stat = handle.read()
        # the fields after the command name (which may hold anything but ends in ")"):
        # field 3 on, so field N is at N - 3
        fields = stat[stat.rindex(b")") + 2:].split()
        area = ArgumentArea(*(int(fields[n - 3]) for n in (48, 49, 50, 51)))
    except (OSError, ValueError, IndexError):
        return None
    return area if 0 < area.arg_start < area.arg_end else None


def title_words(shebang: Optional[Sequence[str]], argv: Sequence[str]) -> List[str]:
    """The command line a fresh process would have for ``argv`` (``[script, args...]``)
    run through its ``#!`` line ``shebang`` (split; None: no such line)."""
    if not shebang:
        return list(argv)
    if os.path.basename(shebang[0]) == "env":
        return [word for word in shebang[1:] if word != "-S"] + list(argv)
    # the kernel passes what follows the interpreter as one argument
    return [shebang[0]] + ([" ".join(shebang[1:])] if len(shebang) > 1 else []) + list(argv)


class Title(NamedTuple):
    """A process title, ready for the child to set (built by the parent)."""

    words: List[str]
    comm: bytes
    area: ArgumentArea


def prepare(shebang: Optional[Sequence[str]], argv: Sequence[str]) -> Optional[Title]:
    """The title of the module process ``argv`` (``[script, args...]``) whose ``#!`` line
    is ``shebang``; None where a title cannot be set."""
    area = argument_area()
    if area is None or libc() is None:
        return None
    comm = os.path.basename(argv[0]).encode("utf-8", "surrogateescape")[:COMM_LENGTH]
    return Title(title_words(shebang, argv), comm, area)


def apply(title: Optional[Title]) -> None:
    """Show ``title`` for this process (a forked module process, its environment already
    the module's); see the module docstring."""
    library = libc()
    if title is None or library is None:
        return
    import ctypes

    area = title.area
    fits = b"\0".join(os.fsencode(w) for w in title.words) + b"\0"
    size = area.arg_end - area.arg_start
    if len(fits) <= size:
        data, end = fits, area.arg_end
    else:
        data = (b" ".join(os.fsencode(w) for w in title.words)[:area.room - 1] + b"\0")
        end = area.arg_start + area.room
        if end > area.arg_end:  # the environment strings are about to be written over
            library.clearenv()
            for key, value in os.environb.items():
                library.setenv(key, value, 1)
    ctypes.memmove(area.arg_start, data, len(data))
    ctypes.memset(area.arg_start + len(data), 0, end - area.arg_start - len(data))
    comm = ctypes.create_string_buffer(title.comm)
    library.prctl(PR_SET_NAME, ctypes.addressof(comm), 0, 0, 0)
