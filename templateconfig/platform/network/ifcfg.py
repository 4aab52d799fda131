"""EL5-8: initscripts' ``/etc/sysconfig/network-scripts/ifcfg-<dev>`` files.

DNS: ``DNS1=``/``DOMAIN=``, which NetworkManager (EL7/8) merges with the other
connections' into /etc/resolv.conf, and initscripts without it (EL5/6) write there when
the interface comes up; there a DHCP interface gets ``PEERDNS=no`` when DNS servers are
requested, so that its lease does not replace them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges


class IfcfgStack(NetworkStack):
    """initscripts' ifcfg files (EL5-8), activated by NetworkManager or the network service."""

    name = "ifcfg"

    def __init__(self, directory: str = "/etc/sysconfig/network-scripts",
                 networkmanager: bool = False) -> None:
        self.directory = directory
        self.networkmanager = networkmanager
        self.services = ("NetworkManager",) if networkmanager else ("network",)

    def path(self, iface: Interface) -> str:
        return "%s/ifcfg-%s" % (self.directory, iface.device)

    @staticmethod
    def render(iface: Interface, lease_dns: bool = True) -> str:
        """``lease_dns=False``: a DHCP interface leaves /etc/resolv.conf alone
        (``PEERDNS=no``)."""
        values: List[Tuple[str, str]] = [("DEVICE", iface.device), ("TYPE", "Ethernet")]
        if iface.hwaddr:
            values.append(("HWADDR", iface.hwaddr))
        values.append(("ONBOOT", "yes" if iface.onboot else "no"))
        values.append(("BOOTPROTO", iface.bootproto))
        if not iface.static and not lease_dns:
            values.append(("PEERDNS", "no"))
        if iface.static:
            values += [("IPADDR", str(iface.ipaddr)), ("NETMASK", iface.netmask)]
            if iface.gateway:
                values.append(("GATEWAY", iface.gateway))
            for number, server in enumerate(iface.dns, 1):
                values.append(("DNS%d" % number, server))
        if iface.mtu:
            values.append(("MTU", str(iface.mtu)))
        if iface.search:
            values.append(("DOMAIN", " ".join(iface.search)))
        return "# %s\n" % HEADER + "".join(
            "%s=%s\n" % (name, common.quote_value(value)) for name, value in values)

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        # Without NetworkManager, initscripts write /etc/resolv.conf: a static interface's
        # DNS1/DOMAIN when it comes up (ifup-post), a DHCP interface's lease whenever
        # dhclient-script runs. The requested servers must not be replaced by a lease.
        lease_dns = self.networkmanager or not any(i.static and i.dns for i in interfaces)
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface, lease_dns), mode=0o644)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        if self.networkmanager:
            common.system_cmd(["nmcli", "connection", "reload"])
            for iface in interfaces:
                if iface.onboot:
                    common.system_cmd(["nmcli", "connection", "up", "ifname", iface.device])
        else:
            common.service_control().restart("network")
