"""Clone detection: a guest that starts as another VM than the one it was configured as
re-arms its first boot by itself (``DETECT_CLONE=yes`` in /etc/sysconfig/ovmd; off by
default, as Oracle's ovmd has no such thing).

A VM's identity is what the toolstack tells its guest in XenStore: the domain's ``vm``
node (``/local/domain/<id>/vm`` -> ``/vm/<uuid>``, which libxl writes from the VM's
UUID: the same on every start of that VM and after a migration, another for a clone),
or failing that the MAC of the first vif (``device/vif/0/mac``). The identity is read
on every connection to XenStore, before any host message is taken in; it is recorded
(:attr:`ovmd.paths.Paths.identity_file`, docs/formats.md) when a configure run the
daemon started succeeded (the first-boot machine's ``record_identity``).

At the first connection after the daemon started, on a configured guest
(INITIAL_CONFIG=no) whose recorded VM is another one, the guest is a clone of a VM that
was not sealed: the daemon logs what it found, clears the params cached for the VM it
was cloned from (they are not this VM's) and sets INITIAL_CONFIG=yes, so the host's
messages configure it as a first boot would. The VM it was re-armed for is recorded too
(``armed``), so that a restart of the daemon before the configuration does not clear
the params that came meanwhile. A guest with no record yet records the VM it runs as,
and re-arms nothing.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, Optional

from .. import sysconfig
from ..cache import ParamCache
from ..firstboot.flag import initial_config_state, set_initial_config
from ..fsutil import atomic_write_json, read_text
from ..paths import Paths
from ..xenstore import ConnectionClosedError, XenStoreError

log = logging.getLogger(__name__)

#: The setting in /etc/sysconfig/ovmd that turns clone detection on (default no).
DETECT_CLONE = "DETECT_CLONE"
#: Relative to the domain's home: the VM's path (``/vm/<uuid>``), the first vif's MAC.
VM_NODE = "vm"
FIRST_MAC_NODE = "device/vif/0/mac"

Identity = Dict[str, str]


def same_vm(recorded: Identity, current: Identity) -> Optional[bool]:
    """Whether two identities name one VM: by the ``vm`` path when both have one, else
    by the first MAC; None when they share neither."""
    for part in ("vm", "mac"):
        if recorded.get(part) and current.get(part):
            return recorded[part] == current[part]
    return None


def describe(identity: Identity) -> str:
    return ", ".join("%s %s" % (part, identity[part]) for part in ("vm", "mac")
                     if identity.get(part)) or "nothing"


def read_identity(client: Any) -> Identity:
    """The identity XenStore gives this guest now (parts it cannot read are left out;
    a lost connection raises)."""
    identity: Identity = {}
    for part, node in (("vm", VM_NODE), ("mac", FIRST_MAC_NODE)):
        try:
            value = client.read(node).strip()
        except ConnectionClosedError:
            raise
        except XenStoreError as err:  # ENOENT, EACCES: the toolstack did not write it
            log.debug("clone detection: cannot read %s: %s", node, err)
            continue
        if value:
            identity[part] = value.lower() if part == "mac" else value
    return identity


class CloneDetector:
    """Reads the VM's identity on each connection; re-arms first boot once, at the first
    connection, if the guest is a clone; records the identity on request."""

    def __init__(self, paths: Paths, cache: ParamCache) -> None:
        self.paths = paths
        self.cache = cache
        self.enabled = False
        #: the identity read at the last connection
        self.current: Identity = {}
        self.checked = False

    def read_setting(self) -> None:
        try:
            self.enabled = sysconfig.flag(self.paths, DETECT_CLONE, False)
        except sysconfig.SettingError as err:
            log.warning("%s; clone detection stays off", err)
            self.enabled = False
        if self.enabled:
            log.info("clone detection is on (%s=yes)", DETECT_CLONE)

    def connected(self, client: Any) -> None:
        """A connection to XenStore, before any host message is read."""
        if not self.enabled:
            return
        self.current = read_identity(client)
        if not self.checked:
            self.checked = True
            try:
                self._check()
            except OSError as err:  # the flag or the record could not be written
                log.error("clone detection: cannot re-arm first boot: %s", err)

    def _check(self) -> None:
        record = self._load()
        current = self.current
        configured = record.get("configured")
        if not current:
            log.warning("clone detection: XenStore gives this guest neither %s nor %s; "
                        "cannot tell whether it is a clone", VM_NODE, FIRST_MAC_NODE)
            return
        if initial_config_state(self.paths) is not False:
            return  # first boot is armed already (or the flag says nothing): leave it
        if not isinstance(configured, dict):
            log.info("clone detection: no VM recorded yet; recording this one (%s)",
                     describe(current))
            self._save({"configured": current})
            return
        if same_vm(configured, current) is not False:
            return
        armed = record.get("armed")
        if isinstance(armed, dict) and same_vm(armed, current):
            return  # re-armed for this VM already, by an earlier start
        cleared = len(self.cache)
        self.cache.clear()
        files = set_initial_config(self.paths, True)
        record["armed"] = current
        self._save(record)
        log.warning("this guest starts as another VM than the one it was configured as "
                    "(%s then, %s now): a clone; first boot re-armed (%s=yes): "
                    "INITIAL_CONFIG=yes in %s, %d param(s) of the VM it was cloned from "
                    "cleared", describe(configured), describe(current), DETECT_CLONE,
                    ", ".join(files), cleared)

    def record_configured(self) -> None:
        """A configure run succeeded: this VM is the one the guest is configured as."""
        if not self.enabled:
            return
        if not self.current:
            log.info("clone detection: the VM's identity is not known (XenStore away "
                     "since the start); nothing recorded")
            return
        self._save({"configured": self.current})

    def _load(self) -> Dict[str, Any]:
        text = read_text(self.paths.identity_file)
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            log.warning("%s is not valid JSON; taking it as no record",
                        self.paths.identity_file)
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self, record: Dict[str, Any]) -> None:
        try:
            atomic_write_json(self.paths.identity_file, record, root=self.paths.root)
        except OSError as err:
            log.error("cannot record the VM's identity in %s: %s", self.paths.identity_file,
                      err.strerror or err)
