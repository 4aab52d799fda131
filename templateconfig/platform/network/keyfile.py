"""NetworkManager keyfiles: our own ``ovm-<dev>.nmconnection`` per interface.

IPv6, the ``[ipv6]`` section: ``method=auto``, ``dhcp`` (DHCPv6 only; NetworkManager then
ignores router advertisements), ``manual`` (``address1=ADDR/PREFIX[,GATEWAY]``,
``address2=``...) or ``disabled`` (NetworkManager 1.20+: the kernel's ``disable_ipv6``).
Unset, our profile takes the ``[ipv6]`` section of the template's own profile for the
device (the first ``*.nmconnection`` by name, not ours, whose ``interface-name`` is the
device or whose ``mac-address`` is the interface's), as it was; ``method=auto`` (what
NetworkManager gives an Ethernet profile) when there is none. IPv6 DNS servers go in
``[ipv6]`` (``[ipv4]`` takes only IPv4 ones).
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges

log = logging.getLogger(__name__)

#: ``[ipv6]`` methods whose profile may not have DNS servers.
_NO_DNS_METHODS = ("disabled", "ignore")


def keyfile_sections(text: str) -> Dict[str, List[str]]:
    """A keyfile's sections: name -> its lines (without comments and blank lines)."""
    sections: Dict[str, List[str]] = {}
    current: Optional[List[str]] = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            current = sections.setdefault(stripped[1:-1].strip(), [])
        elif current is not None:
            current.append(stripped)
    return sections


def _value(lines: Sequence[str], name: str) -> Optional[str]:
    for line in lines:
        key, equals, value = line.partition("=")
        if equals and key.strip() == name:
            return value.strip()
    return None


#: ``uuid.NAMESPACE_URL.bytes``
_NAMESPACE_URL = bytes.fromhex("6ba7b8119dad11d180b400c04fd430c8")


def _url_uuid(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))``, without importing :mod:`uuid` (which
    imports :mod:`platform`, a cost every run's start-up would pay, since the runner
    preloads what modules import)."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_URL + name.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return "%s-%s-%s-%s-%s" % (text[:8], text[8:12], text[12:16], text[16:20], text[20:])


class KeyfileStack(NetworkStack):
    """NetworkManager keyfiles (EL9+, and wherever NetworkManager is keyfile-only)."""

    name = "keyfile"
    services = ("NetworkManager",)

    def __init__(self, directory: str = "/etc/NetworkManager/system-connections") -> None:
        self.directory = directory

    @staticmethod
    def connection_id(iface: Interface) -> str:
        return "ovm-%s" % iface.device

    def path(self, iface: Interface) -> str:
        return "%s/%s.nmconnection" % (self.directory, self.connection_id(iface))

    def template_ipv6(self, files: FileChanges, iface: Interface) -> Optional[List[str]]:
        """The ``[ipv6]`` lines of the template's own profile for ``iface``, or None."""
        try:
            names = sorted(os.listdir(common.root_path(self.directory)))
        except OSError:
            return None
        mac = (iface.hwaddr or "").lower().replace("-", ":")
        for name in names:
            if not name.endswith(".nmconnection") or name.startswith("ovm-"):
                continue
            text = files.original_text("%s/%s" % (self.directory, name))
            if text is None:
                continue
            sections = keyfile_sections(text)
            device = _value(sections.get("connection", []), "interface-name")
            address = (_value(sections.get("ethernet", []), "mac-address") or "").lower()
            if device == iface.device or (mac and address.replace("-", ":") == mac):
                return sections.get("ipv6", [])
        return None

    @staticmethod
    def ipv6_lines(iface: Interface, template: Optional[List[str]]) -> List[str]:
        """The ``[ipv6]`` section's lines (``template``: the template profile's, or None)."""
        method = iface.ipv6_method
        if method is None:
            lines = list(template or [])
            if _value(lines, "method") is None:
                lines.insert(0, "method=auto")   # NetworkManager's default for Ethernet
        elif method == "static":
            lines = ["method=manual"]
            for number, address in enumerate(iface.ipv6_addresses, 1):
                gateway = "," + iface.ipv6_gateway if number == 1 and iface.ipv6_gateway else ""
                lines.append("address%d=%s%s" % (number, address, gateway))
        else:
            lines = ["method=%s" % method]
        servers = iface.dns_by_family[1] if iface.static else []
        if servers and _value(lines, "method") in _NO_DNS_METHODS:
            # (a disabled ipv6-bootproto with IPv6 servers was refused up front)
            log.warning("network: %s: IPv6 DNS servers %s not used: the template's IPv6 "
                        "method %s takes none", iface.device, ", ".join(servers),
                        _value(lines, "method"))
        elif servers:
            lines = [line for line in lines if line.partition("=")[0].strip() != "dns"]
            lines.append("dns=%s;" % ";".join(servers))
        return lines

    @classmethod
    def render(cls, iface: Interface, template_ipv6: Optional[List[str]] = None) -> str:
        ident = cls.connection_id(iface)
        lines = ["# %s" % HEADER, "[connection]", "id=%s" % ident,
                 "uuid=%s" % _url_uuid("ovm-template-config:" + ident),
                 "type=ethernet", "interface-name=%s" % iface.device,
                 "autoconnect=%s" % ("true" if iface.onboot else "false"),
                 # Wins over the template's own profile for the same device.
                 "autoconnect-priority=100", ""]
        ethernet = []
        if iface.hwaddr:
            ethernet.append("mac-address=%s" % iface.hwaddr.upper())
        if iface.mtu:
            ethernet.append("mtu=%d" % iface.mtu)
        if ethernet:
            lines += ["[ethernet]"] + ethernet + [""]
        lines.append("[ipv4]")
        if iface.static:
            lines.append("method=manual")
            address = "address1=%s" % iface.cidr
            if iface.gateway:
                address += ",%s" % iface.gateway
            lines.append(address)
            ipv4_dns = iface.dns_by_family[0]
            if ipv4_dns:
                lines.append("dns=%s;" % ";".join(ipv4_dns))
        else:
            lines.append("method=auto")
        if iface.search:
            lines.append("dns-search=%s;" % ";".join(iface.search))
        lines += ["", "[ipv6]"] + cls.ipv6_lines(iface, template_ipv6) + [""]
        return "\n".join(lines)

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            template = self.template_ipv6(files, iface) if iface.ipv6_method is None else None
            files.write_file(self.path(iface), self.render(iface, template), mode=0o600)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        common.system_cmd(["nmcli", "connection", "reload"])
        for iface in interfaces:
            if iface.onboot:
                common.system_cmd(["nmcli", "connection", "up", "id", self.connection_id(iface)])
