"""The daemon's settings in ``/etc/sysconfig/ovmd``: shell-style ``NAME=value`` lines.

The file is also sourced by the SysV init script, so it is read the way a shell reads
simple assignments: ``#`` comments, an optional ``export``, one level of quotes; the last
assignment of a name wins. Nothing is evaluated. ``INITIAL_CONFIG`` has its own reader
and writer (:mod:`ovmd.firstboot.flag`), which keeps the file's other lines.
"""
from __future__ import annotations

import re
from typing import Dict, Optional

from .fsutil import read_text
from .paths import Paths

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*?)\s*$")
_TRUE = ("yes", "true", "on", "1")
_FALSE = ("no", "false", "off", "0")


class SettingError(ValueError):
    """A setting whose value is not one the daemon understands (the message names the
    file, the setting, the value and what is allowed)."""


def read_settings(path: str) -> Dict[str, str]:
    """Every ``NAME=value`` of the file (none if it does not exist); raises
    :class:`SettingError` if it cannot be read (a directory there, say)."""
    try:
        text = read_text(path)
    except OSError as err:
        raise SettingError("cannot read %s: %s" % (path, err.strerror or err)) from None
    settings: Dict[str, str] = {}
    for line in (text or "").splitlines():
        match = _ASSIGNMENT.match(line)
        if match is None:
            continue
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        settings[match.group(1)] = value
    return settings


def flag(paths: Paths, name: str, default: bool,
         settings: Optional[Dict[str, str]] = None) -> bool:
    """A yes/no setting of ``/etc/sysconfig/ovmd`` (``default`` when unset or empty);
    raises :class:`SettingError` for any other value."""
    if settings is None:
        settings = read_settings(paths.sysconfig_ovmd)
    value = settings.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingError("%s: %s=%s is not yes or no" % (paths.sysconfig_ovmd, name,
                                                       settings[name]))


def seconds(paths: Paths, name: str, default: float,
            settings: Optional[Dict[str, str]] = None) -> float:
    """A duration setting of ``/etc/sysconfig/ovmd``, in seconds (``default`` when unset
    or empty); raises :class:`SettingError` for anything but a number, 0 or more."""
    if settings is None:
        settings = read_settings(paths.sysconfig_ovmd)
    value = settings.get(name, "").strip()
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise SettingError("%s: %s=%s is not a number of seconds (0 or more)"
                           % (paths.sysconfig_ovmd, name, settings[name]))
    return number

