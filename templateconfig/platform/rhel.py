"""Oracle Linux / RHEL 5-9 (and relatives).

- network: ifcfg files where ``network-scripts`` exists (EL5-8), activated by
  NetworkManager (EL7/8) or the ``network`` service (EL5/6); NetworkManager keyfiles on
  EL9+ and wherever NetworkManager is configured keyfile-only.
- host name: ``HOSTNAME`` in ``/etc/sysconfig/network`` on EL5/6, ``/etc/hostname`` after.
- time: ``/etc/localtime`` is a copy plus ``/etc/sysconfig/clock`` (ZONE, UTC) on EL5/6,
  a relative symlink after; ntpd on EL5/6 (or wherever only ``ntp.conf`` exists), chrony
  after (with the ``/etc/chrony.d`` drop-in directory on EL9+).
- firewall: the ``iptables``/``ip6tables`` services on EL5/6, ``firewalld`` after.
- ssh: host private keys 0640 root:ssh_keys where the group exists; sshd's default host
  keys are RSA and DSA on EL5/6, also ECDSA and Ed25519 on EL7, no DSA from EL8.
"""
from __future__ import annotations

from typing import List, Optional

from templateconfig import common
from templateconfig.platform.base import UnsupportedPlatform
from templateconfig.platform.guest import FileChanges, GuestPlatform
from templateconfig.platform.network import IfcfgStack, KeyfileStack, NetworkStack
from templateconfig.platform.timesync import Chrony, Ntpd, TimeSync

NETWORK_SCRIPTS = "/etc/sysconfig/network-scripts"


class RhelPlatform(GuestPlatform):
    family = "rhel"

    @property
    def legacy(self) -> bool:
        """EL5/6: SysV init, initscripts networking, ntpd, iptables."""
        return 0 < self.major <= 6

    @property
    def selinux_enforce(self) -> str:  # type: ignore[override]
        """EL5/6 mount selinuxfs on /selinux, later releases on /sys/fs/selinux."""
        return "/selinux/enforce" if self.legacy else "/sys/fs/selinux/enforce"

    # --- host name --------------------------------------------------------------------------
    def set_hostname(self, files: FileChanges, name: str) -> None:
        if self.legacy:
            files.edit_sysconfig("/etc/sysconfig/network", {"HOSTNAME": name})
        else:
            super().set_hostname(files, name)

    # --- network ----------------------------------------------------------------------------
    def network_stack(self) -> NetworkStack:
        nm = not self.legacy and self.networkmanager_installed()
        if nm and (self.major >= 9 or self.networkmanager_keyfile_only()):
            return KeyfileStack()
        if self.has(NETWORK_SCRIPTS):
            return IfcfgStack(NETWORK_SCRIPTS, networkmanager=nm)
        if nm:
            return KeyfileStack()
        raise UnsupportedPlatform("%s: found neither %s nor NetworkManager under %s"
                                  % (self.release.pretty_name, NETWORK_SCRIPTS, common.root()))

    # --- time --------------------------------------------------------------------------------
    def set_timezone(self, files: FileChanges, zone: str) -> None:
        if not self.legacy:
            super().set_timezone(files, zone)
            return
        data = common.read_bytes(self.zoneinfo_path(zone))
        if data is None:
            raise common.TemplateConfigError("no time zone file %s under %s"
                                             % (self.zoneinfo_path(zone), common.root()))
        files.write_file("/etc/localtime", data, mode=0o644)
        files.edit_sysconfig("/etc/sysconfig/clock", {"ZONE": zone})

    def set_hardware_clock_utc(self, files: FileChanges, utc: bool) -> None:
        super().set_hardware_clock_utc(files, utc)
        if self.legacy:
            files.edit_sysconfig("/etc/sysconfig/clock", {"UTC": "true" if utc else "false"})

    def time_sync(self) -> Optional[TimeSync]:
        if not self.legacy and self.has("/etc/chrony.conf"):
            return Chrony("/etc/chrony.conf", "chronyd",
                          conf_dir="/etc/chrony.d" if self.major >= 9 else None)
        if self.has("/etc/ntp.conf"):
            return Ntpd("/etc/ntp.conf", "ntpd")
        if self.has("/etc/chrony.conf"):
            return Chrony("/etc/chrony.conf", "chronyd")
        return None

    # --- SSH ----------------------------------------------------------------------------------
    ssh_host_key_group = "ssh_keys"

    def default_host_key_types(self) -> List[str]:
        if self.legacy:
            return ["rsa", "dsa"]
        if self.major == 7:
            return ["rsa", "dsa", "ecdsa", "ed25519"]
        return super().default_host_key_types()

    # --- firewall ------------------------------------------------------------------------------
    def firewall_services(self) -> List[str]:
        if self.legacy:
            return [name for name in ("iptables", "ip6tables")
                    if self.has("/etc/rc.d/init.d/%s" % name) or self.has("/etc/init.d/%s" % name)]
        for name in ("firewalld", "iptables"):
            if self.has("/usr/lib/systemd/system/%s.service" % name):
                return [name]
        return []

