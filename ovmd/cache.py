"""The parameter cache: every key/value the host sent, kept across daemon restarts.

Non-secret parameters live in ``Paths.cache_file`` (``/var/lib/ovmd/params.json``, 0600 in
a 0700 directory) plus an append-only journal next to it (``params.json.journal``), so
that storing a batch of messages costs one appended line and one ``fsync`` instead of
rewriting the whole cache; the journal is folded into the snapshot (atomic write) when it
grows. A torn last journal line (a crash mid-write) was never acknowledged, so it is
ignored on load and the message is read again from XenStore.

Secrets (:func:`ovmd.secrets.is_secret_key`) never touch persistent storage: they are
kept in memory and in ``Paths.secret_cache_file`` under ``/run`` (tmpfs, root-only), so a
daemon restart mid-configuration still has them, and they are wiped after a successful
``configure`` (:meth:`ParamCache.wipe_secrets`).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, Iterable, List, Optional, Tuple

from .fsutil import atomic_write, ensure_private_dir, fsync_dir, read_text, wipe_file
from .paths import Paths
from .secrets import RedactingFilter, is_secret_key

log = logging.getLogger(__name__)

#: Fold the journal into the snapshot after this many lines or bytes.
COMPACT_LINES = 256
COMPACT_BYTES = 4 << 20


class CacheError(OSError):
    """The cache could not be stored durably."""


class ParamCache:
    """key -> value, durable for non-secrets, /run-only for secrets."""

    def __init__(self, paths: Paths, redactor: Optional[RedactingFilter] = None) -> None:
        self.paths = paths
        self.redactor = redactor
        self._public: Dict[str, str] = {}
        self._secret: Dict[str, str] = {}
        self._journal_fd: Optional[int] = None
        self._journal_lines = 0
        self._journal_bytes = 0

    @property
    def journal_file(self) -> str:
        return self.paths.cache_file + ".journal"

    # --- loading ---------------------------------------------------------------------
    def load(self) -> "ParamCache":
        """Read the snapshot, replay the journal, read the /run secret cache."""
        self._public = self._read_json(self.paths.cache_file)
        text = read_text(self.journal_file) or ""
        lines = text.split("\n")
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                self._replay(json.loads(line))
            except ValueError:
                if number < len(lines) - 1 and any(rest.strip() for rest in lines[number + 1:]):
                    log.warning("ignoring a corrupt line in %s", self.journal_file)
                else:  # torn tail from a crash: never acknowledged, will be re-read
                    log.info("ignoring an incomplete last line in %s", self.journal_file)
        self._journal_lines = len([line for line in lines if line.strip()])
        self._journal_bytes = len(text)
        self._secret = self._read_json(self.paths.secret_cache_file)
        for key in [k for k in self._public if is_secret_key(k)]:  # never expected; be safe
            self._secret[key] = self._public.pop(key)
        if self.redactor is not None:
            self.redactor.add(*self._secret.values())
        return self

    def _replay(self, entry: dict) -> None:
        if "set" in entry:
            self._public.update(entry["set"])
        for key in entry.get("del", ()):
            self._public.pop(key, None)
        if entry.get("clear"):
            self._public.clear()

    @staticmethod
    def _read_json(path: str) -> Dict[str, str]:
        text = read_text(path)
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            log.error("%s is not valid JSON; starting from an empty cache", path)
            return {}
        if not isinstance(data, dict):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    # --- reading ---------------------------------------------------------------------
    def get(self, key: str) -> Optional[str]:
        if key in self._secret:
            return self._secret[key]
        return self._public.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._secret or key in self._public

    def __len__(self) -> int:
        return len(self._public) + len(self._secret)

    def as_dict(self) -> Dict[str, str]:
        merged = dict(self._public)
        merged.update(self._secret)
        return merged

    def items(self) -> List[Tuple[str, str]]:
        return sorted(self.as_dict().items())

    def secret_values(self) -> List[str]:
        return list(self._secret.values())

    # --- writing ---------------------------------------------------------------------
    def update(self, pairs: Iterable[Tuple[str, str]]) -> List[str]:
        """Store pairs durably (later pairs win); returns the keys whose value changed.

        Returns only after the data is on stable storage (or in /run for secrets).
        """
        pairs = list(pairs)
        latest = dict(pairs)
        changed = [key for key, value in latest.items() if self.get(key) != value]
        public = {k: v for k, v in latest.items() if not is_secret_key(k)}
        secret = {k: v for k, v in latest.items() if is_secret_key(k)}
        if secret:
            if self.redactor is not None:
                self.redactor.add(*secret.values())
            self._secret.update(secret)
            self._write_secrets()
        if public:
            self._public.update(public)
            self._append({"set": public})
        return changed

    def delete(self, key: str) -> bool:
        if key in self._secret:
            del self._secret[key]
            self._write_secrets()
            return True
        if key in self._public:
            del self._public[key]
            self._append({"del": [key]})
            return True
        return False

    def clear(self) -> None:
        self._public.clear()
        self._compact()
        self.wipe_secrets()

    def wipe_secrets(self) -> List[str]:
        """Forget every secret (memory and /run); returns the keys that were wiped.

        Secret values stay registered with the log redactor, so they still cannot leak.
        """
        keys = sorted(self._secret)
        self._secret.clear()
        wipe_file(self.paths.secret_cache_file)
        return keys

    def forget(self) -> None:
        """Forget every param in memory, secrets included, and let go of the journal; the
        files are left to the caller (``ovmd --seal`` removes them, saying so)."""
        self._public.clear()
        self._secret.clear()
        self.close()

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    # --- storage ---------------------------------------------------------------------
    def _write_secrets(self) -> None:
        if not self._secret:
            wipe_file(self.paths.secret_cache_file)
            return
        data = json.dumps(self._secret, sort_keys=True).encode("utf-8")
        atomic_write(self.paths.secret_cache_file, data)

    def _append(self, entry: dict) -> None:
        line = (json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
        if self._journal_fd is None:
            ensure_private_dir(self.paths.state_dir)
            existed = os.path.exists(self.journal_file)
            self._journal_fd = os.open(
                self.journal_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            if not existed:
                fsync_dir(self.paths.state_dir)
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self._journal_fd, view):]
            os.fdatasync(self._journal_fd)
        except OSError as err:
            raise CacheError(err.errno, "cannot store parameters in %s: %s"
                             % (self.journal_file, err.strerror)) from None
        self._journal_lines += 1
        self._journal_bytes += len(line)
        if self._journal_lines >= COMPACT_LINES or self._journal_bytes >= COMPACT_BYTES:
            self._compact()

    def _compact(self) -> None:
        """Write the whole public cache as the snapshot, then empty the journal."""
        data = json.dumps(self._public, sort_keys=True, ensure_ascii=False).encode("utf-8")
        atomic_write(self.paths.cache_file, data)
        self.close()
        if os.path.exists(self.journal_file):
            fd = os.open(self.journal_file, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._journal_lines = 0
        self._journal_bytes = 0
