"""The rtnetlink datagrams captured from a real kernel (ovmd/fixtures/rtnetlink-capture.hex),
and an encoder of link and address messages independent of the parser under test."""
from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import List, Optional, Tuple

CAPTURE = Path(__file__).parent / "ovmd" / "fixtures" / "rtnetlink-capture.hex"


def captured() -> List[Tuple[str, bytes]]:
    """(what it answers, datagram), in the order they were read."""
    found, label = [], ""
    for line in CAPTURE.read_text().splitlines():
        if line.startswith("#"):
            label = line[1:].strip()
        elif line.strip():
            found.append((label, bytes.fromhex(line.strip())))
    return found


def attr(attr_type: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, attr_type) + payload + b"\0" * (-length % 4)


def message(msg_type: int, body: bytes, flags: int = 0, seq: int = 0, pid: int = 0) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, msg_type, flags, seq, pid) + body \
        + b"\0" * (-length % 4)


def link(index: int, flags: int, name: Optional[str] = None, mac: Optional[bytes] = None,
         family: int = 0, deleted: bool = False, **header) -> bytes:
    body = struct.pack("=BxHiII", family, 1, index, flags, 0)
    if mac is not None:
        body += attr(1, mac)  # IFLA_ADDRESS
    if name is not None:
        body += attr(3, name.encode() + b"\0")  # IFLA_IFNAME
    return message(17 if deleted else 16, body, **header)


def address(index: int, text: str, prefixlen: int, flags: int = 0x80, scope: int = 0,
            deleted: bool = False, extended_flags: Optional[int] = None,
            local: bool = True, peer: Optional[str] = None, **header) -> bytes:
    """An address message; ``local`` false puts the address in IFA_ADDRESS alone (as
    IPv6 does), ``peer`` adds the IFA_ADDRESS of a point-to-point link before it."""
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    raw = socket.inet_pton(family, text)
    body = struct.pack("=BBBBI", family, prefixlen, flags & 0xFF, scope, index)
    if peer is not None:
        body += attr(1, socket.inet_pton(family, peer))
    body += attr(2 if local else 1, raw)  # IFA_LOCAL or IFA_ADDRESS
    if extended_flags is not None:
        body += attr(8, struct.pack("=I", extended_flags))  # IFA_FLAGS
    return message(21 if deleted else 20, body, **header)
