"""The enumerate cache: the descriptor lists of module scripts that have not changed since
they were enumerated, so that a steady-state run forks once per module instead of twice.

``Paths.enumerate_cache_file`` (root-only, replaced atomically inside the root; format
in docs/formats.md). ``OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE=1`` disables it. The
daemon reads it too (:mod:`ovmd.secretkeys`, which owns the format's version and the
scripts' identity).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional

from ovmd.fsutil import atomic_write_json, read_bytes
from ovmd.paths import Paths
from ovmd.secretkeys import CACHE_VERSION, script_identity
from templateconfig.run.contract import NO_ENUMERATE_CACHE_ENV

log = logging.getLogger(__name__)

def framework_fingerprint() -> List[Any]:
    """What the descriptors of a module may depend on besides its script: the Python
    version and the files of the ``templateconfig`` package, sub-packages included (the
    standard modules declare their keys there, their scripts only hand over). A package
    upgrade changes it."""
    import sys

    import templateconfig
    from templateconfig.run.preload import python_files

    files = []
    top = os.path.dirname(os.path.abspath(templateconfig.__file__))
    for _name, entry in python_files(top):
        try:
            st = entry.stat()
        except OSError:
            continue
        files.append([os.path.relpath(entry.path, top), st.st_mtime_ns, st.st_size, st.st_ino])
    return [templateconfig.__version__, sys.version, files]


class EnumerateCache:
    """Descriptor lists of module scripts, keyed by (target, script path) and valid while
    the script's identity (mtime, size, inode) and the framework fingerprint are unchanged.

    The file is written only by runs that change the system, after validation, and only
    when something new was learnt; a failed enumeration is never stored, nor are
    descriptors that carry a default value for a password key. If the cached descriptors
    refuse the params, the runner re-enumerates afresh before it refuses the run.
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.path = paths.enumerate_cache_file
        self.enabled = os.environ.get(NO_ENUMERATE_CACHE_ENV, "") in ("", "0")
        self._entries: Dict[str, Dict[str, Any]] = {}
        self._fingerprint: Optional[List[Any]] = None
        self._dirty = False
        #: False: ``get`` answers nothing (fresh enumerations are still remembered).
        self.use_cached = True
        if self.enabled:
            self._load()

    def _load(self) -> None:
        try:
            text = read_bytes(self.path, follow_links=False)  # ours: never through a link
            if text is None:
                return
            data = json.loads(text)
            if data.get("version") != CACHE_VERSION or data.get("framework") != self.fingerprint:
                return
            entries = data.get("entries")
            if isinstance(entries, dict):
                self._entries = entries
        except (OSError, ValueError, AttributeError) as exc:
            log.info("ignoring the enumerate cache %s: %s", self.path, exc)

    @property
    def fingerprint(self) -> List[Any]:
        if self._fingerprint is None:
            self._fingerprint = framework_fingerprint()
        return self._fingerprint

    def _key(self, target: str, path: str) -> str:
        """``TARGET /guest/path``: the path as on the guest, so that the cache stays valid
        for a root mounted elsewhere (and for a clone that keeps inodes)."""
        if self.paths.root != "/":
            path = "/" + os.path.relpath(path, self.paths.root)
        return "%s %s" % (target, path)

    def get(self, target: str, path: str, identity: Optional[List[int]]) -> Optional[List[dict]]:
        """The cached descriptors, or None (unknown or changed since)."""
        if not self.enabled or not self.use_cached or identity is None:
            return None
        entry = self._entries.get(self._key(target, path))
        if not isinstance(entry, dict) or entry.get("script") != identity:
            return None
        descriptors = entry.get("descriptors")
        return descriptors if isinstance(descriptors, list) else None

    def put(self, target: str, path: str, identity: Optional[List[int]],
            descriptors: List[dict]) -> None:
        """Remember a successful enumeration (``identity`` taken before it ran)."""
        if not self.enabled or identity is None or not _cacheable(descriptors):
            return
        self._entries[self._key(target, path)] = {"script": identity, "descriptors": descriptors}
        self._dirty = True

    def save(self) -> None:
        """Write the file if something was learnt since it was read."""
        if not self._dirty:
            return
        live = {}
        for key, entry in self._entries.items():  # drop entries of scripts that are gone
            path = self.paths.under(key.split(" ", 1)[-1])
            if isinstance(entry, dict) and script_identity(path) == entry.get("script"):
                live[key] = entry
        atomic_write_json(self.path, {"version": CACHE_VERSION, "framework": self.fingerprint,
                                      "entries": live}, 0o600, durable=False,
                          root=self.paths.root)
        self._dirty = False


def _cacheable(descriptors: List[dict]) -> bool:
    for desc in descriptors:
        if isinstance(desc, dict) and desc.get("password") and desc.get("default"):
            return False  # a default password: not something to keep in a file
    return True
