"""Which failures of a command for the running system come from the kind of guest.

Some commands a module runs on the running system cannot work on some guests at all: a
Xen PV guest or a container has no hardware clock for ``hwclock``; ``setenforce`` needs
SELinux enabled; starting a service needs a running service manager. Such a failure is
an *environment failure*: :func:`templateconfig.common.system_cmd` turns it into a
warning and the module carries on; any other failure still fails the module.

Each rule is for one command and looks at the running system for the condition that
explains the failure (the devices and mounts under ``/dev``, ``/sys``, ``/run``), not at
the error text alone, so that a command that should have worked and failed for another
reason is never excused: ``hwclock`` failing on a guest that has an RTC is a real
failure. The rules read ``system_root`` (``/``; tests give another tree).

Imported only when a command for the running system has failed.
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

#: Rule: (argv, exit status, stderr, the running system's root) -> why the command cannot
#: work on this guest, or None.
Rule = Callable[[Sequence[str], int, str, str], Optional[str]]

#: systemctl verbs that need a running systemd (enabling and disabling do not).
_RUNTIME_VERBS = frozenset(("start", "stop", "restart", "reload", "try-restart",
                            "reload-or-restart", "try-reload-or-restart", "daemon-reload",
                            "reload-or-try-restart", "condrestart", "force-reload"))
#: What systemd's tools print when systemd is not the running init system.
_NO_SYSTEMD = ("System has not been booted with systemd", "Failed to connect to bus",
               "Running in chroot")
#: invoke-rc.d's exit status when policy-rc.d forbids the action (chroots, image builds).
_POLICY_DENIED = 101
#: nmcli's exit status "NetworkManager is not running" (nmcli(1)).
_NM_NOT_RUNNING = 8
_NO_SERVICE_MANAGER = ("no service manager is running (systemd is not the init system, as "
                       "in a container or chroot)")


def _path(system_root: str, path: str) -> str:
    return os.path.join(system_root, path.lstrip("/"))


def has_rtc(system_root: str = "/") -> bool:
    """True if the running system gives access to a hardware clock: an ``rtc`` device
    node. (A container may see the host's clock in ``/sys/class/rtc`` but has no node
    for it.)"""
    try:
        return any(name.startswith("rtc") for name in os.listdir(_path(system_root, "/dev")))
    except OSError:
        return False


def systemd_running(system_root: str = "/") -> bool:
    """sd_booted(): True if systemd is the running init system."""
    return os.path.isdir(_path(system_root, "/run/systemd/system"))


def _hwclock(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    if not has_rtc(root):
        return "this guest has no hardware clock (RTC; Xen PV guests and containers have none)"
    return _not_permitted("setting the hardware clock")(argv, code, stderr, root)


def _setenforce(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    if os.path.exists(_path(root, "/sys/fs/selinux/enforce")):
        return None
    return "SELinux is not enabled on the running system"


def _systemctl(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    verbs = [arg for arg in argv[1:] if not arg.startswith("-")]
    if not verbs or verbs[0] not in _RUNTIME_VERBS or systemd_running(root):
        return None
    return _NO_SERVICE_MANAGER


def _needs_systemd(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    """A tool that talks to a systemd service (netplan apply, hostnamectl, timedatectl)."""
    if systemd_running(root):
        return None
    return _NO_SERVICE_MANAGER


def _service(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    """``service NAME ACTION`` hands over to systemctl where systemd is installed."""
    if systemd_running(root) or not any(text in stderr for text in _NO_SYSTEMD):
        return None
    return _NO_SERVICE_MANAGER


def _invoke_rc_d(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    if code == _POLICY_DENIED:
        return "the guest's policy-rc.d forbids starting services (a chroot or image build)"
    return _service(argv, code, stderr, root)


def _nmcli(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
    if code != _NM_NOT_RUNNING:
        return None
    return "NetworkManager is not running yet; it reads the new configuration when it starts"


def _not_permitted(what: str) -> Rule:
    """A command root may run but a container's missing capability forbids."""
    def rule(argv: Sequence[str], code: int, stderr: str, root: str) -> Optional[str]:
        refused = "Operation not permitted" in stderr or "must be root" in stderr
        if os.geteuid() != 0 or not refused:
            return None
        return "the running system does not allow %s (a container without the capability)" \
            % what
    return rule


RULES: Dict[str, Rule] = {
    "hwclock": _hwclock,
    "setenforce": _setenforce,
    "systemctl": _systemctl,
    "service": _service,
    "invoke-rc.d": _invoke_rc_d,
    "nmcli": _nmcli,
    "netplan": _needs_systemd,
    "hostnamectl": _needs_systemd,
    "timedatectl": _needs_systemd,
    "date": _not_permitted("setting the clock"),
    "hostname": _not_permitted("setting the host name"),
}


def environment_failure(argv: Sequence[str], returncode: int, stderr: str,
                        system_root: str = "/") -> Optional[str]:
    """Why the failed command ``argv`` cannot work on this kind of guest, or None when it
    failed for real (see the module docstring)."""
    if not argv:
        return None
    rule = RULES.get(os.path.basename(argv[0]))
    return rule(argv, returncode, stderr, system_root) if rule is not None else None
