"""The parameter cache: every key/value the host sent, kept across daemon restarts.

Non-secret parameters live in ``Paths.cache_file`` (``/var/lib/ovmd/params.json``, 0600 in
a 0700 directory) plus an append-only journal next to it (``params.json.journal``), so
that storing a batch of messages costs one appended line and one ``fsync`` instead of
rewriting the whole cache; the journal is folded into the snapshot (atomic write) when it
grows. Formats: docs/formats.md §1.

Durability comes first: :meth:`ParamCache.update` changes what the cache serves only once
the data is on stable storage. A write that fails (a full disk) is rolled back, the
journal cut back to the end of its last good line, and raises :class:`CacheError`; the
caller keeps the messages in XenStore and retries. A torn last line (a crash mid-write)
was never acknowledged, so it is cut off on load and the message is read again from
XenStore.

Loading never fails on content: what cannot be read is set aside by
:class:`~ovmd.cachefiles.CacheFiles` (``<file>.corrupt-<timestamp>``, 0600), each problem
is one ERROR line naming the file and what was kept, and the cache starts with everything
readable.

Secrets never touch persistent storage: values of keys :class:`~ovmd.secretkeys.SecretKeys`
does not call public (named like secrets, flagged ``password`` by a module's descriptors,
or not known yet) are kept in memory and in ``Paths.secret_cache_file`` under ``/run``
(tmpfs, root-only), so a daemon restart mid-configuration still has them, and they are
wiped after a successful ``configure`` (:meth:`ParamCache.wipe_secrets`).
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .cachefiles import CacheFiles, encode_entry, journal_file
from .channel import printable
from .fsutil import (
    PRIVATE_FILE,
    atomic_write,
    check_inside_root,
    ensure_private_dir,
    fsync_dir,
    open_own_file,
    wipe_file,
)
from .paths import Paths
from .secretkeys import SecretKeys
from .secrets import RedactingFilter

log = logging.getLogger(__name__)

#: Fold the journal into the snapshot after this many lines or bytes.
COMPACT_LINES = 256
COMPACT_BYTES = 4 << 20


class CacheError(OSError):
    """The cache could not be stored durably. What the cache serves is still only what
    was stored (in a batch of both kinds, the secrets may have been stored)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()




def _check_text(key: str, value: str) -> None:
    """Keys and values are stored as UTF-8: refuse what cannot be (lone surrogates)."""
    for what, text in (("key", key), ("value", value)):
        if not isinstance(text, str):
            raise ValueError("a %s must be a string" % what)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the %s of %s is not valid UTF-8" % (what, ascii(key))) from None


class ParamCache:
    """key -> value, durable for public keys, /run-only for the others."""

    def __init__(self, paths: Paths, redactor: Optional[RedactingFilter] = None,
                 keys: Optional[SecretKeys] = None) -> None:
        self.paths = paths
        self.redactor = redactor
        #: which keys may go to disk
        self.keys = keys if keys is not None else SecretKeys(paths)
        self._public: Dict[str, str] = {}
        self._secret: Dict[str, str] = {}
        self._journal_fd: Optional[int] = None
        self._journal_lines = 0
        self._journal_end = 0       # bytes of whole, good lines: a failed write goes back here
        self._compact_wanted = False
        self._compact_failing = False
        self._rewrite_secrets = False   # the /run file holds keys memory no longer does
        self._misplaced = False     # keys on the wrong side, to move when storage allows

    @property
    def journal_file(self) -> str:
        return journal_file(self.paths)

    # --- loading ---------------------------------------------------------------------
    def load(self) -> "ParamCache":
        """Read the snapshot, replay the journal, read the /run secret cache; set aside
        what cannot be read (module docstring). Never raises for what the files hold."""
        root = self.paths.root
        try:
            check_inside_root(root, self.paths.state_dir, follow_leaf=True, action="use")
            check_inside_root(root, self.paths.run_dir, follow_leaf=True, action="use")
        except OSError as err:
            log.error("%s; starting with an empty cache, and nothing will be stored until "
                      "it is fixed", err)
            return self
        files = CacheFiles(self.paths).read()
        self._public, self._secret = files.public, files.secret
        self._journal_lines, self._journal_end = files.journal_lines, files.journal_end
        self._compact_wanted |= files.compact_wanted
        self._rewrite_secrets |= files.rewrite_secrets
        if self.redactor is not None:
            self.redactor.add(*self._secret.values())
        for problem in files.problems:
            log.error("%s; kept %d parameter(s)", problem, len(self))
        self.keys.refresh()
        self._misplaced = True
        try:
            self._place_keys()
            if self._compact_wanted:
                self._compact()
        except OSError as err:  # a full disk: keep serving what was read, retry later
            log.error("cannot rewrite the cache after loading it (retried with the next "
                      "change): %s", err)
        return self

    # --- reading ---------------------------------------------------------------------
    def get(self, key: str) -> Optional[str]:
        if key in self._secret:
            return self._secret[key]
        return self._public.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._secret or key in self._public

    def __len__(self) -> int:
        return len(self.as_dict())

    def as_dict(self) -> Dict[str, str]:
        merged = dict(self._public)
        merged.update(self._secret)
        return merged

    def items(self) -> List[Tuple[str, str]]:
        return sorted(self.as_dict().items())

    def secret_values(self) -> List[str]:
        return list(self._secret.values())

    def is_secret(self, key: str) -> bool:
        """True if ``key``'s value is kept only in memory and /run (a secret, or a key
        not known yet): it is never sent back to the host on the daemon's own account."""
        return self.keys.is_volatile(key)

    # --- writing ---------------------------------------------------------------------
    def update(self, pairs: Iterable[Tuple[str, str]]) -> List[str]:
        """Store pairs durably (later pairs win); returns the keys whose value changed.

        Returns only after the data is on stable storage (or in /run for secrets);
        raises :class:`CacheError` (nothing served has changed) if it cannot be, and
        :class:`ValueError` for a key or value that is not text.
        """
        pairs = list(pairs)
        for key, value in pairs:
            _check_text(key, value)
        self.refresh()
        latest = dict(pairs)
        changed = [key for key, value in latest.items() if self.get(key) != value]
        public = {k: v for k, v in latest.items() if not self.keys.is_volatile(k)}
        secret = {k: v for k, v in latest.items() if k not in public}
        if secret:  # first: a batch that fails after it is stored again whole, later
            self._store_secrets(secret)
            for key in secret:
                if self._public.pop(key, None) is not None:  # must leave the disk
                    self._compact_wanted = True
        if public:
            self._append({"set": public})
            self._public.update(public)
            for key in public:
                if key in self._secret:  # held until now: the durable value rules
                    self._forget(self._secret.pop(key))
                    self._rewrite_secrets = True
        self._tidy()
        return changed

    def delete(self, key: str) -> bool:
        found = False
        if key in self._public:
            self._append({"del": [key]})
            del self._public[key]
            found = True
        if key in self._secret:
            remaining = dict(self._secret)
            old = remaining.pop(key)
            self._write_secrets(remaining)
            self._secret = remaining
            self._forget(old)
            found = True
        return found

    def clear(self) -> None:
        """Delete every key, secrets included (``ovmd -x``)."""
        self._append({"clear": True})
        self._public.clear()
        self.wipe_secrets()
        self._compact_wanted = True
        self._tidy()

    def wipe_secrets(self) -> List[str]:
        """Forget every secret (memory and /run, and any copy of an unreadable secret
        file set aside there); returns the keys that were wiped. The log redactor
        forgets their values too: they are nowhere any more."""
        keys = sorted(self._secret)
        values = list(self._secret.values())
        self._secret = {}
        wipe_file(self.paths.secret_cache_file)
        directory = os.path.dirname(self.paths.secret_cache_file)
        prefix = os.path.basename(self.paths.secret_cache_file) + ".corrupt-"
        try:
            names = [n for n in os.listdir(directory) if n.startswith(prefix)]
        except OSError:
            names = []
        for name in names:
            wipe_file(os.path.join(directory, name))
        for value in values:
            self._forget(value)
        return keys

    def forget(self) -> None:
        """Forget every param in memory, secrets included (the log redactor forgets
        them too), and let go of the journal; the files are left to the caller
        (``ovmd --seal`` removes them, saying so), and nothing is written afterwards."""
        for value in self._secret.values():
            self._forget(value)
        self._public, self._secret = {}, {}
        self._compact_wanted = self._rewrite_secrets = self._misplaced = False
        self.close()

    def refresh(self) -> None:
        """Classify the keys again if what the modules declare has changed (after a run:
        keys not known before may now go to disk, or must leave it)."""
        if self.keys.refresh():
            self._misplaced = True
        self._tidy()

    def close(self) -> None:
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    # --- storage ---------------------------------------------------------------------
    def _forget(self, value: str) -> None:
        if self.redactor is not None:
            self.redactor.discard(value)

    def _store_secrets(self, secret: Dict[str, str]) -> None:
        merged = dict(self._secret)
        merged.update(secret)
        self._write_secrets(merged)
        old, self._secret = self._secret, merged
        for key, value in secret.items():
            if old.get(key) != value:
                if key in old:
                    self._forget(old[key])
                if self.redactor is not None:
                    self.redactor.add(value)

    def _write_secrets(self, secret: Dict[str, str]) -> None:
        try:
            if not secret:
                wipe_file(self.paths.secret_cache_file)
                return
            data = json.dumps(secret, sort_keys=True, ensure_ascii=False).encode("utf-8")
            atomic_write(self.paths.secret_cache_file, data, root=self.paths.root)
        except OSError as err:
            raise CacheError(err.errno, "cannot store secrets in %s: %s"
                             % (self.paths.secret_cache_file, _strerror(err))) from None

    def _place_keys(self) -> None:
        """Move keys whose kind changed to their side: those now public to the journal,
        those now secret (or unknown) to /run, scrubbing them from the durable files."""
        if self._misplaced:
            # public now: the journal gets them (where both sides hold a key, the
            # durable value rules for a public key, the /run one for a secret)
            to_public = {k: v for k, v in self._secret.items()
                         if not self.keys.is_volatile(k)}
            to_secret = {k: v for k, v in self._public.items() if self.keys.is_volatile(k)}
            fresh = {k: v for k, v in to_public.items() if k not in self._public}
            if fresh:
                self._append({"set": fresh})
                self._public.update(fresh)
            for key in to_public:
                self._forget(self._secret.pop(key))
                self._rewrite_secrets = True
            held = {k: v for k, v in to_secret.items() if k not in self._secret}
            if held:
                self._store_secrets(held)
            for key in to_secret:
                del self._public[key]
                self._compact_wanted = True  # the durable files must no longer hold them
            if to_secret:
                log.info("keeping %d parameter(s) in /run only from now on (secret, or not "
                         "known yet): %s", len(to_secret),
                         ", ".join(sorted(ascii_key(k) for k in to_secret)[:8]))
            self._misplaced = False
        if self._rewrite_secrets:
            self._write_secrets(self._secret)
            self._rewrite_secrets = False

    def _tidy(self) -> None:
        """Finish what may wait (and what a full disk postponed): keys to move to their
        side, the /run file to rewrite, the journal to fold into the snapshot. What was
        stored is durable already, so a failure here is logged once and retried with
        the next change."""
        try:
            self._place_keys()
            if self._compact_wanted:
                self._compact()
        except OSError as err:
            if not self._compact_failing:
                log.warning("%s; retrying with the next change", err)
            self._compact_failing = True
            return
        if self._compact_failing:
            log.info("the cache files are tidy again")
        self._compact_failing = False

    def _open_journal(self) -> int:
        if self._journal_fd is not None:
            return self._journal_fd
        ensure_private_dir(self.paths.state_dir, self.paths.root)
        fd = open_own_file(self.journal_file, os.O_WRONLY, PRIVATE_FILE)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EISDIR, "not a regular file")
            if st.st_size != self._journal_end:  # a line a failed write left: cut it off
                if st.st_size < self._journal_end:
                    self._journal_end = st.st_size
                os.ftruncate(fd, self._journal_end)
                os.fsync(fd)
            fsync_dir(self.paths.state_dir)
        except OSError:
            os.close(fd)
            raise
        self._journal_fd = fd
        return fd

    def _append(self, entry: Dict[str, Any]) -> None:
        """Append one line and fdatasync it; on failure cut the journal back to its last
        good end and raise :class:`CacheError`."""
        line = encode_entry(entry)
        try:
            fd = self._open_journal()
        except OSError as err:
            raise CacheError(err.errno, "cannot store parameters in %s: %s"
                             % (self.journal_file, _strerror(err))) from None
        try:
            view = memoryview(line)
            position = self._journal_end
            while view:
                written = os.pwrite(fd, view, position)
                view, position = view[written:], position + written
            os.fdatasync(fd)
        except OSError as err:
            try:
                os.ftruncate(fd, self._journal_end)
                os.fdatasync(fd)
            except OSError:
                self.close()  # the next open cuts it back before writing
            raise CacheError(err.errno, "cannot store parameters in %s: %s"
                             % (self.journal_file, _strerror(err))) from None
        self._journal_end += len(line)
        self._journal_lines += 1
        if self._journal_lines >= COMPACT_LINES or self._journal_end >= COMPACT_BYTES:
            self._compact_wanted = True

    def _compact(self) -> None:
        """Write the whole public cache as the snapshot, then empty the journal."""
        data = json.dumps(self._public, sort_keys=True, ensure_ascii=False).encode("utf-8")
        try:
            atomic_write(self.paths.cache_file, data, root=self.paths.root)
            fd = self._open_journal()
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError as err:
            raise CacheError(err.errno, "cannot fold the journal into %s: %s"
                             % (self.paths.cache_file, _strerror(err))) from None
        self._journal_lines = 0
        self._journal_end = 0
        self._compact_wanted = False




def _strerror(err: OSError) -> str:
    return err.strerror or str(err)


def ascii_key(key: str) -> str:
    """A key as it may appear in a log line: control characters escaped."""
    return printable(key)
