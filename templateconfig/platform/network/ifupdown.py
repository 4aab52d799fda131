"""Debian's ifupdown: our ``interfaces.d/ovm-<dev>`` snippets."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

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
        return "\n".join(lines) + "\n"

    def _disable_template_stanzas(self, text: str, devices: Sequence[str]) -> str:
        """Mark the template's own ``auto``/``allow-*``/``iface DEV inet`` lines disabled."""
        state = {"in_stanza": False}

        def disable(line: str) -> bool:
            words = line.split()
            if not words or words[0].startswith("#"):
                return False
            first = words[0]
            if first == "iface" or first in _STANZAS or first.startswith("allow-"):
                state["in_stanza"] = (first == "iface" and len(words) > 2
                                      and words[1] in devices and words[2] == "inet")
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
            text = self._disable_template_stanzas(original, [i.device for i in interfaces])
            files.write_file(self.interfaces_file, text)
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface), mode=0o644)
        if self.resolv_conf is not None:
            self.resolv_conf.write(files, interfaces)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            common.system_cmd(["ifdown", "--force", iface.device], success_return_code=(0, 1))
            if iface.onboot:
                common.system_cmd(["ifup", iface.device])
