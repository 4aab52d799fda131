"""Atomic, durable file writes: the one way ovmd and the template framework write files.

Every file (the parameter cache, the secret cache, the sysconfig flag, the run report
and state, the files modules write into the guest) is written the same way: a private
temporary file in the same directory, ``fsync``, ``rename`` over the target, ``fsync``
of the directory. A crash leaves either the old or the new content, never a torn file
(the lesson of agents that lost state on a crash: docs/formats.md).
"""
from __future__ import annotations

import os
from typing import Any, Optional

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


def atomic_write(path: str, data: bytes, mode: Optional[int] = PRIVATE_FILE, *,
                 uid: Optional[int] = None, gid: Optional[int] = None,
                 make_dirs: Optional[int] = PRIVATE_DIR, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically: the one way every file is written.

    A temporary file in the same directory gets the content, its mode and owner, then is
    renamed over ``path``; a reader sees the old or the new content, never a torn file.

    ``mode``: the file's mode; None keeps an existing file's mode (a new one gets 0644).
    An existing file's owner and SELinux context are kept unless ``uid``/``gid`` say
    otherwise. ``make_dirs``: create missing parent directories with this mode (the
    default makes the leaf directory root-only, as the state directories must be); None
    creates nothing. ``durable`` also fsyncs the file and the directory, so the new
    content survives a crash; files rewritten often and rebuilt after a crash (the run
    report) skip it.
    """
    directory = os.path.dirname(path) or "."
    if make_dirs == PRIVATE_DIR:
        ensure_private_dir(directory)
    elif make_dirs is not None and not os.path.isdir(directory):
        os.makedirs(directory, mode=make_dirs, exist_ok=True)
    try:
        current: Optional[os.stat_result] = os.stat(path)
    except FileNotFoundError:
        current = None
    temp = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path), os.urandom(6).hex()))
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 PRIVATE_FILE)
    try:
        if mode is None:
            mode = (current.st_mode & 0o7777) if current is not None else 0o644
        os.fchmod(fd, mode)
        _set_owner(fd, current, uid, gid)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        if current is not None:
            _copy_selinux_context(path, temp)
        os.replace(temp, path)
        temp = ""
        if durable:
            fsync_dir(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if temp:
            _unlink_quietly(temp)


def atomic_symlink(target: str, path: str) -> None:
    """Make ``path`` a symlink to ``target`` (kept as given), replacing what is there in
    one rename: no moment without the link."""
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".%s.%s.tmp" % (os.path.basename(path), os.urandom(6).hex()))
    os.symlink(target, temp)
    try:
        os.replace(temp, path)
    except BaseException:
        _unlink_quietly(temp)
        raise


def atomic_write_json(path: str, data: Any, mode: int = PRIVATE_FILE, **options: Any) -> None:
    """:func:`atomic_write` of ``data`` as one line of JSON (sorted keys, no indent: the
    C encoder only serves ``indent=None``)."""
    import json

    atomic_write(path, (json.dumps(data, sort_keys=True) + "\n").encode("utf-8"), mode,
                 **options)


def _set_owner(fd: int, current: Optional[os.stat_result], uid: Optional[int],
               gid: Optional[int]) -> None:
    """Give the temporary file the requested owner, else the replaced file's; only a
    requested owner that cannot be set is an error."""
    if uid is None and gid is None and current is None:
        return
    want_uid = uid if uid is not None else (current.st_uid if current is not None else -1)
    want_gid = gid if gid is not None else (current.st_gid if current is not None else -1)
    try:
        os.fchown(fd, want_uid, want_gid)
    except PermissionError:
        if uid is not None or gid is not None:
            raise


def _copy_selinux_context(source: str, dest: str) -> None:
    try:
        context = os.getxattr(source, "security.selinux")
    except OSError:
        return
    try:
        os.setxattr(dest, "security.selinux", context)
    except OSError:
        pass  # a filesystem without xattrs: the default context applies


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
