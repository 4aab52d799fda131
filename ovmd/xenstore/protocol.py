"""XenStore wire format: message types, framing, string payloads and path rules.

This module is pure (no I/O) so that the client, the development server and the tests
share one definition of the protocol (docs/protocol.md). A message is a 16-byte header of
four host-order ``uint32`` (type, req_id, tx_id, len) followed by ``len`` payload bytes,
at most 4096.
"""
from __future__ import annotations

import enum
import re
import struct
from typing import List, NamedTuple, Optional

from .errors import InvalidPathError, ProtocolError, XenStoreError

HEADER = struct.Struct("=IIII")
HEADER_SIZE = HEADER.size  # 16
MAX_PAYLOAD = 4096
#: Longest path *relative to* ``/local/domain/<id>/`` that xenstored accepts.
MAX_RELATIVE_PATH = 2048
#: An absolute path may carry the ``/local/domain/<id>/`` prefix on top of that.
MAX_ABSOLUTE_PATH = MAX_RELATIVE_PATH + len("/local/domain/4294967295/")


class Op(enum.IntEnum):
    """XenStore message types (xsd_sockmsg_type)."""

    CONTROL = 0
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    # 20 is XS_RESTRICT in old Xen, now invalid
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


class Packet(NamedTuple):
    """One framed XenStore message."""

    type: int
    req_id: int
    tx_id: int
    payload: bytes


def encode(type_: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Frame one message; refuses payloads xenstored would drop the connection for."""
    if len(payload) > MAX_PAYLOAD:
        raise XenStoreError(
            "E2BIG", "payload of %d bytes exceeds the %d-byte limit" % (len(payload), MAX_PAYLOAD)
        )
    return HEADER.pack(int(type_), req_id & 0xFFFFFFFF, tx_id & 0xFFFFFFFF, len(payload)) + payload


class PacketParser:
    """Incremental decoder: feed it bytes as they arrive, get whole packets back.

    Copes with a header and body split across any number of reads. A header announcing
    more than ``MAX_PAYLOAD`` bytes raises :class:`ProtocolError`; the parser then stays
    broken (the stream cannot be resynchronised), as a real connection would be dropped.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header: Optional[tuple] = None
        self._broken: Optional[str] = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> List[Packet]:
        if self._broken:
            raise ProtocolError(self._broken)
        self._buffer += data
        packets = []
        while True:
            if self._header is None:
                if len(self._buffer) < HEADER_SIZE:
                    break
                header = HEADER.unpack_from(self._buffer)
                if header[3] > MAX_PAYLOAD:
                    self._broken = "message announces %d payload bytes (limit %d)" % (
                        header[3], MAX_PAYLOAD)
                    self._buffer.clear()
                    raise ProtocolError(self._broken)
                del self._buffer[:HEADER_SIZE]
                self._header = header
            length = self._header[3]
            if len(self._buffer) < length:
                break
            payload = bytes(self._buffer[:length])
            del self._buffer[:length]
            type_, req_id, tx_id, _ = self._header
            self._header = None
            packets.append(Packet(type_, req_id, tx_id, payload))
        return packets


def join_strings(*parts: str, terminate: bool = True) -> bytes:
    """NUL-separate strings as XenStore requests do (``a\\0b\\0``)."""
    data = b"\0".join(p.encode("utf-8") for p in parts)
    return data + b"\0" if terminate else data


def split_strings(payload: bytes) -> List[str]:
    """Split a NUL-separated payload; a trailing NUL does not make an empty last item."""
    if not payload:
        return []
    if payload.endswith(b"\0"):
        payload = payload[:-1]
    return [p.decode("utf-8", "surrogateescape") for p in payload.split(b"\0")]


def decode_error(payload: bytes) -> XenStoreError:
    """Turn an ERROR reply's payload (``ENOENT\\0``) into an exception."""
    name = payload.split(b"\0", 1)[0].decode("ascii", "replace")
    return XenStoreError(name)


_PATH_CHARS = re.compile(r"[A-Za-z0-9_@/-]*\Z")


def validate_path(path: str, *, watch: bool = False) -> str:
    """Check XenStore's path rules and return the path unchanged.

    Allowed characters are ``[A-Za-z0-9_@/-]``; no ``//``; no trailing ``/`` (except the
    root ``/`` itself); not empty. With ``watch=True`` the special watch paths
    ``@introduceDomain``/``@releaseDomain`` (which start with ``@``) are accepted.
    """
    if not isinstance(path, str) or not path:
        raise InvalidPathError(str(path), "empty path")
    if not _PATH_CHARS.match(path):
        bad = sorted({c for c in path if not (c.isascii() and (c.isalnum() or c in "_@/-"))})
        raise InvalidPathError(path, "characters not allowed: %s" % "".join(bad))
    if path.startswith("@"):
        if watch:
            return path
        raise InvalidPathError(path, "special '@' paths are only valid for watches")
    if "//" in path:
        raise InvalidPathError(path, "contains '//'")
    if path != "/" and path.endswith("/"):
        raise InvalidPathError(path, "trailing '/'")
    limit = MAX_ABSOLUTE_PATH if path.startswith("/") else MAX_RELATIVE_PATH
    if len(path) > limit:
        raise InvalidPathError(path[:40] + "...", "longer than %d characters" % limit)
    return path
