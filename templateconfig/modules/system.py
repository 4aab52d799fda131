"""system: give a clone its own identity (Oracle's ``system`` module; no keys).

Every clone of a template starts as a byte copy of it: same ``/etc/machine-id`` (journald,
D-Bus, DHCP client ids derive from it), the template's persistent network-device rules
(EL6 udev pins eth0 to the template's MAC, so a clone's NIC becomes eth1), and its
registration with ULN/RHN or subscription-manager. ``configure`` replaces the first and
removes the others so that two clones differ; ``cleanup`` prepares a template for
sealing: an empty ``/etc/machine-id`` (systemd fills it on first boot) and no rules,
registrations or random seed.

Idempotent within one boot: the identity is generated once per boot (a stamp with the
kernel's boot id, :func:`templateconfig.modules.support.state.identity_due`), so a
configure retried after a later module failed keeps it, while a clone, booted
separately, always gets a new one; a reconfiguration keeps it.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional

from templateconfig import common
from templateconfig.modules.support.spec import ModuleSpec
from templateconfig.modules.support.state import (
    forget_generated,
    identity_due,
    mark_generated,
)
from templateconfig.platform import detect_generic

log = logging.getLogger(__name__)

MACHINE_ID = "/etc/machine-id"
DBUS_MACHINE_ID = "/var/lib/dbus/machine-id"
#: Files that pin a clone to its template's hardware or registration.
CLONE_STATE = (
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/sysconfig/rhn/systemid",            # ULN / RHN registration (up2date)
    "/etc/pki/consumer/cert.pem",             # subscription-manager consumer identity
    "/etc/pki/consumer/key.pem",
)
#: Also removed when sealing (not at configure: the running system rewrites it at shutdown).
SEAL_ONLY = ("/var/lib/systemd/random-seed",)

SPEC = ModuleSpec(
    "system", {"configure": 60, "cleanup": 60},
    "Give a cloned guest its own identity (machine-id, network-device rules, "
    "registration).")


# --- the machine id ----------------------------------------------------------------------------

def _dbus_is_file() -> bool:
    real = common.root_path(DBUS_MACHINE_ID)
    return os.path.isfile(real) and not os.path.islink(real)


def _random_uuid_hex() -> str:
    """``uuid.uuid4().hex``, without importing :mod:`uuid` (which imports :mod:`platform`,
    a cost every run's start-up would pay, since the runner preloads what modules import)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


def new_machine_id() -> None:
    machine_id = _random_uuid_hex() + "\n"
    if detect_generic().uses_machine_id():
        common.write_file(MACHINE_ID, machine_id, mode=0o444)
    if _dbus_is_file():
        common.write_file(DBUS_MACHINE_ID, machine_id, mode=0o644)


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    for path in CLONE_STATE:
        common.remove_file(path)
    if identity_due("machine-id"):
        new_machine_id()
        mark_generated("machine-id")
    return None


@SPEC.target("cleanup")
def cleanup(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    for path in CLONE_STATE + SEAL_ONLY:
        common.remove_file(path)
    if common.exists(MACHINE_ID):
        # Empty, not absent: systemd then generates one at first boot ("uninitialized").
        common.write_file(MACHINE_ID, "", mode=0o444)
    if _dbus_is_file():
        common.remove_file(DBUS_MACHINE_ID)
    forget_generated("machine-id")
    return None
