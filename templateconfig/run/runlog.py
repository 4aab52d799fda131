"""The run log: ``Paths.log_file`` (``/var/log/ovm-template-config.log``), one line per
event of a run.

The file is root-only (0600, tightened if it already exists); a symbolic link where it
belongs is replaced by a regular file, never followed, and under ``--root DIR`` its
directory must resolve inside DIR (:func:`ovmd.fsutil.check_inside_root`). A
:class:`~ovmd.secrets.RedactingFilter` on the handler removes secret values from every
record, so no call site has to.
"""
from __future__ import annotations

import logging
import os

from ovmd.fsutil import check_inside_root, open_own_file
from ovmd.paths import Paths
from ovmd.secrets import RedactingFilter

#: The logger whose records (the runner's and the module API's) go to the run log.
LOGGER = "templateconfig"


def open_run_log(paths: Paths, redactor: RedactingFilter) -> logging.StreamHandler:
    """Attach a handler writing ``templateconfig`` records to ``Paths.log_file``; records
    pass through ``redactor``. Detach with :func:`close_run_log`. Raises ``OSError``
    (:class:`~ovmd.fsutil.OutsideRootError` for a link leading out of the root)."""
    path = paths.log_file
    check_inside_root(paths.root, path, action="append to")
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    link = os.readlink(path) if os.path.islink(path) else None
    fd = open_own_file(path, os.O_WRONLY | os.O_APPEND, 0o600)
    stream = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(redactor)
    handler.setLevel(logging.INFO)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    if link is not None:
        logger.warning("the run log %s was a symbolic link (to %s), not followed: replaced "
                       "by a regular file", path, link)
    return handler


def close_run_log(handler: logging.StreamHandler) -> None:
    logging.getLogger(LOGGER).removeHandler(handler)
    handler.flush()
    handler.stream.close()
