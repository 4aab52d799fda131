"""The console dialog's watch on the first-boot flag: inotify, through libc (no polling).

While the dialog prompts, the message path may configure the guest; the dialog then
stands down (see :mod:`ovmd.firstboot`). :class:`SysconfigWatch` is readable when
something changes in the directory of the flag files.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os

from ..paths import Paths
from .flag import initial_config_state, sysconfig_files

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
    it *before* the first :func:`~ovmd.firstboot.flag.initial_config_enabled` check, so
    that a change between the check and the first prompt cannot be missed.
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
        """Drain the pending events; True if INITIAL_CONFIG is now set to no.

        Only an explicit no counts: a file being rewritten in place (by an editor or a
        shell's ``>``) is empty or half written for a moment, and must not end the
        dialog. Our own writers (:func:`~ovmd.firstboot.flag.set_initial_config`) replace
        the file atomically.
        """
        while True:
            try:
                if not os.read(self.fd, 65536):
                    break
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    break
                raise
        return initial_config_state(self.paths) is False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "SysconfigWatch":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
