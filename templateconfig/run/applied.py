"""What earlier successful runs applied: so that a reconfigure needs only the keys that
changed (they *count as given*), and so that a ``--changed-only`` run runs only the
modules whose params changed. Two records under ``/var/lib/ovm-template-config``
(0600, replaced atomically inside the root, :mod:`templateconfig.run.statefiles`; formats
in docs/formats.md), never a value of a secret:

``applied-keys.json``: key *names* per target
    After a successful run (every module ok, warnings allowed; not a dry run) the names
    of the keys the run's modules declare and that the run had are added to its
    target's list. Validation then counts a ``required`` key that is absent from the
    params but in the list as given: a reconfigure after first boot, when the root
    password was wiped, still passes, and the authentication module leaves the password
    as it is. A first-boot run (``--initial-config``) does not count them: a first boot
    is given everything.

``applied-params.json``: per target and module, the params it took when it last succeeded
    A module's params are the keys its descriptors name (a key ending in ``.N``, such as
    ``...network.ipaddr.0``, stands for every index N). A non-secret value is kept as
    its SHA-256 (the values are in ovmd's cache anyway); a secret only by its name,
    never by any digest, so that the file can be no oracle for a password. A module
    *changed* when the params hold one of its keys whose digest differs from the
    record, or a secret of its own at all (secrets are wiped once applied, so one that
    is there again was sent again; the modules check what they can, the authentication
    module the password against the shadow hash). A module that has none of its keys in
    the params never counts as changed, nor does a module that declares no keys (the
    system module, or a wrapper that reads its values with ``ovmd -g``): such modules run
    only in full runs.

A successful ``cleanup`` (sealing a template) forgets what configure runs applied, in
both records, so that no clone of the template inherits it.
"""
from __future__ import annotations

import hashlib
import json
import logging
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Set

from ovmd.fsutil import atomic_write_json, read_bytes
from ovmd.paths import Paths

log = logging.getLogger(__name__)

_VERSION = 1
#: One module's record: key -> SHA-256 of its value, or None for a secret.
Record = Dict[str, Optional[str]]


def applied_keys_path(paths: Paths) -> str:
    return paths.applied_keys_file


def applied_params_path(paths: Paths) -> str:
    return paths.applied_params_file


def _load_targets(path: str) -> Dict[str, Any]:
    """The ``targets`` object of one of the records ({} if missing or unusable)."""
    try:
        text = read_bytes(path, follow_links=False)  # ours: never through a link
        if text is None:
            return {}
        data = json.loads(text)
    except (OSError, ValueError) as exc:
        log.warning("ignoring the record of applied params in %s: %s", path, exc)
        return {}
    targets = data.get("targets") if isinstance(data, dict) \
        and data.get("version") == _VERSION else None
    return targets if isinstance(targets, dict) else {}


def _save_targets(paths: Paths, path: str, targets: Dict[str, Any]) -> None:
    atomic_write_json(path, {"version": _VERSION, "targets": targets}, 0o600,
                      root=paths.root)


# --- the names: what counts as given -------------------------------------------------------

def _load(paths: Paths) -> Dict[str, List[str]]:
    return {target: [k for k in keys if isinstance(k, str)]
            for target, keys in _load_targets(applied_keys_path(paths)).items()
            if isinstance(keys, list)}


def applied_keys(paths: Paths, target: str) -> Set[str]:
    """The names of the keys earlier successful runs of ``target`` applied."""
    return set(_load(paths).get(target, ()))


def remember(paths: Paths, target: str, keys: Iterable[str]) -> None:
    """Add ``keys`` to what ``target``'s runs applied (written only if that changes it)."""
    targets = _load(paths)
    known = set(targets.get(target, ()))
    merged = known | set(keys)
    if merged != known:
        targets[target] = sorted(merged)
        _save_targets(paths, applied_keys_path(paths), targets)


def forget(paths: Paths, target: str) -> None:
    """Forget what ``target``'s runs applied, in both records."""
    for path in (applied_keys_path(paths), applied_params_path(paths)):
        targets = _load_targets(path)
        if targets.pop(target, None) is not None:
            _save_targets(paths, path, targets)


# --- the digests: what changed since each module last succeeded ----------------------------

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
    ``applied-params.json``. ``is_secret(key)`` says which keys are secrets."""

    def __init__(self, paths: Paths, target: str, is_secret: Callable[[str], bool]) -> None:
        self.paths = paths
        self.path = applied_params_path(paths)
        self.target = target
        self.is_secret = is_secret
        self.targets: Dict[str, Dict[str, Record]] = {
            str(t): {str(m): dict(r) for m, r in modules.items() if isinstance(r, dict)}
            for t, modules in _load_targets(self.path).items() if isinstance(modules, dict)}
        self.records = self.targets.setdefault(target, {})

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

    def save(self) -> None:
        _save_targets(self.paths, self.path, self.targets)
