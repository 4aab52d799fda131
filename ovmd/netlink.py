"""rtnetlink, the few messages the address reporter needs, built and parsed with ``struct``.

The daemon learns the guest's links and addresses from the kernel's routing socket
(``NETLINK_ROUTE``): a dump of each at start (``RTM_GETLINK``, ``RTM_GETADDR``), then the
notifications of the multicast groups :data:`GROUPS` as they happen. This module does no
I/O: :func:`dump_request` builds a request, :func:`parse` turns one datagram into
:class:`Message` records whose body is a :class:`Link`, :class:`LinkGone`,
:class:`Address`, :class:`Done` or :class:`Error` (``None`` for what we do not use).
Malformed bytes raise :class:`NetlinkError` and nothing else (the parser is fuzzed).

Layouts (host byte order, every item padded to 4 bytes)::

    nlmsghdr   u32 length, u16 type, u16 flags, u32 seq, u32 pid       16 bytes
    ifinfomsg  u8 family, pad, u16 type, s32 index, u32 flags, u32 change  16 bytes
    ifaddrmsg  u8 family, u8 prefixlen, u8 flags, u8 scope, u32 index  8 bytes
    rtattr     u16 length, u16 type, payload                           4 + n bytes
"""
from __future__ import annotations

import socket
import struct
from typing import Dict, List, NamedTuple, Optional, Union

# message types
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22

# nlmsghdr flags
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP_INTR = 0x10  # the dump was interrupted by a change: it may be inconsistent
NLM_F_DUMP = 0x300      # NLM_F_ROOT | NLM_F_MATCH

# multicast groups (the bit masks bind() takes)
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR

# link attributes and flags
IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFF_UP = 0x1
IFF_LOOPBACK = 0x8

# address attributes, flags and scopes
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8           # u32: the full flags (the header's u8 holds only the low 8 bits)
IFA_F_SECONDARY = 0x01  # IPv4: a further address in the subnet of another
IFA_F_TEMPORARY = 0x01  # IPv6: a privacy address (RFC 4941); the same bit as SECONDARY
IFA_F_NODAD = 0x02
IFA_F_OPTIMISTIC = 0x04
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_SITE = 200
RT_SCOPE_LINK = 253
RT_SCOPE_HOST = 254
RT_SCOPE_NOWHERE = 255

AF_UNSPEC = 0
AF_BRIDGE = 7

NLMSGHDR = struct.Struct("=IHHII")
IFINFOMSG = struct.Struct("=BxHiII")
IFADDRMSG = struct.Struct("=BBBBI")
RTATTR = struct.Struct("=HH")
_ERRNO = struct.Struct("=i")
_U32 = struct.Struct("=I")
#: rtattr types carry two flag bits (nested, network byte order) above the type.
_NLA_TYPE_MASK = 0x3FFF
_ADDRESS_BYTES = {socket.AF_INET: 4, socket.AF_INET6: 16}


class NetlinkError(ValueError):
    """Bytes that are not well-formed rtnetlink."""


class Link(NamedTuple):
    """``RTM_NEWLINK``: a link exists (a dump entry) or changed (a notification)."""
    family: int
    ifindex: int
    flags: int
    name: Optional[str]      # IFLA_IFNAME, None if the message had none
    hwaddr: Optional[str]    # IFLA_ADDRESS as ``aa:bb:...`` (lower case), None if absent


class LinkGone(NamedTuple):
    """``RTM_DELLINK``."""
    family: int
    ifindex: int


class Address(NamedTuple):
    """``RTM_NEWADDR`` (``new``) or ``RTM_DELADDR``, of an IPv4 or IPv6 address."""
    new: bool
    family: int
    ifindex: int
    prefixlen: int
    flags: int               # IFA_FLAGS when present, else the header's 8 bits
    scope: int
    address: bytes           # 4 or 16 bytes: IFA_LOCAL, else IFA_ADDRESS

    @property
    def text(self) -> str:
        """The address as text (IPv6 in the RFC 5952 form ``inet_ntop`` writes)."""
        return socket.inet_ntop(self.family, self.address)


class Done(NamedTuple):
    """``NLMSG_DONE``: the end of a dump (``error`` is 0, or a negative errno)."""
    error: int


class Error(NamedTuple):
    """``NLMSG_ERROR``: the answer to a request; ``error`` 0 is an acknowledgement,
    else a negative errno."""
    error: int


Body = Union[Link, LinkGone, Address, Done, Error, None]


class Message(NamedTuple):
    type: int
    flags: int
    seq: int
    pid: int
    body: Body


def _align(length: int) -> int:
    return (length + 3) & ~3


def encode(msg_type: int, flags: int, seq: int, payload: bytes, pid: int = 0) -> bytes:
    """One netlink message: the header, then ``payload`` (padded to 4 bytes)."""
    length = NLMSGHDR.size + len(payload)
    padding = b"\0" * (_align(length) - length)
    return NLMSGHDR.pack(length, msg_type, flags, seq, pid) + payload + padding


def dump_request(msg_type: int, seq: int) -> bytes:
    """A request to dump every link (``RTM_GETLINK``) or every address of every family
    (``RTM_GETADDR``)."""
    if msg_type == RTM_GETLINK:
        body = IFINFOMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
    elif msg_type == RTM_GETADDR:
        body = IFADDRMSG.pack(AF_UNSPEC, 0, 0, 0, 0)
    else:
        raise ValueError("not a dump this module knows: type %d" % msg_type)
    return encode(msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, body)


def parse(data: bytes) -> List[Message]:
    """The messages of one datagram, in order."""
    messages = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < NLMSGHDR.size:
            raise NetlinkError("%d stray bytes after the last message" % (len(data) - offset))
        length, msg_type, flags, seq, pid = NLMSGHDR.unpack_from(data, offset)
        if length < NLMSGHDR.size or offset + length > len(data):
            raise NetlinkError("message length %d does not fit the %d bytes left"
                               % (length, len(data) - offset))
        payload = bytes(data[offset + NLMSGHDR.size:offset + length])
        messages.append(Message(msg_type, flags, seq, pid, _body(msg_type, payload)))
        offset += _align(length)
    return messages


def _body(msg_type: int, payload: bytes) -> Body:
    if msg_type in (RTM_NEWLINK, RTM_DELLINK):
        return _link(msg_type, payload)
    if msg_type in (RTM_NEWADDR, RTM_DELADDR):
        return _address(msg_type, payload)
    if msg_type == NLMSG_DONE:
        # older kernels send no payload; newer ones an int (0, or a negative errno)
        return Done(_ERRNO.unpack_from(payload)[0] if len(payload) >= _ERRNO.size else 0)
    if msg_type == NLMSG_ERROR:
        if len(payload) < _ERRNO.size:
            raise NetlinkError("NLMSG_ERROR without an error code")
        return Error(_ERRNO.unpack_from(payload)[0])
    return None


def _link(msg_type: int, payload: bytes) -> Union[Link, LinkGone]:
    if len(payload) < IFINFOMSG.size:
        raise NetlinkError("link message of %d bytes is shorter than ifinfomsg" % len(payload))
    family, _type, index, flags, _change = IFINFOMSG.unpack_from(payload)
    if msg_type == RTM_DELLINK:
        return LinkGone(family, index)
    attrs = attributes(payload, IFINFOMSG.size)
    name = attrs.get(IFLA_IFNAME)
    hwaddr = attrs.get(IFLA_ADDRESS)
    return Link(family, index, flags,
                name.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
                if name is not None else None,
                format_hwaddr(hwaddr) if hwaddr is not None else None)


def _address(msg_type: int, payload: bytes) -> Optional[Address]:
    if len(payload) < IFADDRMSG.size:
        raise NetlinkError("address message of %d bytes is shorter than ifaddrmsg"
                           % len(payload))
    family, prefixlen, flags, scope, index = IFADDRMSG.unpack_from(payload)
    attrs = attributes(payload, IFADDRMSG.size)
    size = _ADDRESS_BYTES.get(family)
    if size is None:
        return None  # another family (DECnet, MCTP, ...): not an IP address
    raw = attrs.get(IFA_LOCAL, attrs.get(IFA_ADDRESS))
    if raw is None or len(raw) != size:
        raise NetlinkError("address message for index %d has no %d-byte address"
                           % (index, size))
    extended = attrs.get(IFA_FLAGS)
    if extended is not None and len(extended) >= _U32.size:
        flags = _U32.unpack_from(extended)[0]
    return Address(msg_type == RTM_NEWADDR, family, index, prefixlen, flags, scope, raw)


def attributes(payload: bytes, offset: int) -> Dict[int, bytes]:
    """The rtattrs from ``offset`` on, type -> payload (a repeated type: the last wins)."""
    attrs: Dict[int, bytes] = {}
    while offset < len(payload):
        if len(payload) - offset < RTATTR.size:
            raise NetlinkError("truncated attribute header")
        length, attr_type = RTATTR.unpack_from(payload, offset)
        if length < RTATTR.size or offset + length > len(payload):
            raise NetlinkError("attribute length %d does not fit the %d bytes left"
                               % (length, len(payload) - offset))
        attrs[attr_type & _NLA_TYPE_MASK] = payload[offset + RTATTR.size:offset + length]
        offset += _align(length)
    return attrs


def format_hwaddr(raw: bytes) -> str:
    """``b'\\x00\\x16\\x3e...'`` -> ``'00:16:3e:...'``."""
    return ":".join("%02x" % byte for byte in raw)
