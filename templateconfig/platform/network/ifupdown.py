"""Debian's ifupdown: our ``interfaces.d/ovm-<dev>`` snippets.

IPv6, an ``inet6`` stanza after the ``inet`` one (ifupdown brings up every stanza of a
device):

=========  ==================================================================================
(unset)    none of ours: the template's ``iface <dev> inet6`` stanzas stay as they are
auto       ``inet6 auto`` (router advertisements, SLAAC)
dhcp       ``inet6 dhcp`` with ``autoconf 0`` (dhclient -6; routes from router advertisements)
static     ``inet6 static`` with the first address, ``gateway``, ``accept_ra 0``; one more
           ``inet6 static`` stanza per further address (ifupdown 0.8 takes one ``address``
           per stanza)
disabled   ``inet6 manual`` whose ``pre-up`` sets the kernel's ``disable_ipv6`` (sysctl)
=========  ==================================================================================

A given IPv6 setting disables the template's ``iface <dev> inet6`` stanzas too.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface, NetworkStack
from templateconfig.platform.network.resolvconf import ResolvConf
from templateconfig.platform.textedit import apply_managed, strip_managed

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges


_STANZAS = ("iface", "auto", "mapping", "source", "source-directory", "rename")


class IfupdownStack(NetworkStack):
    """ifupdown: our ``interfaces.d/ovm-<dev>``; the template's stanza for the same
    device in ``/etc/network/interfaces`` is disabled (marked, undone by cleanup).

    The ``dns-*`` options reach the resolver only through resolvconf or systemd-resolved;
    where neither reads them the platform gives ``resolv_conf``, which writes
    ``/etc/resolv.conf`` itself.
    """

    name = "ifupdown"
    services = ("networking",)

    def __init__(self, interfaces_file: str = "/etc/network/interfaces",
                 directory: str = "/etc/network/interfaces.d",
                 resolv_conf: Optional[ResolvConf] = None) -> None:
        self.interfaces_file = interfaces_file
        self.directory = directory
        self.resolv_conf = resolv_conf

    def path(self, iface: Interface) -> str:
        return "%s/ovm-%s" % (self.directory, iface.device)

    @staticmethod
    def render(iface: Interface) -> str:
        lines = ["# %s" % HEADER]
        if iface.onboot:
            lines.append("auto %s" % iface.device)
        lines.append("iface %s inet %s" % (iface.device, "static" if iface.static else "dhcp"))
        if iface.static:
            lines.append("    address %s" % iface.cidr)
            if iface.gateway:
                lines.append("    gateway %s" % iface.gateway)
            if iface.dns:
                lines.append("    dns-nameservers %s" % " ".join(iface.dns))
        if iface.mtu:
            lines.append("    mtu %d" % iface.mtu)
        if iface.search:
            lines.append("    dns-search %s" % " ".join(iface.search))
        return "\n".join(lines + IfupdownStack.inet6_lines(iface)) + "\n"

    @staticmethod
    def inet6_lines(iface: Interface) -> List[str]:
        """The ``inet6`` stanzas for a given ``ipv6_method`` (none when it is unset)."""
        method, stanza = iface.ipv6_method, "iface %s inet6 " % iface.device
        if method is None:
            return []
        if method == "auto":
            return [stanza + "auto"]
        if method == "dhcp":
            return [stanza + "dhcp", "    autoconf 0"]
        if method == "disabled":
            return [stanza + "manual",
                    "    pre-up sysctl -q -e -w %s=1" % iface.disable_ipv6_key]
        lines = [stanza + "static", "    address %s" % iface.ipv6_addresses[0]]
        if iface.ipv6_gateway:
            lines.append("    gateway %s" % iface.ipv6_gateway)
        lines.append("    accept_ra 0")
        for address in iface.ipv6_addresses[1:]:
            lines += [stanza + "static", "    address %s" % address]
        return lines

    def _disable_template_stanzas(self, text: str, interfaces: Sequence[Interface]) -> str:
        """Mark the template's own ``auto``/``allow-*``/``iface DEV inet`` lines disabled,
        and its ``iface DEV inet6`` stanzas where the interface's IPv6 is given."""
        devices = [i.device for i in interfaces]
        families = {i.device: ("inet", "inet6") if i.ipv6_method else ("inet",)
                    for i in interfaces}
        state = {"in_stanza": False}

        def disable(line: str) -> bool:
            words = line.split()
            if not words or words[0].startswith("#"):
                return False
            first = words[0]
            if first == "iface" or first in _STANZAS or first.startswith("allow-"):
                state["in_stanza"] = (first == "iface" and len(words) > 2
                                      and words[2] in families.get(words[1], ()))
                if state["in_stanza"]:
                    return True
                return ((first == "auto" or first.startswith("allow-"))
                        and len(words) == 2 and words[1] in devices)
            return state["in_stanza"] and line[:1].isspace()

        base = strip_managed(text, "network")
        sourced = any(line.split()[:1] in (["source"], ["source-directory"])
                      and self.directory in line for line in base.splitlines())
        block = [] if sourced else ["source %s/ovm-*" % self.directory]
        return apply_managed(text, "network", block, disable=disable)

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        original = common.read_file(self.interfaces_file)
        if original is not None:
            text = self._disable_template_stanzas(original, interfaces)
            files.write_file(self.interfaces_file, text)
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface), mode=0o644)
        if self.resolv_conf is not None:
            self.resolv_conf.write(files, interfaces)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            common.system_cmd(["ifdown", "--force", iface.device], success_return_code=(0, 1))
            self.switch_ipv6([iface])
            if iface.onboot:
                common.system_cmd(["ifup", iface.device])
