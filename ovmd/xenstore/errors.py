"""The exceptions of the XenStore package.

Everything this package raises derives from :class:`XenStoreError`, which is an
``OSError`` carrying the XenStore error *name* (``ENOENT``, ``EACCES``, ...) so that
callers can test ``err.name`` the way libxenstore users test ``errno``.
"""
from __future__ import annotations

import errno as _errno
import os

#: Every error name a XenStore server may send, in xenstored's order (docs/protocol.md).
ERROR_NAMES = (
    "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
    "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM",
)


class XenStoreError(OSError):
    """A failed XenStore operation; ``name`` is the XenStore error name."""

    def __init__(self, name: str, detail: str = "") -> None:
        if name not in ERROR_NAMES:
            name = "EINVAL"  # an unknown name is treated as EINVAL, as libxenstore does
        self.name = name
        self.detail = detail
        code = getattr(_errno, name, _errno.EINVAL)
        text = os.strerror(code)
        super().__init__(code, "%s (%s)%s" % (text, name, ": " + detail if detail else ""))

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (self.__class__, (self.name, self.detail))


class ProtocolError(XenStoreError):
    """The byte stream is not valid XenStore framing (bad header, oversized payload)."""

    def __init__(self, detail: str) -> None:
        super().__init__("EIO", detail)

    def __reduce__(self):
        return (self.__class__, (self.detail,))


class InvalidPathError(XenStoreError):
    """A path breaks XenStore's rules; raised before anything is sent."""

    def __init__(self, path: str, why: str) -> None:
        self.path = path
        super().__init__("EINVAL", "invalid path %r: %s" % (path, why))

    def __reduce__(self):
        return (self.__class__, (self.path, self.detail.split(": ", 1)[-1]))


class ConnectionClosedError(XenStoreError):
    """The connection to the XenStore server was closed or broke."""

    def __init__(self, detail: str = "connection to xenstored closed") -> None:
        super().__init__("EIO", detail)

    def __reduce__(self):
        return (self.__class__, (self.detail,))
