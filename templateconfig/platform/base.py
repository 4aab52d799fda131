"""Release detection (``/etc/os-release`` and the older release files) and the base class."""
from __future__ import annotations

import os
import re
import shlex
from typing import List, NamedTuple, Optional, Sequence

from templateconfig import common


class UnsupportedPlatform(common.TemplateConfigError):
    """The root holds a distro we do not know how to configure."""


class OsRelease(NamedTuple):
    id: str                 # "ol", "rhel", "centos", "debian", "ubuntu", ...
    id_like: List[str]
    version_id: str         # "9.3", "22.04", "6.10"
    pretty_name: str
    family: str             # "rhel" or "debian" (or "" if unknown)

    @property
    def major(self) -> int:
        match = re.match(r"(\d+)", self.version_id)
        return int(match.group(1)) if match else 0


_RHEL_IDS = {"ol", "rhel", "centos", "fedora", "rocky", "almalinux", "oracle"}
_DEBIAN_IDS = {"debian", "ubuntu"}


def _family(ident: str, like: List[str]) -> str:
    for candidate in [ident] + like:
        if candidate in _RHEL_IDS:
            return "rhel"
        if candidate in _DEBIAN_IDS:
            return "debian"
    return ""


def _parse_os_release(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("\"'")]
        values[name.strip()] = parts[0] if parts else ""
    return values


def read_os_release() -> OsRelease:
    """Identify the guest under the configured root.

    ``/etc/os-release`` (EL7+, Debian, Ubuntu) first, then ``/usr/lib/os-release``, then
    the release files of older guests: ``/etc/oracle-release``, ``/etc/redhat-release``
    (EL5/6: "Oracle Linux Server release 6.10"), ``/etc/debian_version``.
    """
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        text = common.read_file(path)
        if text:
            values = _parse_os_release(text)
            ident = values.get("ID", "").lower()
            like = values.get("ID_LIKE", "").lower().split()
            return OsRelease(ident, like, values.get("VERSION_ID", ""),
                             values.get("PRETTY_NAME", ident), _family(ident, like))
    for path, ident in (("/etc/oracle-release", "ol"), ("/etc/enterprise-release", "ol"),
                        ("/etc/redhat-release", "rhel")):
        text = common.read_file(path)
        if text:
            match = re.search(r"release\s+([\d.]+)", text)
            if "Oracle" in text or "Enterprise Linux Enterprise" in text:
                ident = "ol"
            elif "CentOS" in text:
                ident = "centos"
            return OsRelease(ident, ["rhel"], match.group(1) if match else "",
                             text.strip().splitlines()[0], "rhel")
    text = common.read_file("/etc/debian_version")
    if text:
        return OsRelease("debian", [], text.strip(), "Debian " + text.strip(), "debian")
    return OsRelease("", [], "", "unknown (no /etc/os-release under %s)" % common.root(), "")


SYSTEMD = common.ServiceControl.SYSTEMD
CHKCONFIG = common.ServiceControl.CHKCONFIG
UPDATE_RC = common.ServiceControl.UPDATE_RC


def detect_init_system() -> str:
    """The init system of the guest under the root, from its files: ``systemd``,
    ``chkconfig`` (SysV, EL5/6) or ``update-rc.d`` (SysV, Debian)."""
    for candidate in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd",
                      "/usr/lib/systemd/system", "/etc/systemd/system"):
        if os.path.exists(common.root_path(candidate)):
            return SYSTEMD
    for candidate in ("/sbin/chkconfig", "/usr/sbin/chkconfig"):
        if os.path.exists(common.root_path(candidate)):
            return CHKCONFIG
    return UPDATE_RC if os.path.exists(common.root_path("/usr/sbin/update-rc.d")) else CHKCONFIG


class Platform:
    """Behaviour shared by every family; subclasses override what differs."""

    family = ""
    #: How readable the files of password hashes (``/etc/shadow``, ``/etc/gshadow`` and
    #: the shadow tools' backups of them) are on this distribution: the most their mode
    #: allows, and the group that may read them (None: root's). EL: 0000 root:root.
    shadow_mode = 0o000
    shadow_group: Optional[str] = None

    def __init__(self, release: OsRelease) -> None:
        self.release = release

    @property
    def major(self) -> int:
        return self.release.major

    def __repr__(self) -> str:
        return "%s(%s %s)" % (type(self).__name__, self.release.id, self.release.version_id)

    def has(self, path: str) -> bool:
        """Whether the guest has ``path`` (a file, command or directory) under the root."""
        return common.exists(path)

    def find_command(self, name: str,
                     dirs: Sequence[str] = ("/usr/sbin", "/usr/bin", "/sbin", "/bin"),
                     ) -> Optional[str]:
        """The guest path of the executable command ``name`` under the root, or None."""
        for directory in dirs:
            path = "%s/%s" % (directory, name)
            if os.access(common.root_path(path), os.X_OK):
                return path
        return None

    @property
    def init_system(self) -> str:
        """``systemd``, ``chkconfig`` or ``update-rc.d`` (see :func:`detect_init_system`)."""
        return detect_init_system()

    def uses_machine_id(self) -> bool:
        """Whether the guest reads ``/etc/machine-id``: systemd guests (EL7+, Debian 8+)
        do; EL6 has only D-Bus's."""
        return common.exists("/etc/machine-id") or self.init_system == SYSTEMD
