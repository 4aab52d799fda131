"""Atomic, durable file writes: the one way ovmd and the template framework write files.

Every file (the parameter cache, the secret cache, the sysconfig flag, the run report
and state, the files modules write into the guest) is written the same way: a private
temporary file in the same directory, ``fsync``, ``rename`` over the target, ``fsync``
of the directory. A crash leaves either the old or the new content, never a torn file
(the lesson of agents that lost state on a crash: docs/formats.md).

Under a root other than ``/`` (``--root DIR``), a write must land inside the root: a
symbolic link on the way that leads outside it is refused (:class:`OutsideRootError`,
:func:`check_inside_root`), and a link at the file itself is replaced by the new regular
file, whose mode and owner never come from the link, nor from a file outside the root.
"""
from __future__ import annotations

import errno
import os
import stat
import time
from typing import Any, Optional

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class OutsideRootError(OSError):
    """A path under a root leads outside it through a symbolic link; nothing was done.

    ``path`` is what was to be changed, ``link`` the symbolic link on the way and
    ``target`` what it points to."""

    def __init__(self, action: str, path: str, link: str, target: str, root: str) -> None:
        self.path, self.link, self.target, self.root = path, link, target, root
        if link == path:
            where = "it is a symbolic link to %s" % target
        else:
            where = "%s is a symbolic link to %s" % (link, target)
        super().__init__(errno.EXDEV, "refusing to %s %s: %s, outside the root %s; remove "
                         "the link or make it point inside the root" % (action, path, where,
                                                                        root))

    def __str__(self) -> str:
        return self.strerror or ""

    def __reduce__(self):
        return (self.__class__, ("change", self.path, self.link, self.target, self.root))


def link_target(path: str) -> str:
    """What the symbolic link ``path`` points to, for a message ("?" if it is gone)."""
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def is_within(path: str, directory: str) -> bool:
    """True if the (absolute, normalised) ``path`` is ``directory`` or below it."""
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _is_root(root: Optional[str]) -> bool:
    return not root or os.path.abspath(root) == "/"


def check_inside_root(root: Optional[str], path: str, follow_leaf: bool = False,
                      action: str = "write") -> None:
    """Raise :class:`OutsideRootError` if reaching ``path`` (below ``root``) goes through
    a symbolic link that leads outside ``root``. ``follow_leaf``: the last component is
    followed too (a read, a directory to create in); otherwise a link there is the
    caller's to replace. Nothing to check when ``root`` is ``/`` (or None)."""
    if _is_root(root):
        return
    assert root is not None
    base = os.path.abspath(root)
    target = os.path.abspath(path)
    real_base = os.path.realpath(base)
    if not is_within(target, base):
        raise OutsideRootError(action, path, path, target, root)
    relative = os.path.relpath(target, base)
    parts = [] if relative == "." else relative.split("/")
    current = base
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        if index == len(parts) - 1 and not follow_leaf:
            return
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return  # the rest does not exist yet: nothing to follow
        except NotADirectoryError:
            return
        if stat.S_ISLNK(st.st_mode) and not is_within(os.path.realpath(current), real_base):
            raise OutsideRootError(action, path, current, os.readlink(current), root)


def _replaced_stat(path: str, root: Optional[str]) -> Optional[os.stat_result]:
    """What the file being replaced says about mode and owner: the file itself, or for a
    symbolic link, the regular file it names if that is inside the root; None if
    nothing (a new file, or a link to anything else)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISLNK(st.st_mode):
        return st
    if not _is_root(root) and not is_within(os.path.realpath(path),
                                            os.path.realpath(str(root))):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def ensure_private_dir(path: str, root: Optional[str] = None) -> None:
    """Create ``path`` (and parents) if missing; the leaf is made root-only (0700), also
    when it exists with a wider mode. Under ``root``, ``path`` must resolve inside it."""
    check_inside_root(root, path, follow_leaf=True, action="use the directory")
    if not os.path.isdir(path):
        os.makedirs(path, mode=PRIVATE_DIR, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)


def open_own_file(path: str, flags: int, mode: int) -> int:
    """Open ``path``, a file that is ours alone (a pid file, a lock, a log), creating it
    with ``mode``; the descriptor is close-on-exec.

    A symbolic link where the file belongs is never followed: it is removed (with a
    warning naming it and its target) and the file created in its place. An existing
    file with another mode gets ``mode`` back. ``flags`` are the access flags
    (``os.O_RDWR``, ``os.O_WRONLY | os.O_APPEND``...).
    """
    flags |= os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, mode)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        import logging

        logging.getLogger(__name__).warning(
            "%s was a symbolic link (to %s), not followed: replaced by a regular file",
            path, link_target(path))
        os.unlink(path)
        fd = os.open(path, flags | os.O_EXCL, mode)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: Optional[int] = PRIVATE_FILE, *,
                 uid: Optional[int] = None, gid: Optional[int] = None,
                 make_dirs: Optional[int] = PRIVATE_DIR, durable: bool = True,
                 root: Optional[str] = None) -> None:
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

    ``root``: the write must stay inside this root (:func:`check_inside_root`); a
    symbolic link at ``path`` itself is replaced by the new file, whose mode and owner
    then come from the regular file the link names inside the root, if any, else are
    those of a new file.
    """
    directory = os.path.dirname(path) or "."
    check_inside_root(root, path)
    if make_dirs == PRIVATE_DIR:
        ensure_private_dir(directory, root)
    elif make_dirs is not None and not os.path.isdir(directory):
        os.makedirs(directory, mode=make_dirs, exist_ok=True)
    current = _replaced_stat(path, root)
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
    """Overwrite ``path`` with zeros, then remove it (used for the secret cache). A
    symbolic link there is removed, never followed."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
            raise
        fd = -1  # a link, a directory, a socket: nothing of ours to zero
    if fd >= 0:
        try:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_size:
                os.pwrite(fd, b"\0" * st.st_size, 0)
                os.fsync(fd)
        finally:
            os.close(fd)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    except IsADirectoryError:
        return
    fsync_dir(os.path.dirname(path) or ".")


def aside_name(path: str) -> str:
    """``<path>.corrupt-<UTC timestamp>`` (with ``-2``, ``-3``... if taken)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = "%s.corrupt-%s" % (path, stamp)
    count = 1
    while os.path.lexists(aside):
        count += 1
        aside = "%s.corrupt-%s-%d" % (path, stamp, count)
    return aside


def set_aside(path: str, data: Optional[bytes] = None, root: Optional[str] = None) -> str:
    """Keep unreadable content for a human to look at, root-only, durably; returns where.

    ``data`` None: ``path`` itself (a file, or a directory where a file belongs) is
    renamed to :func:`aside_name` (0600, or 0700 for a directory). Otherwise ``data``
    (the unreadable part of ``path``) is written there as a new 0600 file and ``path``
    is left alone, for the caller to rewrite with what was readable.
    """
    aside = aside_name(path)
    if data is not None:
        atomic_write(aside, data, PRIVATE_FILE, make_dirs=None, root=root)
        return aside
    os.rename(path, aside)
    os.chmod(aside, PRIVATE_DIR if os.path.isdir(aside) else PRIVATE_FILE)
    fsync_dir(os.path.dirname(path) or ".")
    return aside


def read_bytes(path: str, follow_links: bool = True) -> Optional[bytes]:
    """The file's bytes, or None if it does not exist. ``follow_links`` false: a
    symbolic link at ``path`` is not followed (``OSError`` ELOOP), for files that are
    ours alone and so never a link."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow_links else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    with open(fd, "rb") as handle:
        return handle.read()


def read_text(path: str) -> Optional[str]:
    """The file's text (UTF-8; undecodable bytes kept as surrogates, so a rewrite keeps
    them), or None if it does not exist."""
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8", "surrogateescape")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
