"""selinux: the guest's SELinux mode (Oracle's ``selinux`` module, configure priority 30).

Sets ``SELINUX=`` in ``/etc/selinux/config`` and, where SELinux is active on the running
system, the running mode with ``setenforce``. Leaving ``disabled`` makes the next boot
relabel the file system (``/.autorelabel``); entering ``disabled`` needs a reboot, until
which the system runs permissive. A guest without ``/etc/selinux/config`` (Debian,
Ubuntu) is left alone, with a message.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

from templateconfig import common
from templateconfig.modules.support.spec import Key, ModuleSpec
from templateconfig.platform import detect

log = logging.getLogger(__name__)

MODE = "com.oracle.linux.selinux.mode"
MODES = ("enforcing", "permissive", "disabled")

SPEC = ModuleSpec(
    "selinux", {"configure": 30}, "Configure the SELinux mode.",
    keys=[Key(MODE, "SELinux mode: enforcing, permissive or disabled.", hidden=True,
              choices=MODES)])


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    mode = params.get(MODE)
    if mode is None:
        return None
    platform = detect()
    if not platform.has_selinux():
        log.warning("selinux: %s has no %s (SELinux is not installed): %s=%s ignored",
                    platform.release.pretty_name, platform.selinux_config, MODE, mode)
        return None
    current = common.read_sysconfig(platform.selinux_config).get("SELINUX")
    if current != mode:
        common.edit_sysconfig(platform.selinux_config, {"SELINUX": mode})
        if current == "disabled" and mode != "disabled":
            # Files created while SELinux was off have no labels: relabel on next boot.
            common.write_file("/.autorelabel", "")
            log.warning("selinux: leaving 'disabled': the file system is relabelled on the "
                        "next boot, and %s takes effect then", mode)
    running = common.read_file(platform.selinux_enforce)
    if running is None:
        if mode != "disabled":
            log.warning("selinux: SELinux is not active on the running system; mode %s takes "
                        "effect after a reboot", mode)
        return None
    want = "1" if mode == "enforcing" else "0"
    if running.strip() != want:
        common.system_cmd(["setenforce", want])
    if mode == "disabled":
        log.warning("selinux: disabling SELinux takes effect after a reboot; the running "
                    "system stays permissive until then")
    return None
