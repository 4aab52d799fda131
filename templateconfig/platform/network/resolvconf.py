"""``/etc/resolv.conf`` on a guest where nothing manages it.

Debian's ifupdown hands ``dns-nameservers``/``dns-search`` only to resolvconf or
systemd-resolved; without them nothing reads those lines, and ``/etc/resolv.conf`` holds
whatever was written last. There the requested DNS servers and search domains (of every
interface, in interface order) are written to ``/etc/resolv.conf`` itself, keeping the
template's other lines (``options``, ``sortlist``).

dhclient, on any interface that uses DHCP, rewrites that file whenever it gets or renews a
lease, possibly later in the same boot. dhclient-script sources every file of
``/etc/dhcp/dhclient-enter-hooks.d`` first; our hook ``ovm-dns`` there replaces the lease's
servers and search list by ours (what dhclient.conf's ``supersede`` does, for IPv6
servers too), so the file dhclient writes says the same. Cleanup restores the file and
removes the hook.
"""
from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, List, Sequence, Tuple

from templateconfig import common
from templateconfig.platform.network.interface import HEADER, Interface

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges

#: dhclient-script's reasons that write /etc/resolv.conf (DHCPv4 and DHCPv6).
_LEASE_REASONS = "BOUND|RENEW|REBIND|REBOOT|BOUND6|RENEW6|REBIND6"


def _unique(values: Sequence[str]) -> List[str]:
    seen: List[str] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


class ResolvConf:
    """Our DNS settings in ``/etc/resolv.conf``, kept there by a dhclient enter hook."""

    def __init__(self, path: str = "/etc/resolv.conf",
                 hook_dir: str = "/etc/dhcp/dhclient-enter-hooks.d") -> None:
        self.path = path
        self.hook_dir = hook_dir

    @property
    def hook_path(self) -> str:
        return self.hook_dir + "/ovm-dns"

    @staticmethod
    def settings(interfaces: Sequence[Interface]) -> Tuple[List[str], List[str]]:
        """(DNS servers, search domains) of all interfaces, in order, each once."""
        servers = _unique([s for iface in interfaces if iface.static for s in iface.dns])
        search = _unique([d for iface in interfaces for d in iface.search])
        return servers, search

    @staticmethod
    def render(text: str, servers: Sequence[str], search: Sequence[str]) -> str:
        """``text`` (the template's resolv.conf) with our servers and search domains in
        place of its own; its comments go, its other lines stay."""
        kept = []
        for line in text.splitlines():
            words = line.split()
            if not words or words[0].startswith(("#", ";")):
                continue
            if (words[0] == "nameserver" and servers) or \
                    (words[0] in ("search", "domain") and search):
                continue
            kept.append(line)
        lines = ["# " + HEADER]
        if search:
            lines.append("search " + " ".join(search))
        lines += ["nameserver " + server for server in servers]
        return "\n".join(lines + kept) + "\n"

    @staticmethod
    def hook(servers: Sequence[str], search: Sequence[str]) -> str:
        """The dhclient enter hook (sourced by dhclient-script, so a shell fragment)."""
        settings = []
        if servers:
            settings.append("new_domain_name_servers=%s" % shlex.quote(" ".join(servers)))
        if search:
            settings += ["new_domain_search=%s" % shlex.quote(" ".join(search)),
                         "new_domain_name="]
        return ("# %s\n"
                "# dhclient-script sources this before it writes /etc/resolv.conf: the DNS\n"
                "# servers and search domains configured for this guest replace the lease's.\n"
                "case \"$reason\" in\n"
                "%s)\n"
                "%s"
                "    ;;\n"
                "esac\n" % (HEADER, _LEASE_REASONS,
                            "".join("    %s\n" % setting for setting in settings)))

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        servers, search = self.settings(interfaces)
        if not servers and not search:
            files.remove_file(self.hook_path)
            return
        text = common.read_file(self.path) or ""
        files.write_file(self.path, self.render(text, servers, search))
        if common.exists(self.hook_dir):
            files.write_file(self.hook_path, self.hook(servers, search), mode=0o644)
