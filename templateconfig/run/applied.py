"""What the last successful run of each module applied, so that a run with
``--changed-only`` runs only the modules whose params changed since.

``Paths.applied_file`` (format in docs/formats.md) keeps, per target and module, the
params the module took when it last succeeded: a module's params are the keys its
descriptors name (a key ending in ``.N``, such as ``...network.ipaddr.0``, stands for
every index N). A non-secret value is kept as its SHA-256 (the values are in ovmd's
cache anyway); a secret only by its name, never by any digest, so that the file can be
no oracle for a password. A module *changed* when the params hold one of its keys whose
digest differs from the record, or a secret of its own at all (secrets are wiped once
applied, so one that is there again was sent again; the modules check what they can,
the authentication module the password against the shadow hash).

A module that has none of its keys in the params never counts as changed, nor does a
module that declares no keys (the system module, or a wrapper that reads its values
with ``ovmd -g``): such modules run only in full runs. A successful ``cleanup`` (sealing
a template) forgets what configure applied, so that no clone inherits it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from ovmd.fsutil import atomic_write_json, read_text
from ovmd.paths import Paths

log = logging.getLogger(__name__)

_VERSION = 1
#: One module's record: key -> SHA-256 of its value, or None for a secret.
Record = Dict[str, Optional[str]]


def _digest(value: Any) -> str:
    return hashlib.sha256(str(value).encode("utf-8", "surrogatepass")).hexdigest()


def key_matcher(descriptors: Iterable[Mapping[str, Any]]) -> Callable[[str], bool]:
    """Whether a param key is one of the keys the descriptors name (``prefix.N`` stands
    for every index of the prefix)."""
    exact = set()
    indexed = set()
    for descriptor in descriptors:
        key = str(descriptor.get("key") or "")
        stem, dot, index = key.rpartition(".")
        if dot and index.isdigit():
            indexed.add(stem + ".")
        elif key:
            exact.add(key)

    def matches(name: str) -> bool:
        if name in exact:
            return True
        stem, dot, index = name.rpartition(".")
        return bool(dot) and index.isdigit() and (stem + ".") in indexed
    return matches


class AppliedParams:
    """The per-module records of one target, read from and written to
    ``Paths.applied_file``. ``is_secret(key)`` says which keys are secrets."""

    def __init__(self, paths: Paths, target: str, is_secret: Callable[[str], bool]) -> None:
        self.path = paths.applied_file
        self.target = target
        self.is_secret = is_secret
        self.targets: Dict[str, Dict[str, Record]] = self._load()
        self.records = self.targets.setdefault(target, {})

    def _load(self) -> Dict[str, Dict[str, Record]]:
        text = read_text(self.path)
        if not text:
            return {}
        try:
            data = json.loads(text)
            targets = data["targets"] if data.get("version") == _VERSION else {}
            return {str(t): {str(m): dict(r) for m, r in modules.items()}
                    for t, modules in targets.items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring unreadable %s (every module counts as changed): %s",
                        self.path, exc)
            return {}

    def changed_keys(self, module: str, matches: Callable[[str], bool],
                     params: Mapping[str, Any]) -> List[str]:
        """The module's keys in ``params`` that changed since it last succeeded."""
        record = self.records.get(module, {})
        changed = []
        for key in sorted(params):
            if not matches(key):
                continue
            if self.is_secret(key) or record.get(key) != _digest(params[key]):
                changed.append(key)
        return changed

    def module_done(self, module: str, matches: Callable[[str], bool],
                    params: Mapping[str, Any]) -> None:
        """The module succeeded with ``params``: they are its record from now on (keys
        it took before and that are not in ``params`` stay recorded)."""
        record = self.records.setdefault(module, {})
        for key, value in params.items():
            if matches(key):
                record[key] = None if self.is_secret(key) else _digest(value)

    def forget(self, target: str) -> None:
        """Forget what ``target``'s runs applied (saved by :meth:`save`)."""
        self.targets.pop(target, None)
        if target == self.target:
            self.records = self.targets.setdefault(target, {})

    def save(self) -> None:
        atomic_write_json(self.path, {"version": _VERSION, "targets": self.targets}, 0o600,
                          make_dirs=0o755, durable=False)
