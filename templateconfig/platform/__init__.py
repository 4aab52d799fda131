"""How each distro family does a thing, chosen once from the root's release files.

The rule (WALinuxAgent's osutil pattern): feature code asks ``detect()`` for the
platform object and calls its methods; it never tests the distro (its family, id or
version) itself. Every decision that depends on the distro is a method here:

``base.py``     release detection, and what every guest shares (commands, init system)
``guest.py``    :class:`GuestPlatform`, what the standard modules ask, with the defaults
``rhel.py``     Oracle Linux / RHEL 5-9 and relatives
``debian.py``   Debian and Ubuntu
``network/``    the network stacks (ifcfg, NetworkManager keyfile, ifupdown, netplan)
``timesync.py`` the NTP clients (chrony, ntpd, systemd-timesyncd)
``textedit.py`` marked, undoable edits of shared configuration files
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from .base import OsRelease, Platform, UnsupportedPlatform, read_os_release

if TYPE_CHECKING:
    from .guest import GuestPlatform


def _family_platform(release: OsRelease) -> Optional[GuestPlatform]:
    if release.family == "rhel":
        from .rhel import RhelPlatform
        return RhelPlatform(release)
    if release.family == "debian":
        from .debian import DebianPlatform
        return DebianPlatform(release)
    return None


def detect() -> GuestPlatform:
    """The platform object for the configured root (``OVM_TEMPLATE_CONFIG_ROOT``);
    :class:`UnsupportedPlatform` for a distro we do not know how to configure."""
    release = read_os_release()
    platform = _family_platform(release)
    if platform is None:
        raise UnsupportedPlatform(
            "unsupported guest %r (ID=%s ID_LIKE=%s): supported are Oracle Linux/RHEL 5-9 "
            "and Debian/Ubuntu" % (release.pretty_name, release.id, " ".join(release.id_like)))
    return platform


def detect_generic() -> Platform:
    """Like :func:`detect`, but a guest of an unknown distro gets the shared behaviour
    (:class:`Platform`) instead of an error: for the work every guest allows (the init
    system, finding a command), as the system module and the account tools need."""
    release = read_os_release()
    return _family_platform(release) or Platform(release)


__all__ = ["detect", "detect_generic", "OsRelease", "Platform", "UnsupportedPlatform",
           "read_os_release"]
