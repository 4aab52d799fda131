"""How each distro family does a thing, chosen once from the root's release files.

Feature code asks ``detect()`` for the platform object and calls its methods; it never
tests the distro itself (WALinuxAgent's osutil pattern). ``base.py`` holds the release
detection and the shared behaviour, ``rhel.py`` and ``debian.py`` the families.
"""
from __future__ import annotations

from .base import OsRelease, Platform, UnsupportedPlatform, read_os_release


def detect() -> Platform:
    """The platform object for the configured root (``OVM_TEMPLATE_CONFIG_ROOT``)."""
    release = read_os_release()
    if release.family == "rhel":
        from .rhel import RhelPlatform
        return RhelPlatform(release)
    if release.family == "debian":
        from .debian import DebianPlatform
        return DebianPlatform(release)
    raise UnsupportedPlatform(
        "unsupported guest %r (ID=%s ID_LIKE=%s): supported are Oracle Linux/RHEL 5-9 and "
        "Debian/Ubuntu" % (release.pretty_name, release.id, " ".join(release.id_like)))


__all__ = ["detect", "OsRelease", "Platform", "UnsupportedPlatform", "read_os_release"]
