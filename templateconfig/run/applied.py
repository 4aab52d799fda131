"""The keys earlier successful runs applied, per target: so that a reconfigure needs only
the keys that changed.

``/var/lib/ovm-template-config/applied-keys.json`` (0600, replaced atomically and
durably; format in docs/formats.md) holds key *names*, never values. After a successful
run (every module ok, warnings allowed; not a dry run) the names of the keys the run's
modules declare and that the run had are added to its target's list. Validation then
counts a ``required`` key that is absent from the params but in the list as given: a
reconfigure after first boot, when the root password was wiped, still passes, and the
authentication module leaves the password as it is.

A first-boot run (``--initial-config``) does not count them: a first boot is given
everything. A successful ``cleanup`` (sealing a template) forgets the configure list, so
that no clone of the template inherits it.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, Iterable, List, Set

from ovmd.fsutil import atomic_write_json
from ovmd.paths import Paths

log = logging.getLogger(__name__)

_VERSION = 1
FILE_NAME = "applied-keys.json"


def applied_keys_path(paths: Paths) -> str:
    return os.path.join(paths.report_dir, FILE_NAME)


def _load(paths: Paths) -> Dict[str, List[str]]:
    path = applied_keys_path(paths)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the applied keys in %s: %s", path, exc)
        return {}
    targets = data.get("targets") if isinstance(data, dict) \
        and data.get("version") == _VERSION else None
    if not isinstance(targets, dict):
        return {}
    return {target: [k for k in keys if isinstance(k, str)]
            for target, keys in targets.items() if isinstance(keys, list)}


def applied_keys(paths: Paths, target: str) -> Set[str]:
    """The names of the keys earlier successful runs of ``target`` applied."""
    return set(_load(paths).get(target, ()))


def _save(paths: Paths, targets: Dict[str, List[str]]) -> None:
    atomic_write_json(applied_keys_path(paths), {"version": _VERSION, "targets": targets},
                      0o600, make_dirs=0o755)


def remember(paths: Paths, target: str, keys: Iterable[str]) -> None:
    """Add ``keys`` to what ``target``'s runs applied (written only if that changes it)."""
    targets = _load(paths)
    known = set(targets.get(target, ()))
    merged = known | set(keys)
    if merged != known:
        targets[target] = sorted(merged)
        _save(paths, targets)


def forget(paths: Paths, target: str) -> None:
    """Forget what ``target``'s runs applied."""
    targets = _load(paths)
    if targets.pop(target, None) is not None:
        _save(paths, targets)
