"""What a standard module applied: so later boots do not re-apply it, and cleanup can undo it.

Small files per module under the framework's state directory
(``/var/lib/ovm-template-config``, :attr:`ovmd.paths.Paths.REPORT_DIR`; no secrets in any):

``<module>.applied``
    the fingerprint (SHA-256) of the params last applied successfully. Written *last*,
    after every change succeeded, so a run interrupted half-way is redone; a later boot
    with the same params does nothing, new keys make the module apply again.
``<module>.saved``
    the original state of every guest path the module changed (content and mode, symlink
    target, or "absent") and of every service it enabled or disabled, recorded *before*
    the first change to it. ``cleanup`` puts these back and removes both files, which
    returns the template to the state it had before configure.
``<part>.generated``
    the kernel's boot id when an identity part (the machine id, the SSH host keys) was
    generated: it is generated once per boot, so a configure retried after a later
    module failed keeps it, while a clone, booted separately, always gets a new one.
    A reconfiguration (a ``--changed-only`` run) never makes it anew
    (:func:`identity_due`).

All changes go through :mod:`templateconfig.common`, so ``--root`` and ``--dry-run``
work. :class:`ModuleState` offers the same file operations as ``common`` and is what the
platform methods receive as ``files``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Tuple

from ovmd.paths import Paths
from templateconfig import common

if TYPE_CHECKING:
    from templateconfig.modules.support.spec import ModuleSpec

log = logging.getLogger(__name__)

#: The guest directory of the modules' state (the framework's, shared with the run report).
STATE_DIR = Paths.REPORT_DIR
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def fingerprint(params: Mapping[str, str]) -> str:
    """A stable digest of ``params`` (only a digest is stored, never the values).

    Secret keys are left out: an unsalted digest of a password would be crackable.
    """
    from ovmd.secrets import is_secret_key

    kept = sorted((k, v) for k, v in params.items() if not is_secret_key(k))
    text = json.dumps(kept, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ModuleState:
    """The applied fingerprint and the saved originals of one module."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.applied_path = "%s/%s.applied" % (STATE_DIR, module)
        self.saved_path = "%s/%s.saved" % (STATE_DIR, module)
        text = common.read_file(self.saved_path)
        saved = json.loads(text) if text else {}
        self._files: Dict[str, dict] = saved.get("files", {})
        self._services: Dict[str, Optional[bool]] = saved.get("services", {})

    # --- the fingerprint ------------------------------------------------------------------
    def applied_fingerprint(self) -> Optional[str]:
        text = common.read_file(self.applied_path)
        if not text:
            return None
        try:
            return json.loads(text).get("fingerprint")
        except ValueError:
            return None

    def mark_applied(self, digest: str) -> None:
        """Record that the params with ``digest`` were applied (call after success)."""
        common.write_file(self.applied_path, json.dumps({"fingerprint": digest}) + "\n", mode=0o600)

    # --- saving originals -------------------------------------------------------------------
    def _save(self) -> None:
        data = {"module": self.module, "files": self._files, "services": self._services}
        common.write_file(self.saved_path, json.dumps(data, indent=1, sort_keys=True) + "\n",
                          mode=0o600)

    def remember(self, path: str) -> None:
        """Save the original state of ``path`` unless it is saved already."""
        if path in self._files:
            return
        real = common.root_path(path)
        entry: Dict[str, object]
        if os.path.islink(real):
            entry = {"kind": "symlink", "target": os.readlink(real)}
        else:
            data = common.read_bytes(path)
            if data is None:
                entry = {"kind": "absent"}
            else:
                mode = os.stat(real).st_mode & 0o7777 if os.path.exists(real) else 0o644
                entry = {"kind": "file", "mode": mode,
                         "data": base64.b64encode(data).decode("ascii")}
        self._files[path] = entry
        self._save()

    def original_text(self, path: str) -> Optional[str]:
        """``path``'s text before this module first changed it (None: there was no file):
        the saved original, else what the file holds now."""
        entry = self._files.get(path)
        if entry is None:
            return common.read_file(path)
        if entry.get("kind") != "file":
            return None
        return base64.b64decode(entry["data"]).decode("utf-8", "surrogateescape")

    def remember_service(self, name: str, enabled: Optional[bool]) -> None:
        """Save whether service ``name`` was enabled (None: unknown) before we change it."""
        if name in self._services:
            return
        self._services[name] = enabled
        self._save()

    # --- changes (the same operations as common, with the original saved first) -----------
    def write_file(self, path: str, content, mode: Optional[int] = None) -> bool:
        data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
        real = common.root_path(path)
        if (not os.path.islink(real) and common.read_bytes(path) == data
                and (mode is None or not os.path.exists(real)
                     or os.stat(real).st_mode & 0o7777 == mode)):
            return False
        self.remember(path)
        return common.write_file(path, data, mode=mode)

    def symlink(self, path: str, target: str) -> bool:
        real = common.root_path(path)
        if os.path.islink(real) and os.readlink(real) == target:
            return False
        self.remember(path)
        return common.symlink(path, target)

    def remove_file(self, path: str) -> bool:
        if not common.exists(path):
            return False
        self.remember(path)
        return common.remove_file(path)

    def edit_sysconfig(self, path: str, updates: Mapping[str, Optional[str]],
                       mode: Optional[int] = None) -> bool:
        text = common.edit_sysconfig_text(common.read_file(path) or "", updates)
        return self.write_file(path, text, mode=mode)

    # --- cleanup ---------------------------------------------------------------------------
    @property
    def has_saved(self) -> bool:
        return bool(self._files or self._services)

    def restore(self, services: Optional[common.ServiceControl] = None) -> None:
        """Put every saved path and service back, then forget the module's state."""
        for path in sorted(self._files):
            entry = self._files[path]
            kind = entry.get("kind")
            real = common.root_path(path)
            if kind == "absent":
                common.remove_file(path)
            elif kind == "symlink":
                common.symlink(path, entry["target"])
            elif kind == "file":
                if os.path.islink(real):
                    common.remove_file(path)
                common.write_file(path, base64.b64decode(entry["data"]), mode=entry.get("mode"))
        if self._services:
            control = services or common.service_control()
            for name in sorted(self._services):
                enabled = self._services[name]
                if enabled is True:
                    control.enable(name)
                elif enabled is False:
                    control.disable(name)
        common.remove_file(self.saved_path)
        common.remove_file(self.applied_path)
        self._files, self._services = {}, {}


def pending_params(spec: ModuleSpec,
                   params: Mapping[str, str]) -> Optional[Tuple[ModuleState, str]]:
    """(state, fingerprint) when ``spec``'s own params differ from those last applied
    successfully; None when there are none, or they were applied already (a later boot
    with the same keys changes nothing: the clock is never set back)."""
    ours = {k: v for k, v in params.items() if spec.key_for(k) is not None}
    if not ours:
        return None
    state = ModuleState(spec.name)
    digest = fingerprint(ours)
    if state.applied_fingerprint() == digest:
        log.info("%s: these settings were applied already; nothing to do", spec.name)
        return None
    return state, digest


# --- once per boot ---------------------------------------------------------------------------

def boot_id() -> str:
    """The running kernel's boot id ("" if unknown): it changes on every boot."""
    try:
        with open(BOOT_ID) as handle:
            return handle.read().strip()
    except OSError:
        return ""


def _stamp_path(name: str) -> str:
    return "%s/%s.generated" % (STATE_DIR, name)


def generated_this_boot(name: str) -> bool:
    """Whether ``name`` (an identity part) was already generated during this boot."""
    text = common.read_file(_stamp_path(name))
    current = boot_id()
    if not text or not current:
        return False
    try:
        return json.loads(text).get("boot_id") == current
    except ValueError:
        return False


def identity_due(name: str) -> bool:
    """True if identity part ``name`` is to be made fresh now: it was not generated
    during this boot, and this run is no reconfiguration (``--changed-only`` applies the
    params that changed and keeps the identity)."""
    from templateconfig.run.contract import CHANGED_ONLY_ENV

    return os.environ.get(CHANGED_ONLY_ENV) != "1" and not generated_this_boot(name)


def mark_generated(name: str) -> None:
    """Record, after success, that ``name`` was generated during this boot."""
    common.write_file(_stamp_path(name), json.dumps({"boot_id": boot_id()}) + "\n", mode=0o644)


def forget_generated(name: str) -> None:
    common.remove_file(_stamp_path(name))
