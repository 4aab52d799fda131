"""Ubuntu's netplan: one ``/etc/netplan/90-ovm.yaml`` for every interface."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Sequence

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
            if iface.static:
                lines.append("      addresses: [%s]" % q(iface.cidr))
                if iface.gateway:
                    lines += ["      routes:", "        - to: default",
                              "          via: %s" % q(iface.gateway)]
            if iface.mtu:
                lines.append("      mtu: %d" % iface.mtu)
            if (iface.static and iface.dns) or iface.search:
                lines.append("      nameservers:")
                if iface.static and iface.dns:
                    lines.append("        addresses: [%s]" % ", ".join(q(s) for s in iface.dns))
                if iface.search:
                    lines.append("        search: [%s]" % ", ".join(q(s) for s in iface.search))
        return "\n".join(lines) + "\n"

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        files.write_file(self.path, self.render(interfaces), mode=0o600)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        common.system_cmd(["netplan", "apply"])

    def prepare_start(self, interfaces: Sequence[Interface]) -> None:
        # netplan's systemd generator ran early in this boot, before our file existed:
        # render it now, so that the renderer's configuration is ours when it starts.
        common.system_cmd(["netplan", "generate"])
