"""Durable, private file writes: the one place ovmd puts state on disk.

Every state file (the parameter cache, the secret cache, the sysconfig flag) is written
the same way (REFERENCE §7): a private temporary file in the same directory, ``fsync``,
``rename`` over the target, ``fsync`` of the directory. A crash leaves either the old or
the new content, never a torn file.
"""
from __future__ import annotations

import os
from typing import Optional

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def ensure_private_dir(path: str) -> None:
    """Create ``path`` (and parents) if missing; the leaf is made root-only (0700)."""
    if not os.path.isdir(path):
        os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = PRIVATE_FILE,
                 private_dir: bool = True) -> None:
    """Replace ``path`` with ``data`` durably (temp file, fsync, rename, fsync dir)."""
    directory = os.path.dirname(path) or "."
    if private_dir:
        ensure_private_dir(directory)
    elif not os.path.isdir(directory):
        os.makedirs(directory, exist_ok=True)
    tmp = "%s.tmp.%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(directory)


def wipe_file(path: str) -> None:
    """Overwrite ``path`` with zeros, then remove it (used for the secret cache)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        if size:
            os.write(fd, b"\0" * size)
            os.fsync(fd)
    finally:
        os.close(fd)
    _unlink_quietly(path)
    fsync_dir(os.path.dirname(path) or ".")


def read_text(path: str) -> Optional[str]:
    """The file's text, or None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
