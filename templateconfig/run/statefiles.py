"""The runner's own files: under ``--root DIR`` they stay inside DIR, and they keep the
modes docs/formats.md gives them, whoever changed them since.

==========================================  ======  ========================================
file                                        mode    written by
==========================================  ======  ========================================
``/var/lib/ovm-template-config/``           0700    (the directory; the packages make it so)
``last-run.json``, ``run-state.json``,      0600    the runner (:mod:`.report`, :mod:`.state`,
``enumerate-cache.json``,                           :mod:`.enumcache`, :mod:`.applied`)
``applied-keys.json``
``<module>.applied``, ``<module>.saved``    0600    the standard modules
and any other file there
``<part>.generated``                        0644    the standard modules (a boot id, no secret)
``/run/ovmd/run.lock``                      0600    :mod:`.lock` (in the daemon's 0700 directory)
``/var/log/ovm-template-config.log``        0600    :mod:`.runlog`
==========================================  ======  ========================================

Every run that can change the system (not a dry run; a refused one too, before its
report), once it holds the run lock and before anything is written, calls
:func:`claim_state_files`:

- a directory on the way to these files that is a symbolic link leading out of the
  root is refused (one line naming the link; nothing runs);
- every file in the state directory is ours (the runner's and the standard modules'),
  and none of ours is a symbolic link: a link there is removed, never followed, and its
  file is written anew when it is next needed (a module whose ``.applied`` was a link
  applies its settings again);
- a file or directory with a wider mode than the table's gets the table's mode back,
  also on a run that then writes nothing (a steady-state boot).

The lock and the log put their own modes back, and replace a link, when they are opened.
"""
from __future__ import annotations

import os
import stat
from typing import List

from ovmd.fsutil import (
    PRIVATE_DIR,
    PRIVATE_FILE,
    check_inside_root,
    ensure_private_dir,
    link_target,
)
from ovmd.paths import Paths

#: Files in the state directory that are not private: the once-per-boot stamps.
_PUBLIC_SUFFIX = ".generated"
_PUBLIC_FILE = 0o644


def documented_mode(name: str) -> int:
    """The mode of the file ``name`` in the state directory (the table above)."""
    return _PUBLIC_FILE if name.endswith(_PUBLIC_SUFFIX) else PRIVATE_FILE


def claim_state_files(paths: Paths) -> List[str]:
    """Check that the runner's files resolve inside the root, remove links from the state
    directory and put modes back (module docstring); one line per thing put right, for
    the run log. Raises :class:`~ovmd.fsutil.OutsideRootError` (nothing changed) or
    another ``OSError``."""
    check_inside_root(paths.root, paths.log_file, action="append to")
    check_inside_root(paths.root, paths.report_dir, follow_leaf=True,
                      action="use the directory")
    notes = []
    try:
        current = stat.S_IMODE(os.stat(paths.report_dir).st_mode)
    except FileNotFoundError:
        current = PRIVATE_DIR
    if current & 0o077:
        notes.append("%s had mode %04o: put back to %04o" % (paths.report_dir, current,
                                                             PRIVATE_DIR))
    ensure_private_dir(paths.report_dir, paths.root)
    with os.scandir(paths.report_dir) as entries:
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                notes.append("%s was a symbolic link (to %s), not followed: removed, the file "
                             "is written anew" % (entry.path, link_target(entry.path)))
                os.unlink(entry.path)
                continue
            mode = documented_mode(entry.name)
            if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) & ~mode \
                    and _set_mode(entry.path, mode):
                notes.append("%s had mode %04o: put back to %04o" % (
                    entry.path, stat.S_IMODE(st.st_mode), mode))
    return notes


def _set_mode(path: str, mode: int) -> bool:
    """chmod through a descriptor (a file swapped for a link meanwhile is left alone);
    True if done."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        os.fchmod(fd, mode)
        return True
    finally:
        os.close(fd)
