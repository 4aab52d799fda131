"""Byte transports to a XenStore server: a unix socket, or the guest device ``/dev/xen/xenbus``.

A transport only moves bytes; framing and request/reply matching live in
:mod:`ovmd.xenstore.client`. Both transports offer the same small interface
(``fileno``, ``send``, ``recv``, ``close``) so the client can be handed either, or a fake
in tests.

The file descriptor stays in blocking mode: the client asks ``select.poll`` whether it is
readable before reading when it must not block, and one read after a readable poll never
blocks. Quirks of the xenbus device (docs/protocol.md) handled here: a read always asks for at
least one whole message (never a zero length), each request is written with a single
``write()``, and an errno from ``write()`` (the kernel answers some failed requests, such
as a rejected WATCH, that way) becomes a :class:`XenStoreError` with that name.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from typing import List, Mapping, Optional, Tuple

from ..oserror import os_reason
from .errors import ERROR_NAMES, ConnectionClosedError, XenStoreError
from .protocol import HEADER_SIZE, MAX_PAYLOAD

log = logging.getLogger(__name__)

#: xenstored's privileged socket when ``$XENSTORED_PATH`` is not set.
DEFAULT_SOCKET = "/var/run/xenstored/socket"
#: The guest kernel's XenStore device.
XENBUS_DEVICE = "/dev/xen/xenbus"
#: How the error of :func:`open_default` begins when no candidate works.
NO_XENSTORE = "no XenStore found"
#: Bytes asked for per read: always at least one whole message.
READ_SIZE = 65536
assert READ_SIZE >= HEADER_SIZE + MAX_PAYLOAD

# errno values that mean the peer is gone rather than that one request failed.
_DISCONNECT_ERRNOS = frozenset(
    (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF, errno.ESHUTDOWN)
)


class Transport:
    """A connected byte stream to a XenStore server."""

    #: ``"unix"`` or ``"xenbus"``: which kind of peer this is.
    kind = "abstract"

    def __init__(self, path: str) -> None:
        self.path = path

    def fileno(self) -> int:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """Write all of ``data``; raises :class:`ConnectionClosedError` if the peer is gone."""
        raise NotImplementedError

    def recv(self) -> bytes:
        """One read (blocks if nothing is readable); ``b""`` means the peer closed."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return "<%s %s>" % (type(self).__name__, self.path)


def _closed(transport: Transport, action: str, exc: OSError) -> ConnectionClosedError:
    return ConnectionClosedError("%s %s failed: %s" % (action, transport.path, exc))


class UnixSocketTransport(Transport):
    """xenstored's unix socket (dom0, or a development server's guest socket)."""

    kind = "unix"

    def __init__(self, sock, path: str = "<socket>") -> None:
        super().__init__(path)
        self._sock = sock

    @classmethod
    def connect(cls, path: str) -> "UnixSocketTransport":
        import socket  # deferred: the xenbus transport does not need it

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise ConnectionClosedError("cannot connect to xenstored at %s: %s"
                                        % (path, os_reason(exc))) from exc
        return cls(sock, path)

    def fileno(self) -> int:
        return self._sock.fileno()

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise _closed(self, "writing to", exc) from exc

    def recv(self) -> bytes:
        try:
            return self._sock.recv(READ_SIZE)
        except OSError as exc:
            raise _closed(self, "reading from", exc) from exc

    def close(self) -> None:
        self._sock.close()


class XenbusTransport(Transport):
    """The guest kernel's ``/dev/xen/xenbus`` (or any fd that behaves like it)."""

    kind = "xenbus"

    def __init__(self, fd: int, path: str = XENBUS_DEVICE) -> None:
        super().__init__(path)
        self._fd = fd

    @classmethod
    def open(cls, path: str = XENBUS_DEVICE) -> "XenbusTransport":
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise ConnectionClosedError("cannot open %s: %s" % (path, os_reason(exc))) from exc
        return cls(fd, path)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ConnectionClosedError("%s is closed" % self.path)
        return self._fd

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fileno(), view)
            except OSError as exc:
                if exc.errno in _DISCONNECT_ERRNOS:
                    raise _closed(self, "writing to", exc) from exc
                # The kernel refused this request (e.g. a WATCH it could not register).
                name = errno.errorcode.get(exc.errno or 0, "EIO")
                raise XenStoreError(name if name in ERROR_NAMES else "EIO",
                                    "%s refused the request: %s" % (self.path, exc)) from exc
            view = view[written:]

    def recv(self) -> bytes:
        try:
            # Never a zero length: the device would answer with an error, not b"".
            return os.read(self.fileno(), READ_SIZE)
        except OSError as exc:
            raise _closed(self, "reading from", exc) from exc

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def path_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be a XenStore (it is missing, or neither a unix socket nor a
    character device), or None; whether a server answers there is not checked."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return os_reason(exc)
    if stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        return None
    return "neither a unix socket nor a character device (the xenbus device)"


def open_path(path: str) -> Transport:
    """Open an explicit path: a character device is xenbus, a socket is xenstored's socket."""
    problem = path_problem(path)
    if problem is not None:
        raise ConnectionClosedError("cannot reach xenstored at %s: %s" % (path, problem))
    if stat.S_ISCHR(os.stat(path).st_mode):
        return XenbusTransport.open(path)
    return UnixSocketTransport.connect(path)


def candidate_paths(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Where :func:`open_default` looks, in order.

    ``$XENSTORED_PATH`` alone when it is set (as libxenstore does: an explicit choice must
    not silently fall back to the real server); else the default socket, then the device.
    """
    explicit = (os.environ if environ is None else environ).get("XENSTORED_PATH")
    if explicit:
        return [explicit]
    return [DEFAULT_SOCKET, XENBUS_DEVICE]


def open_default(environ: Optional[dict] = None) -> Transport:
    """Open the first candidate that works; the error lists every attempt."""
    failures: List[Tuple[str, str]] = []
    for path in candidate_paths(environ):
        try:
            transport = open_path(path)
        except ConnectionClosedError as exc:
            failures.append((path, exc.detail))
            continue
        log.debug("connected to xenstored via %s (%s)", path, transport.kind)
        return transport
    raise ConnectionClosedError(
        NO_XENSTORE + ": " + "; ".join("%s" % detail for _, detail in failures))
