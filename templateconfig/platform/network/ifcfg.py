"""EL5-8: initscripts' ``/etc/sysconfig/network-scripts/ifcfg-<dev>`` files.

DNS: ``DNS1=``/``DOMAIN=``, which NetworkManager (EL7/8) merges with the other
connections' into /etc/resolv.conf, and initscripts without it (EL5/6) write there when
the interface comes up; there a DHCP (or DHCPv6) interface gets ``PEERDNS=no`` when DNS
servers are requested, so that its lease does not replace them.

IPv6 (read by initscripts' ``ifup-ipv6`` and NetworkManager's ifcfg-rh plugin alike):

=========  ==================================================================================
(unset)    the ``IPV6*``/``DHCPV6*`` lines of the template's own ``ifcfg-<dev>``, as they were
auto       ``IPV6INIT=yes``, ``IPV6_AUTOCONF=yes``
dhcp       ``IPV6INIT=yes``, ``IPV6_AUTOCONF=no``, ``DHCPV6C=yes``
static     ``IPV6INIT=yes``, ``IPV6_AUTOCONF=no``, ``IPV6ADDR``, ``IPV6ADDR_SECONDARIES``,
           ``IPV6_DEFAULTGW`` (a link-local gateway with ``%<dev>``: initscripts need it)
disabled   ``IPV6INIT=no``, ``IPV6_DISABLED=yes`` (NetworkManager 1.20+), and the kernel's
           ``disable_ipv6`` for the device in a marked block of ``/etc/sysctl.conf``, which
           the network service (EL5/6) and systemd-sysctl apply at boot
=========  ==================================================================================
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack
from templateconfig.platform.textedit import apply_managed, has_managed

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges

#: A variable of initscripts' IPv6 configuration (``IPV6INIT``, ``IPV6ADDR``, ``DHCPV6C``...).
_IPV6_LINE = re.compile(r"^\s*(?:export\s+)?(?:IPV6|DHCPV6)[A-Za-z0-9_]*=")
SYSCTL_CONF = "/etc/sysctl.conf"


def template_ipv6_lines(text: Optional[str]) -> List[str]:
    """The IPv6 variables of an ifcfg file, as written there."""
    return [line.strip() for line in (text or "").splitlines() if _IPV6_LINE.match(line)]


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
    def ipv6_values(iface: Interface) -> List[Tuple[str, str]]:
        """The IPv6 variables for a given ``ipv6_method`` (none when it is unset)."""
        method = iface.ipv6_method
        if method == "disabled":
            return [("IPV6INIT", "no"), ("IPV6_DISABLED", "yes")]
        if method is None:
            return []
        values = [("IPV6INIT", "yes"), ("IPV6_AUTOCONF", "yes" if method == "auto" else "no")]
        if method == "dhcp":
            values.append(("DHCPV6C", "yes"))
        if method == "static":
            first, others = iface.ipv6_addresses[0], iface.ipv6_addresses[1:]
            values.append(("IPV6ADDR", first))
            if others:
                values.append(("IPV6ADDR_SECONDARIES", " ".join(others)))
            if iface.ipv6_gateway_on_device:
                values.append(("IPV6_DEFAULTGW", iface.ipv6_gateway_on_device))
        return values

    @classmethod
    def render(cls, iface: Interface, lease_dns: bool = True,
               template: Optional[str] = None) -> str:
        """``lease_dns=False``: a DHCP interface leaves /etc/resolv.conf alone
        (``PEERDNS=no``). ``template``: the template's own file for the device, whose
        IPv6 lines are kept when ``iface.ipv6_method`` is unset."""
        if iface.ipv6_method is None:
            ipv6 = template_ipv6_lines(template)
        else:
            ipv6 = ["%s=%s" % (name, common.quote_value(value))
                    for name, value in cls.ipv6_values(iface)]
        dhcpv6 = common.parse_sysconfig("\n".join(ipv6)).get("DHCPV6C", "")[:1] in ("y", "Y", "1")
        values: List[Tuple[str, str]] = [("DEVICE", iface.device), ("TYPE", "Ethernet")]
        if iface.hwaddr:
            values.append(("HWADDR", iface.hwaddr))
        values.append(("ONBOOT", "yes" if iface.onboot else "no"))
        values.append(("BOOTPROTO", iface.bootproto))
        if (not iface.static or dhcpv6) and not lease_dns:   # (dhclient -6 writes it too)
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
        lines = ["%s=%s" % (name, common.quote_value(value)) for name, value in values] + ipv6
        return "# %s\n" % HEADER + "".join(line + "\n" for line in lines)

    @staticmethod
    def sysctl_text(text: str, interfaces: Sequence[Interface]) -> str:
        """``/etc/sysctl.conf`` with ``disable_ipv6`` for the IPv6-disabled devices."""
        lines = ["%s = 1" % iface.disable_ipv6_key for iface in interfaces
                 if iface.ipv6_method == "disabled"]
        return apply_managed(text, "network", lines)

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        # Without NetworkManager, initscripts write /etc/resolv.conf: a static interface's
        # DNS1/DOMAIN when it comes up (ifup-post), a DHCP interface's lease whenever
        # dhclient-script runs. The requested servers must not be replaced by a lease.
        lease_dns = self.networkmanager or not any(i.static and i.dns for i in interfaces)
        for iface in interfaces:
            template = files.original_text(self.path(iface))
            files.write_file(self.path(iface), self.render(iface, lease_dns, template), mode=0o644)
        sysctl = common.read_file(SYSCTL_CONF)
        if any(i.ipv6_method == "disabled" for i in interfaces) or \
                has_managed(sysctl or "", "network"):
            files.write_file(SYSCTL_CONF, self.sysctl_text(sysctl or "", interfaces))

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        self.switch_ipv6(interfaces)
        if self.networkmanager:
            common.system_cmd(["nmcli", "connection", "reload"])
            for iface in interfaces:
                if iface.onboot:
                    common.system_cmd(["nmcli", "connection", "up", "ifname", iface.device])
        else:
            common.service_control().restart("network")
