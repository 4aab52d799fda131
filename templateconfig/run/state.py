"""The resumable state of a run: which modules completed, so that a run killed half-way
resumes after them instead of redoing them.

``Paths.run_state_file`` (format in docs/formats.md) is written durably after each module
that succeeded. It holds the target, a salted fingerprint of the input params, and per
completed module the non-secret param changes it made (secret values never: only the
names of secret keys it changed). It is removed when the run finishes. A later run
resumes only with the same target and the same params (the fingerprint), and only up to
the first completed module that changed a secret: that value was not saved, so the
module runs again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ovmd.fsutil import atomic_write, read_bytes
from ovmd.paths import Paths
from templateconfig.run.scripts import Module

log = logging.getLogger(__name__)

#: Iterations of PBKDF2 over the secret part of the fingerprint: the state file must not
#: be a fast oracle for guessing the root password (it is root-only and short-lived too).
_SECRET_ROUNDS = 20000
_STATE_VERSION = 1

#: One completed module, as the state file records it.
Completed = Dict[str, Any]


def fingerprint(target: str, params: Mapping[str, Any], secret_keys: Iterable[str],
                salt: bytes) -> str:
    """A salted digest identifying (target, params); secret values go through PBKDF2."""
    secret_keys = set(secret_keys)
    public = sorted((k, v) for k, v in params.items() if k not in secret_keys)
    hidden = sorted((k, v) for k, v in params.items() if k in secret_keys)
    digest = hashlib.sha256()
    digest.update(json.dumps([target, public]).encode("utf-8"))
    if hidden:
        digest.update(hashlib.pbkdf2_hmac("sha256", json.dumps(hidden).encode("utf-8"),
                                          salt, _SECRET_ROUNDS))
    digest.update(salt)
    return digest.hexdigest()


def resumable(completed: Iterable[Mapping[str, Any]],
              modules: Sequence[Module]) -> Dict[str, Completed]:
    """The completed modules a resumed run may skip, by name: in run order, up to the
    first one that changed a secret (its value was not saved, so it must run again).
    Entries that do not parse, and modules whose priority changed, do not count."""
    by_name = {}
    for entry in completed:
        try:
            by_name[entry["name"]] = {
                "name": entry["name"], "priority": int(entry["priority"]),
                "changes": dict(entry.get("changes") or {}),
                "removed": list(entry.get("removed") or []),
                "secret_keys_changed": list(entry.get("secret_keys_changed") or [])}
        except (KeyError, TypeError, ValueError):
            continue
    skippable = {}
    for module in modules:
        found = by_name.get(module.name)
        if found is None or found["priority"] != module.priority:
            continue
        if found["secret_keys_changed"]:
            break
        skippable[module.name] = found
    return skippable


class RunState:
    """The resumable progress of one run (``Paths.run_state_file``).

    ``enabled`` false (a dry run): nothing is read or written.
    """

    def __init__(self, paths: Paths, target: str, params: Mapping[str, Any],
                 secret_keys: Iterable[str], enabled: bool = True) -> None:
        self.path = paths.run_state_file
        self.root = paths.root
        self.target = target
        self.enabled = enabled
        self._params = params
        self._secret_keys = set(secret_keys)
        self.salt = os.urandom(16)
        self.completed: List[Completed] = []
        self._fingerprint: Optional[str] = None
        self._fd: Optional[int] = None

    def load_previous(self) -> List[Completed]:
        """Completed modules of an interrupted run of the same target and params.

        An unreadable state, another target or other params: ``[]`` (start over).
        """
        if not self.enabled:
            return []
        try:
            data = read_bytes(self.path, follow_links=False)  # ours: never through a link
            if data is None:
                return []
            lines = data.decode("utf-8").splitlines()
            state = json.loads(lines[0]) if lines else {}
            completed = []
            for line in lines[1:]:
                try:
                    completed.append(json.loads(line))
                except ValueError:  # a line torn by the crash: that module did not count
                    break
            if (state.get("version") != _STATE_VERSION or state.get("target") != self.target):
                return []
            salt = bytes.fromhex(state["salt"])
            if state.get("fingerprint") != fingerprint(self.target, self._params,
                                                       self._secret_keys, salt):
                log.info("run state %s is for other params; starting over", self.path)
                return []
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable run state %s: %s", self.path, exc)
            return []
        self.salt = salt
        self._fingerprint = state["fingerprint"]
        return [entry for entry in completed if isinstance(entry, dict)]

    def carry_over(self, entry: Completed) -> None:
        """Keep a module completed before the interruption (for when the file is
        rewritten)."""
        self.completed.append(entry)

    def module_done(self, name: str, priority: int, changes: Mapping[str, Any],
                    removed: Iterable[str], secret_changed: Iterable[str]) -> None:
        """Record, durably, that ``name`` succeeded and what it changed (no secret values).

        The file is a header line and one JSON line per completed module: the first
        record rewrites it atomically (temp file, fsync, rename, fsync of the directory)
        with every module completed so far; later ones append one line and fsync. A line
        torn by a crash does not parse and so does not count.
        """
        entry = {"name": name, "priority": priority, "changes": dict(changes),
                 "removed": sorted(removed), "secret_keys_changed": sorted(secret_changed)}
        self.completed.append(entry)
        if not self.enabled:
            return
        if self._fd is None:
            self._create()
        else:
            os.write(self._fd, (json.dumps(entry, sort_keys=True) + "\n").encode("utf-8"))
            os.fsync(self._fd)

    def costly_to_prepare(self) -> bool:
        """True if :meth:`prepare` has PBKDF2 to do (the params hold secrets)."""
        return (self.enabled and self._fingerprint is None
                and any(key in self._secret_keys for key in self._params))

    def prepare(self) -> None:
        """Compute the fingerprint now (PBKDF2), e.g. while a module runs."""
        if self.enabled and self._fingerprint is None:
            self._fingerprint = fingerprint(self.target, self._params, self._secret_keys,
                                            self.salt)

    def _create(self) -> None:
        self.prepare()
        header = {"version": _STATE_VERSION, "target": self.target, "salt": self.salt.hex(),
                  "fingerprint": self._fingerprint}
        lines = [header] + self.completed
        atomic_write(self.path, "".join(json.dumps(line, sort_keys=True) + "\n"
                                        for line in lines).encode("utf-8"),
                     0o600, root=self.root)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        if not self.enabled:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
