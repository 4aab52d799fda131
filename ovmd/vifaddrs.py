"""The guest's IP addresses per vif, as the host reads them (docs/protocol.md: "The guest's
IP addresses").

The contract with the host, defined here once:

* Xen's place, read by Xen's tools: ``attr/vif/<devid>/ipv4/<n>`` and
  ``attr/vif/<devid>/ipv6/<n>`` (n = 0, 1, ...), the vif being the one whose
  ``device/vif/<devid>/mac`` is the interface's MAC. ovmd owns ``attr/vif``.
* Oracle's channel: the message :data:`KEY` whose value is a compact JSON object, MAC
  (lower case) -> list of addresses, IPv4 first, e.g.
  ``{"00:16:3e:12:34:56":["192.168.97.201","fe80::216:3eff:fe12:3456"]}``: one entry per
  vif in ``device/vif``, an empty list for a vif without addresses.

Which addresses (:func:`reportable`): those of the links that are up and carry a vif's
MAC (several links with one MAC, such as a bridge or a VLAN on top of the vif, are
merged), except host and nowhere scope (loopback), tentative ones (IPv6 duplicate
address detection still running: reported once it passed) and failed ones, and IPv6
temporary (privacy) addresses, which change every day and are not how the VM is
reached. Deprecated addresses are still assigned and reachable: reported. Order: per
family, global before link-local, then by numeric value.

No I/O here: :class:`InterfaceTable` is the kernel's view built from
:mod:`ovmd.netlink` records, :func:`vif_addresses` joins it with the vif map, and
:func:`xen_nodes`, :func:`oracle_value` and :func:`xen_changes` say what to write.
"""
from __future__ import annotations

import json
import re
import socket
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from .channel import MAX_VALUE_BYTES
from .netlink import (
    AF_UNSPEC,
    IFA_F_DADFAILED,
    IFA_F_TEMPORARY,
    IFA_F_TENTATIVE,
    IFF_LOOPBACK,
    IFF_UP,
    RT_SCOPE_HOST,
    RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE,
    Address,
    Body,
    Link,
    LinkGone,
)

#: The Oracle-channel key of the report (docs/keys.md).
KEY = "com.oracle.linux.network.ipaddrs"
#: Xen's guest-written tree of per-vif attributes, relative to the domain home.
ATTR_VIF = "attr/vif"
#: Where the toolstack lists the guest's vifs (``<devid>/mac``), relative to the home.
DEVICE_VIF = "device/vif"
#: What :func:`oracle_value` says when there is nothing to report; never sent first.
EMPTY = "{}"

_MAC = re.compile(r"[0-9a-f]{1,2}([:-][0-9a-f]{1,2}){5}\Z")
_FAMILY_DIR = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6"}


class LinkInfo(NamedTuple):
    name: Optional[str]
    hwaddr: Optional[str]
    flags: int


class VifAddresses(NamedTuple):
    """One vif's report: its devid, its MAC, its addresses in order."""
    devid: str
    mac: str
    ipv4: Tuple[str, ...]
    ipv6: Tuple[str, ...]


def normalize_mac(text: str) -> Optional[str]:
    """``00:16:3E:0:1:2`` or ``00-16-3e-00-01-02`` -> ``00:16:3e:00:01:02``; None if it is
    not a MAC address."""
    text = text.strip().lower()
    if not _MAC.match(text):
        return None
    return ":".join(part.zfill(2) for part in re.split("[:-]", text))


class InterfaceTable:
    """Links and addresses as the kernel reported them (a dump, then notifications)."""

    def __init__(self) -> None:
        self.links: Dict[int, LinkInfo] = {}
        self.addresses: Dict[Tuple[int, int, bytes, int], Address] = {}

    def clear(self) -> None:
        self.links.clear()
        self.addresses.clear()

    def apply(self, body: Body) -> bool:
        """Take one record into account; True if the table changed."""
        if isinstance(body, Link):
            # other families (AF_INET6, AF_BRIDGE) repeat a link's state with their own
            # details; the AF_UNSPEC message carries every change we use
            if body.family != AF_UNSPEC:
                return False
            old = self.links.get(body.ifindex)
            info = LinkInfo(body.name, body.hwaddr, body.flags)
            if old is not None:  # a notification may leave out what did not change
                info = LinkInfo(info.name if info.name is not None else old.name,
                                info.hwaddr if info.hwaddr is not None else old.hwaddr,
                                info.flags)
            if info == old:
                return False
            self.links[body.ifindex] = info
            return True
        if isinstance(body, LinkGone):
            # an AF_BRIDGE RTM_DELLINK says a port left its bridge: the link stays
            if body.family != AF_UNSPEC:
                return False
            gone = [key for key in self.addresses if key[0] == body.ifindex]
            for key in gone:
                del self.addresses[key]
            return self.links.pop(body.ifindex, None) is not None or bool(gone)
        if isinstance(body, Address):
            key = (body.ifindex, body.family, body.address, body.prefixlen)
            if not body.new:
                return self.addresses.pop(key, None) is not None
            if self.addresses.get(key) == body:
                return False
            self.addresses[key] = body
            return True
        return False


def reportable(address: Address) -> bool:
    """Whether the host is told about this address (the rules in the module docstring)."""
    if address.scope in (RT_SCOPE_HOST, RT_SCOPE_NOWHERE):
        return False
    if address.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED):
        return False
    if address.family == socket.AF_INET6 and address.flags & IFA_F_TEMPORARY:
        return False
    return True


def _ordered(addresses: Iterable[Address]) -> Tuple[str, ...]:
    unique = {a.address: a for a in addresses}
    ranked = sorted(unique.values(), key=lambda a: (a.scope == RT_SCOPE_LINK, a.address))
    return tuple(a.text for a in ranked)


def vif_addresses(table: InterfaceTable, vifs: Dict[str, str]) -> List[VifAddresses]:
    """Each vif (devid -> normalized MAC) with the reportable addresses of the links that
    are up and carry its MAC; by devid."""
    up: Dict[str, Set[int]] = {}  # MAC -> indexes of the links that are up
    for index, link in table.links.items():
        if link.hwaddr is not None and link.flags & IFF_UP and not link.flags & IFF_LOOPBACK:
            up.setdefault(link.hwaddr, set()).add(index)
    report = []
    for devid in sorted(vifs, key=lambda d: (len(d), d)):
        mac = vifs[devid]
        on = up.get(mac, set())
        mine = [a for a in table.addresses.values() if a.ifindex in on and reportable(a)]
        report.append(VifAddresses(
            devid, mac, _ordered(a for a in mine if a.family == socket.AF_INET),
            _ordered(a for a in mine if a.family == socket.AF_INET6)))
    return report


def xen_nodes(report: Iterable[VifAddresses]) -> Dict[str, str]:
    """The ``attr/vif`` leaves (relative path -> address) the report consists of."""
    nodes = {}
    for vif in report:
        for family, addresses in ((socket.AF_INET, vif.ipv4), (socket.AF_INET6, vif.ipv6)):
            for number, address in enumerate(addresses):
                nodes["%s/%s/%s/%d" % (ATTR_VIF, vif.devid, _FAMILY_DIR[family], number)] = \
                    address
    return nodes


def xen_changes(current: Dict[str, str], wanted: Dict[str, str]
                ) -> Tuple[Dict[str, str], List[str]]:
    """What turns the ``current`` leaves into the ``wanted`` ones: the nodes to write
    (new or changed values) and the subtrees to remove, each as high up as possible
    (``attr/vif/1`` rather than its every address) and none inside another."""
    writes = {path: value for path, value in sorted(wanted.items())
              if current.get(path) != value}
    keep = set(wanted)
    for path in wanted:
        parts = path.split("/")
        keep.update("/".join(parts[:i]) for i in range(1, len(parts)))
    depth = ATTR_VIF.count("/") + 1
    removals: Set[str] = set()
    for path in current:
        if path in wanted:
            continue
        parts = path.split("/")
        for i in range(depth + 1, len(parts) + 1):
            candidate = "/".join(parts[:i])
            if candidate not in keep:
                removals.add(candidate)
                break
    outermost = [p for p in sorted(removals)
                 if not any(p.startswith(q + "/") for q in removals)]
    return writes, outermost


def oracle_value(report: Iterable[VifAddresses], limit: int = MAX_VALUE_BYTES
                 ) -> Tuple[str, int]:
    """The JSON value of :data:`KEY` and how many addresses were left out to keep it
    within ``limit`` bytes (the channel's limit): the last ones of the longest lists."""
    by_mac: Dict[str, List[str]] = {}
    for vif in report:
        by_mac[vif.mac] = list(vif.ipv4 + vif.ipv6)
    size = len(_json(by_mac))  # addresses and MACs are ASCII: characters are bytes
    dropped = 0
    while size > limit:
        longest = max(sorted(by_mac), key=lambda mac: len(by_mac[mac]))
        if not by_mac[longest]:
            break  # the MACs alone are too long: the channel refuses it, and says so
        address = by_mac[longest].pop()
        size -= len(address) + 2 + (1 if by_mac[longest] else 0)  # quotes, comma
        dropped += 1
    return _json(by_mac), dropped


def _json(by_mac: Dict[str, List[str]]) -> str:
    return json.dumps(by_mac, sort_keys=True, separators=(",", ":"))
