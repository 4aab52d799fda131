"""Which cached keys the daemon keeps as secrets: by name, and by the modules' descriptors.

A key is a secret when its name says so (:func:`ovmd.secrets.is_secret_key`) or when an
enabled module's enumerate output flags it ``"password": true``. The daemon does not
import the framework: it reads what the runner learnt, the enumerate cache
(``enumerate-cache.json``, docs/formats.md §6), which every run that changes the system
writes after enumerating the modules.

Each key is one of three kinds (:meth:`SecretKeys.classify`):

    SECRET   named like a secret, or flagged password by a module's descriptors
    PUBLIC   Oracle's own keys (``com.oracle.linux.*``: the standard modules name their
             secrets like secrets), keys a current descriptor declares without the
             flag, and every key once the descriptors of every module enabled for
             ``configure`` are known (no module can flag it then)
    UNKNOWN  anything else: a third-party key that arrives before its module's
             enumerate output is known (a new clone, a module installed since the last
             run). The cache keeps it like a secret, in memory and /run only, until it
             is known (docs/formats.md §1).

Nothing here polls: :meth:`SecretKeys.refresh` looks again (a few ``stat`` calls) when the
cache is about to store something and when a run has ended.
"""
from __future__ import annotations

import json
import os
from typing import Any, Iterable, List, Optional, Set, Tuple

from .fsutil import read_bytes
from .paths import Paths
from .secrets import is_secret_key

PUBLIC, SECRET, UNKNOWN = "public", "secret", "unknown"
#: Oracle's namespace: the standard modules' keys (docs/keys.md), classified by name.
STANDARD_PREFIX = "com.oracle.linux."
#: The target whose enabled modules must all be known before an unknown key is public.
TARGET = "configure"
#: The enumerate cache's format version (docs/formats.md §6): the runner writes this one.
CACHE_VERSION = 1


def script_identity(path: str) -> Optional[List[int]]:
    """``[st_mtime_ns, st_size, st_ino, st_dev]`` of a module script (through symlinks):
    an enumerate cache entry is current while its script's identity is unchanged."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev]


def enabled_scripts(paths: Paths, target: str) -> List[str]:
    """Guest paths of the scripts ``<target>.d/NN<name>`` links to (as
    ``ovm-chkconfig`` makes them: a relative link, or an absolute one naming a guest
    path); entries that are not such links are left out."""
    directory = paths.target_dir(target)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    scripts = []
    for name in names:
        link = os.path.join(directory, name)
        if name.startswith(".") or len(name) < 3 or not name[:2].isdigit():
            continue
        try:
            destination = os.readlink(link)
        except OSError:
            continue
        if destination.startswith("/"):
            real = paths.under(destination)
        else:
            real = os.path.normpath(os.path.join(directory, destination))
        scripts.append(_guest_path(paths, real))
    return scripts


def _guest_path(paths: Paths, real: str) -> str:
    if paths.root == "/":
        return real
    return "/" + os.path.relpath(real, paths.root)


class SecretKeys:
    """The daemon's answer to "may this key's value go to disk?" (module docstring)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        #: keys some enumerate cache entry flags ``password`` (stale entries count too)
        self.password_keys: Set[str] = set()
        #: keys a current entry declares without the flag
        self.declared: Set[str] = set()
        #: every module enabled for configure has a current entry
        self.complete = True
        self._signature: Any = None
        self._entries: dict = {}
        self._file_identity: Optional[Tuple[int, int, int]] = None

    @property
    def cache_file(self) -> str:
        return self.paths.enumerate_cache_file

    def classify(self, key: str) -> str:
        if is_secret_key(key, self.password_keys):
            return SECRET
        if key.startswith(STANDARD_PREFIX) or key in self.declared or self.complete:
            return PUBLIC
        return UNKNOWN

    def is_volatile(self, key: str) -> bool:
        """True if the value may be kept only in memory and /run (a secret, or unknown)."""
        return self.classify(key) != PUBLIC

    def refresh(self) -> bool:
        """Look at the enumerate cache and the enabled modules again; True if what is
        known changed (the caller then classifies its keys again)."""
        scripts = [(path, script_identity(self.paths.under(path)))
                   for path in enabled_scripts(self.paths, TARGET)]
        identity = self._read_cache()
        signature = (identity, scripts)
        if signature == self._signature:
            return False
        self._signature = signature
        password: Set[str] = set()
        declared: Set[str] = set()
        for key, entry in self._entries.items():
            target, _, path = key.partition(" ")
            current = script_identity(self.paths.under(path)) == entry.get("script") \
                if path.startswith("/") else False
            for desc in _descriptors(entry):
                if _flagged(desc.get("password")):
                    password.add(desc["key"])
                elif current:
                    declared.add(desc["key"])
        self.complete = all(
            identity is not None
            and self._entries.get("%s %s" % (TARGET, path), {}).get("script") == identity
            for path, identity in scripts)
        self.password_keys = password
        self.declared = declared - password
        return True

    def _read_cache(self) -> Optional[Tuple[int, int, int]]:
        """Read the enumerate cache if it changed; its identity (None: absent)."""
        try:
            st = os.lstat(self.cache_file)  # the runner's own file: never through a link
        except OSError:
            self._entries, self._file_identity = {}, None
            return None
        identity = (st.st_mtime_ns, st.st_size, st.st_ino)
        if identity == self._file_identity:
            return identity
        self._file_identity = identity
        try:
            data = json.loads(read_bytes(self.cache_file, follow_links=False) or b"")
            entries = data.get("entries") if data.get("version") == CACHE_VERSION else None
        except (OSError, ValueError, AttributeError):
            entries = None  # unreadable: nothing is known from it (the runner rewrites it)
        self._entries = {k: v for k, v in (entries or {}).items()
                         if isinstance(k, str) and isinstance(v, dict)} \
            if isinstance(entries, dict) else {}
        return identity


def _descriptors(entry: dict) -> Iterable[dict]:
    descriptors = entry.get("descriptors")
    if not isinstance(descriptors, list):
        return ()
    return [d for d in descriptors if isinstance(d, dict) and isinstance(d.get("key"), str)]


def _flagged(value: Any) -> bool:
    """A descriptor's ``password`` flag, leniently: anything but an explicit false counts,
    as the runner counts it."""
    if value is None or value is False:
        return False
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "n", "0", "off")
    return bool(value)
