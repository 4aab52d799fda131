"""How an ``OSError`` reads in the one-line messages the commands print.

``[Errno 13] Permission denied: '/etc/sysconfig/ovmd'`` is Python's; an operator reads
``/etc/sysconfig/ovmd: permission denied (run as root)``. Import-free beyond ``errno``:
the commands use it on their fast paths' error branches.
"""
from __future__ import annotations

import errno


def os_reason(err: OSError) -> str:
    """Why it failed, as a phrase: ``no such file or directory``, ``permission denied
    (run as root)``."""
    text = (err.strerror or str(err)).lower()
    if err.errno in (errno.EACCES, errno.EPERM):
        text += " (run as root)"
    return text


def os_error(err: OSError) -> str:
    """``FILE: reason`` (the reason alone when the error names no file)."""
    return "%s: %s" % (err.filename, os_reason(err)) if err.filename else os_reason(err)
