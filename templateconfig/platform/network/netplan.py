"""Ubuntu's netplan: one ``/etc/netplan/90-ovm.yaml`` for every interface.

IPv6 per interface:

=========  ==================================================================================
(unset)    no IPv6 key of ours: the template's files' (merged by netplan) stay in force
auto       ``dhcp6: false``, ``accept-ra: true``, ``link-local: [ipv6]``
dhcp       ``dhcp6: true``, ``accept-ra: true``, ``link-local: [ipv6]`` (systemd-networkd
           asks DHCPv6 when the routers' advertisements say so, and routes from them)
static     ``dhcp6: false``, ``accept-ra: false``, ``link-local: [ipv6]``, the addresses
           after the IPv4 one in ``addresses``, a ``to: default`` route ``via`` the gateway
disabled   ``dhcp6: false``, ``accept-ra: false``, ``link-local: []`` (no IPv6 address at all)
=========  ==================================================================================

netplan appends the lists of every file (``addresses``, ``routes``): IPv6 addresses and
routes that the template's own files give the same device stay in addition to ours.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, List, Sequence, Tuple

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges


class NetplanStack(NetworkStack):
    """netplan: one file ``/etc/netplan/90-ovm.yaml`` for all interfaces (merged over the
    template's files, later names win)."""

    name = "netplan"
    services = ("systemd-networkd", "NetworkManager")

    def __init__(self, path: str = "/etc/netplan/90-ovm.yaml") -> None:
        self.path = path

    @staticmethod
    def _q(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid YAML scalar

    def render(self, interfaces: Sequence[Interface]) -> str:
        q = self._q
        lines = ["# %s" % HEADER, "network:", "  version: 2", "  ethernets:"]
        for iface in interfaces:
            lines.append("    %s:" % q(iface.device))
            if iface.hwaddr:
                lines += ["      match:", "        macaddress: %s" % q(iface.hwaddr.lower())]
            if not iface.onboot:
                lines.append("      activation-mode: off")
            lines.append("      dhcp4: %s" % ("false" if iface.static else "true"))
            lines += ["      %s: %s" % item for item in self.ipv6_switches(iface)]
            addresses = ([iface.cidr] if iface.static else []) + iface.ipv6_addresses
            if addresses:
                lines.append("      addresses: [%s]" % ", ".join(q(a) for a in addresses))
            gateways = [g for g in (iface.gateway if iface.static else None,
                                    iface.ipv6_gateway) if g]
            if gateways:
                lines.append("      routes:")
                for gateway in gateways:
                    lines += ["        - to: default", "          via: %s" % q(gateway)]
            if iface.mtu:
                lines.append("      mtu: %d" % iface.mtu)
            if (iface.static and iface.dns) or iface.search:
                lines.append("      nameservers:")
                if iface.static and iface.dns:
                    lines.append("        addresses: [%s]" % ", ".join(q(s) for s in iface.dns))
                if iface.search:
                    lines.append("        search: [%s]" % ", ".join(q(s) for s in iface.search))
        return "\n".join(lines) + "\n"

    @staticmethod
    def ipv6_switches(iface: Interface) -> List[Tuple[str, str]]:
        """``dhcp6``, ``accept-ra`` and ``link-local`` for a given ``ipv6_method``."""
        method = iface.ipv6_method
        if method is None:
            return []
        return [("dhcp6", "true" if method == "dhcp" else "false"),
                ("accept-ra", "true" if method in ("auto", "dhcp") else "false"),
                ("link-local", "[]" if method == "disabled" else "[ipv6]")]

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        files.write_file(self.path, self.render(interfaces), mode=0o600)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        common.system_cmd(["netplan", "apply"])

    def prepare_start(self, interfaces: Sequence[Interface]) -> None:
        # netplan's systemd generator ran early in this boot, before our file existed:
        # render it now, so that the renderer's configuration is ours when it starts.
        common.system_cmd(["netplan", "generate"])
