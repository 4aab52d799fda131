"""Debian and Ubuntu.

- network: netplan (``/etc/netplan/90-ovm.yaml``) where ``/etc/netplan`` exists (Ubuntu),
  else ifupdown (``/etc/network/interfaces.d/ovm-<dev>``), else NetworkManager keyfiles.
  DNS: ifupdown's ``dns-*`` options where resolvconf or systemd-resolved reads them,
  else ``/etc/resolv.conf`` itself (and a dhclient hook that keeps it).
- host name: ``/etc/hostname``, and the ``127.0.1.1`` line of ``/etc/hosts``.
- time: ``/etc/localtime`` an absolute symlink plus ``/etc/timezone``; chrony with its
  ``conf.d``/``sources.d`` drop-ins, else ntpd/ntpsec, else systemd-timesyncd.
- firewall: ufw (``ENABLED`` in ``/etc/ufw/ufw.conf`` and the service) where installed,
  else the ``nftables`` service.
- ssh: the service is ``ssh``; sshd's default host keys include DSA before Debian 12 and
  Ubuntu 22.04.
"""
from __future__ import annotations

import os
from typing import List, Optional

from templateconfig import common
from templateconfig.platform.base import UnsupportedPlatform
from templateconfig.platform.guest import FileChanges, GuestPlatform
from templateconfig.platform.network import (
    IfupdownStack,
    KeyfileStack,
    NetplanStack,
    NetworkStack,
    ResolvConf,
)
from templateconfig.platform.timesync import Chrony, Ntpd, TimeSync, Timesyncd

UFW_CONF = "/etc/ufw/ufw.conf"


class DebianPlatform(GuestPlatform):
    family = "debian"
    hosts_self_address = "127.0.1.1"
    ssh_service = "ssh"
    #: Debian's and Ubuntu's /etc/shadow and /etc/gshadow: 0640 root:shadow
    shadow_mode = 0o640
    shadow_group = "shadow"

    # --- host name --------------------------------------------------------------------------
    def default_hosts(self, hostname: Optional[str]) -> str:
        self_line = "%s\t%s\n" % (self.hosts_self_address, hostname) if hostname else ""
        return ("127.0.0.1\tlocalhost\n" + self_line + "\n"
                "# The following lines are desirable for IPv6 capable hosts\n"
                "::1     localhost ip6-localhost ip6-loopback\n"
                "ff02::1 ip6-allnodes\n"
                "ff02::2 ip6-allrouters\n")

    # --- network ----------------------------------------------------------------------------
    def network_stack(self) -> NetworkStack:
        if self.has("/etc/netplan"):
            return NetplanStack()
        if self.has("/etc/network/interfaces"):
            return IfupdownStack(resolv_conf=None if self.resolver_follows_ifupdown()
                                 else ResolvConf())
        if self.networkmanager_installed():
            return KeyfileStack()
        raise UnsupportedPlatform("%s: found neither /etc/netplan, /etc/network/interfaces nor "
                                  "NetworkManager under %s"
                                  % (self.release.pretty_name, common.root()))

    def resolver_follows_ifupdown(self) -> bool:
        """Whether ifupdown's ``dns-nameservers``/``dns-search`` reach the resolver: with
        resolvconf (its ifupdown hook ``000resolvconf``) or systemd-resolved (ifupdown's
        own ``resolved`` hook, when the service is enabled), or whatever else owns
        ``/etc/resolv.conf`` when it is a symbolic link. Otherwise nothing reads them, and
        ``/etc/resolv.conf`` is written by whoever runs last (dhclient)."""
        if os.path.islink(common.root_path("/etc/resolv.conf")):
            return True
        if self.has("/etc/network/if-up.d/000resolvconf"):
            return True
        return self.has("/etc/network/if-up.d/resolved") \
            and bool(self.service_enabled("systemd-resolved"))

    # --- time --------------------------------------------------------------------------------
    def localtime_target(self, zone: str) -> str:
        return self.zoneinfo_path(zone)

    def set_timezone(self, files: FileChanges, zone: str) -> None:
        super().set_timezone(files, zone)
        files.write_file("/etc/timezone", zone + "\n")

    def time_sync(self) -> Optional[TimeSync]:
        if self.has("/etc/chrony/chrony.conf"):
            return Chrony("/etc/chrony/chrony.conf", "chrony", conf_dir="/etc/chrony/conf.d",
                          sources_dir="/etc/chrony/sources.d")
        if self.has("/etc/ntpsec/ntp.conf"):
            return Ntpd("/etc/ntpsec/ntp.conf", "ntpsec")
        if self.has("/etc/ntp.conf"):
            return Ntpd("/etc/ntp.conf", "ntp")
        if self.has("/etc/systemd/timesyncd.conf") or \
                self.has("/usr/lib/systemd/system/systemd-timesyncd.service"):
            return Timesyncd()
        return None

    # --- SSH ----------------------------------------------------------------------------------
    #: The first release (by distro id) whose sshd makes no DSA host key by default.
    _NO_DSA_FROM = {"debian": 12, "ubuntu": 22}

    def default_host_key_types(self) -> List[str]:
        first = self._NO_DSA_FROM.get(self.release.id)
        if first is not None and 0 < self.major < first:
            return ["rsa", "dsa", "ecdsa", "ed25519"]
        return super().default_host_key_types()

    # --- firewall ------------------------------------------------------------------------------
    def firewall_services(self) -> List[str]:
        if self.has(UFW_CONF):
            return ["ufw"]
        if self.has("/usr/lib/systemd/system/nftables.service") \
                or self.has("/lib/systemd/system/nftables.service"):
            return ["nftables"]
        return []

    def set_firewall(self, enabled: bool) -> List[str]:
        services = self.firewall_services()
        if services == ["ufw"]:
            # ufw's own switch: the service only loads the rules when ENABLED=yes.
            common.edit_sysconfig(UFW_CONF, {"ENABLED": "yes" if enabled else "no"})
            self.set_service(None, "ufw", enabled)
            common.system_cmd(["ufw", "--force", "enable"] if enabled else ["ufw", "disable"])
            return services
        return super().set_firewall(enabled)
