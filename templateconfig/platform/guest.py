"""What the standard modules ask of a platform, with the behaviour most guests share.

:class:`GuestPlatform` is the interface the standard modules call; ``rhel.py`` and
``debian.py`` override what differs. Methods that change files take ``files``, a
:class:`FileChanges` (:class:`templateconfig.modules.support.state.ModuleState`, which
saves the originals for cleanup); every change goes through :mod:`templateconfig.common`,
so ``--root`` and ``--dry-run`` hold.
"""
from __future__ import annotations

import glob
import logging
import os
from typing import List, Mapping, Optional, Protocol, Union

from templateconfig import common
from templateconfig.platform.base import SYSTEMD, Platform
from templateconfig.platform.network import NetworkStack
from templateconfig.platform.timesync import TimeSync

log = logging.getLogger(__name__)

ZONEINFO = "/usr/share/zoneinfo"


class FileChanges(Protocol):
    """The file operations a platform method is given: those of
    :mod:`templateconfig.common`, with the original of each path saved before it changes."""

    def write_file(self, path: str, content: Union[str, bytes],
                   mode: Optional[int] = None) -> bool: ...

    def symlink(self, path: str, target: str) -> bool: ...

    def remove_file(self, path: str) -> bool: ...

    def edit_sysconfig(self, path: str, updates: Mapping[str, Optional[str]],
                       mode: Optional[int] = None) -> bool: ...

    def remember_service(self, name: str, enabled: Optional[bool]) -> None: ...

    def original_text(self, path: str) -> Optional[str]: ...


class GuestPlatform(Platform):
    """The operations of the standard modules; defaults fit systemd-era guests."""

    hostname_file = "/etc/hostname"
    #: An address of /etc/hosts that names the machine itself (Debian's 127.0.1.1), or None.
    hosts_self_address: Optional[str] = None

    # --- services -------------------------------------------------------------------------
    def service_control(self) -> common.ServiceControl:
        return common.ServiceControl(self.init_system)

    def service_enabled(self, name: str) -> Optional[bool]:
        """Whether ``name`` starts at boot, read from the root's files (None: cannot tell)."""
        if self.init_system == SYSTEMD:
            unit = name if "." in name else name + ".service"
            pattern = common.root_path("/etc/systemd/system") + "/*.wants/" + unit
            return bool(glob.glob(pattern))
        for directory in ("/etc/rc.d/rc3.d", "/etc/rc3.d"):
            real = common.root_path(directory)
            if os.path.isdir(real):
                return bool(glob.glob(os.path.join(real, "S[0-9][0-9]" + name)))
        return None

    def set_service(self, files: Optional[FileChanges], name: str, enabled: bool,
                    reconfigured: bool = False) -> None:
        """Enable and start, or disable and stop, service ``name``.

        The persistent change is made only when needed (and the previous setting saved
        in ``files`` for cleanup, unless ``files`` is None); start/stop acts on the
        running system, without waiting for the service (see
        :class:`templateconfig.common.ServiceControl`). ``reconfigured``: its
        configuration just changed, so a running service is restarted to read it.
        """
        control = self.service_control()
        current = self.service_enabled(name)
        if current is not enabled:
            if files is not None:
                files.remember_service(name, current)
            if enabled:
                control.enable(name)
            else:
                control.disable(name)
        if enabled and reconfigured:
            control.restart(name)
        elif enabled:
            control.start(name)
        else:
            control.stop(name)

    # --- host name --------------------------------------------------------------------------
    def set_hostname(self, files: FileChanges, name: str) -> None:
        files.write_file(self.hostname_file, name + "\n")

    def activate_hostname(self, name: str) -> None:
        common.system_cmd(["hostname", name])

    def default_hosts(self, hostname: Optional[str]) -> str:
        """The ``/etc/hosts`` the distribution installs, for a guest that has none (a
        debootstrap root): the localhost lines, so that ``localhost`` resolves."""
        return ("127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4\n"
                "::1         localhost localhost.localdomain localhost6 localhost6.localdomain6\n")

    # --- network ----------------------------------------------------------------------------
    def networkmanager_installed(self) -> bool:
        return any(self.has(p) for p in ("/usr/sbin/NetworkManager",
                                         "/etc/NetworkManager/NetworkManager.conf"))

    def networkmanager_keyfile_only(self) -> bool:
        """True when NetworkManager's configured plugins do not include ifcfg-rh."""
        plugins = None
        paths = ["/etc/NetworkManager/NetworkManager.conf"] + sorted(
            "/etc/NetworkManager/conf.d/" + name for name in
            self._listdir("/etc/NetworkManager/conf.d") if name.endswith(".conf"))
        for path in paths:
            section = ""
            for line in (common.read_file(path) or "").splitlines():
                line = line.strip()
                if line.startswith("["):
                    section = line.strip("[]").strip()
                elif section == "main" and line.split("=")[0].strip() == "plugins":
                    plugins = [p.strip() for p in line.split("=", 1)[1].split(",")]
        return plugins is not None and "ifcfg-rh" not in plugins

    @staticmethod
    def _listdir(path: str) -> List[str]:
        try:
            return os.listdir(common.root_path(path))
        except OSError:
            return []

    def network_stack(self) -> NetworkStack:
        raise NotImplementedError

    # --- time --------------------------------------------------------------------------------
    def zoneinfo_path(self, zone: str) -> str:
        return "%s/%s" % (ZONEINFO, zone)

    def localtime_target(self, zone: str) -> str:
        """What ``/etc/localtime`` links to (EL7+ link relatively, Debian absolutely)."""
        return "../usr/share/zoneinfo/%s" % zone

    def set_timezone(self, files: FileChanges, zone: str) -> None:
        files.symlink("/etc/localtime", self.localtime_target(zone))

    def set_hardware_clock_utc(self, files: FileChanges, utc: bool) -> None:
        """The UTC/LOCAL line of ``/etc/adjtime`` (hwclock's and timedatectl's source)."""
        lines = (common.read_file("/etc/adjtime") or "").splitlines()
        lines += ["0.0 0 0.0", "0", "UTC"][len(lines):]
        lines[2] = "UTC" if utc else "LOCAL"
        files.write_file("/etc/adjtime", "\n".join(lines) + "\n")

    def hardware_clock_utc(self) -> bool:
        lines = (common.read_file("/etc/adjtime") or "").splitlines()
        return not (len(lines) >= 3 and lines[2].strip() == "LOCAL")

    def time_sync(self) -> Optional[TimeSync]:
        return None

    # --- firewall ------------------------------------------------------------------------------
    def firewall_services(self) -> List[str]:
        """The services that make up the guest's firewall (empty: none installed)."""
        return []

    def set_firewall(self, enabled: bool) -> List[str]:
        """Enable or disable the guest's firewall; the services changed (empty: none)."""
        services = self.firewall_services()
        for name in services:
            self.set_service(None, name, enabled)
        return services

    # --- SSH ----------------------------------------------------------------------------------
    #: The service that runs sshd.
    ssh_service = "sshd"
    #: The group that may read the SSH host private keys (mode 0640), or None (0600).
    ssh_host_key_group: Optional[str] = None

    def default_host_key_types(self) -> List[str]:
        """The host key types the guest's sshd uses when ``sshd_config`` names none
        (never rsa1; DSA is gone from recent OpenSSH releases)."""
        return ["rsa", "ecdsa", "ed25519"]

    # --- SELinux ----------------------------------------------------------------------------------
    selinux_config = "/etc/selinux/config"
    selinux_enforce = "/sys/fs/selinux/enforce"

    def has_selinux(self) -> bool:
        return self.has(self.selinux_config)
