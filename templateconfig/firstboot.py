"""First boot: the INITIAL_CONFIG flag, and the watch that lets the console dialog stand down.

Two paths may configure a freshly cloned guest: the message path (the host sends
parameters, ``ovmd`` runs ``ovm-template-config --initial-config --input FD configure``)
and the console dialog (``ovm-template-initial-config.service`` runs
``ovm-template-config --console-input --initial-config configure``). Whichever completes
first wins; the other stands down cleanly. The protocol:

* ``INITIAL_CONFIG=yes`` in ``/etc/sysconfig/ovm-template-initial-config`` (OL7+) or
  ``/etc/sysconfig/ovmd`` (OL5/6) means "not configured yet"; where both set it, the
  former wins (:func:`initial_config`).
* An ``--initial-config`` run takes the run lock (:mod:`templateconfig.runlock`), re-reads
  the flag *under the lock*, runs only if it is still yes, and sets it to no in every
  one of the two files that exists when the run succeeded (:func:`mark_configured`),
  still under the lock. So exactly one first-boot run happens; a later one exits 4.
* The console dialog watches the sysconfig directory with inotify
  (:class:`SysconfigWatch`) while it prompts, and stops as soon as the flag turns no.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from typing import List, Optional

from ovmd.paths import Paths
from ovmd.sysconfig import (
    initial_config_enabled, initial_config_value, set_initial_config, sysconfig_files,
)



def initial_config(paths: Paths) -> Optional[str]:
    """The value of INITIAL_CONFIG (lower case), or None when neither file sets it."""
    return initial_config_value(paths)


def initial_config_pending(paths: Paths) -> bool:
    """True if the guest still waits for its first-boot configuration: INITIAL_CONFIG is
    ``yes`` (``true`` and ``1`` too)."""
    return initial_config_enabled(paths)


def mark_configured(paths: Paths) -> List[str]:
    """Set INITIAL_CONFIG=no (atomically, durably, keeping every other line and the
    mode); the files written."""
    return set_initial_config(paths, False)


# --- inotify, through libc (no polling) -----------------------------------------------------

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
_MASK = (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE
         | IN_DELETE_SELF | IN_MOVE_SELF)

_libc = None


def _inotify():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.inotify_init1.argtypes = [ctypes.c_int]
        libc.inotify_init1.restype = ctypes.c_int
        libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        libc.inotify_add_watch.restype = ctypes.c_int
        _libc = libc
    return _libc


class SysconfigWatch:
    """Readable (``fileno()``) when something changes in the directory of the flag files;
    :meth:`poll` drains the events and says whether the first boot is over.

    It is the ``cancel`` object :func:`templateconfig.console.prompt_params` takes. Create
    it *before* the first :func:`initial_config_pending` check, so that a change between
    the check and the first prompt cannot be missed.
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        libc = _inotify()
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, "inotify_init1: %s" % os.strerror(code))
        self.fd = fd
        try:
            for directory in sorted({os.path.dirname(p) for p in sysconfig_files(paths)}):
                if libc.inotify_add_watch(fd, os.fsencode(directory), _MASK) < 0:
                    code = ctypes.get_errno()
                    raise OSError(code, "inotify_add_watch %s: %s" % (directory, os.strerror(code)))
        except BaseException:
            os.close(fd)
            raise

    def fileno(self) -> int:
        return self.fd

    def poll(self) -> bool:
        """Drain the pending events; True if INITIAL_CONFIG is now set, and not to yes.

        A flag that is not set at all does not count: a file being rewritten in place (by
        an editor or a shell's ``>``) is empty for a moment, and must not end the dialog.
        Our own writers (:func:`mark_configured`, ovmd) replace the file atomically.
        """
        while True:
            try:
                if not os.read(self.fd, 65536):
                    break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
        return initial_config(self.paths) is not None and not initial_config_pending(self.paths)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "SysconfigWatch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
