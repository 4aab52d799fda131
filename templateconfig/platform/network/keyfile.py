"""NetworkManager keyfiles: our own ``ovm-<dev>.nmconnection`` per interface."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges


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

    @classmethod
    def render(cls, iface: Interface) -> str:
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
            if iface.dns:
                lines.append("dns=%s;" % ";".join(iface.dns))
        else:
            lines.append("method=auto")
        if iface.search:
            lines.append("dns-search=%s;" % ";".join(iface.search))
        lines += ["", "[ipv6]", "method=auto", ""]
        return "\n".join(lines)

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface), mode=0o600)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        common.system_cmd(["nmcli", "connection", "reload"])
        for iface in interfaces:
            if iface.onboot:
                common.system_cmd(["nmcli", "connection", "up", "id", self.connection_id(iface)])
