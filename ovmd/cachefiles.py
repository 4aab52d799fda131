"""The parameter cache's files: their formats (docs/formats.md §1), and reading them at
start-up.

Reading never fails on content: what cannot be read (a line or a file that is not what
:mod:`ovmd.cache` writes, a directory where a file belongs) is set aside as
``<file>.corrupt-<timestamp>`` (0600), and the problem is said for the cache to log with
what it kept; a torn last journal line (a crash mid-write, never acknowledged) is cut off.
A symbolic link where one of these files belongs is removed (the file is written anew);
the files get their documented mode back. :class:`CacheFiles` also says what the cache
must rewrite because of what it found.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import stat
from typing import Any, Dict, List, Optional

from .fsutil import PRIVATE_FILE, check_inside_root, link_target, set_aside
from .paths import Paths

log = logging.getLogger("ovmd.cache.files")  # the cache's own lines (a child of its logger)


def encode_entry(entry: Dict[str, Any]) -> bytes:
    """One journal line (compact JSON, non-ASCII as is, a newline)."""
    return (json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")


def decode_entry(line: bytes) -> Dict[str, Any]:
    """A journal line as written by :func:`encode_entry`; raises :class:`ValueError` for
    anything else (not UTF-8, not JSON, not an entry of the documented shape)."""
    entry = json.loads(line.decode("utf-8"))
    if not isinstance(entry, dict) or not entry or set(entry) - {"set", "del", "clear"}:
        raise ValueError("not a journal entry")
    if "set" in entry and not _is_text_map(entry["set"]):
        raise ValueError("set is not an object of strings")
    if "del" in entry and not (isinstance(entry["del"], list)
                               and all(isinstance(k, str) for k in entry["del"])):
        raise ValueError("del is not a list of strings")
    if "clear" in entry and not isinstance(entry["clear"], bool):
        raise ValueError("clear is not a boolean")
    return entry


def decode_map(data: bytes) -> Dict[str, str]:
    """A snapshot or secret file: one JSON object of strings; raises :class:`ValueError`."""
    value = json.loads(data.decode("utf-8"))
    if not _is_text_map(value):
        raise ValueError("not a JSON object of strings")
    return value


def _is_text_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                           for k, v in value.items())


def journal_file(paths: Paths) -> str:
    """The journal, next to the snapshot."""
    return paths.cache_file + ".journal"


def read_only(paths: Paths) -> Dict[str, str]:
    """What the cache's files hold, every key (secrets too), without changing any file;
    each problem is one WARNING line. A directory whose way leads out of the root is not
    read at all (one ERROR line)."""
    for directory in (paths.state_dir, paths.run_dir):
        try:
            check_inside_root(paths.root, directory, follow_leaf=True, action="use")
        except OSError as err:
            log.error("%s; the cache there is not read", err)
            return {}
    files = CacheFiles(paths, repair=False).read()
    for problem in files.problems:
        log.warning("%s", problem)
    return dict(files.public, **files.secret)


class CacheFiles:
    """One reading of the snapshot, the journal and the /run secret file: what they hold,
    the problems met (each one line), and what the cache must rewrite because of them.
    ``repair=False`` reads only (``ovmd --seal``, ``--dry-run`` above all): nothing is set
    aside, cut, re-moded or removed, and the problems say so."""

    def __init__(self, paths: Paths, repair: bool = True) -> None:
        self.paths = paths
        self.journal_file = journal_file(paths)
        self.repair = repair
        self.public: Dict[str, str] = {}
        self.secret: Dict[str, str] = {}
        self.problems: List[str] = []
        self.journal_lines = 0
        self.journal_end = 0        # bytes of whole, good lines
        self.compact_wanted = False     # the snapshot and journal must be written anew
        self.rewrite_secrets = False    # the /run file must be written anew

    def read(self) -> "CacheFiles":
        problems = self.problems
        self.public = self.load_map(self.paths.cache_file, problems)
        self.load_journal(problems)
        self.secret = self.load_map(self.paths.secret_cache_file, problems)
        return self

    def read_state(self, path: str, problems: List[str]) -> Optional[bytes]:
        """A state file's bytes (None: absent); a symbolic link there is replaced (removed),
        a directory or an unreadable file set aside."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as err:
            if err.errno == errno.ELOOP and not self.repair:
                problems.append("%s is a symbolic link (to %s); not read" % (path,
                                                                            link_target(path)))
                return None
            if err.errno == errno.ELOOP:
                log.warning("%s was a symbolic link (to %s); removed it, the file will be "
                            "written anew", path, link_target(path))
                os.unlink(path)
                return None
            self.set_aside_whole(path, err.strerror or str(err), problems)
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.set_aside_whole(path, "not a regular file", problems)
                return None
            chunks = []
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
            if self.repair and os.fstat(fd).st_mode & 0o7777 != PRIVATE_FILE:
                os.fchmod(fd, PRIVATE_FILE)  # its documented mode, whoever widened it
            return b"".join(chunks)
        except OSError as err:
            self.set_aside_whole(path, err.strerror or str(err), problems)
            return None
        finally:
            os.close(fd)

    def set_aside_whole(self, path: str, why: str, problems: List[str]) -> None:
        if not self.repair:
            problems.append("%s cannot be read (%s)" % (path, why))
            return
        try:
            aside = set_aside(path)
        except OSError as err:
            problems.append("%s cannot be read (%s) nor set aside (%s)" % (path, why, err))
        else:
            problems.append("%s cannot be read (%s); moved it to %s" % (path, why, aside))
        self.compact_wanted |= path == self.paths.cache_file

    def load_map(self, path: str, problems: List[str]) -> Dict[str, str]:
        data = self.read_state(path, problems)
        if not data:
            return {}
        try:
            return decode_map(data)
        except ValueError as err:
            why = _reason(err)
        kept = _salvage(data)
        if not self.repair:
            problems.append("%s is not what ovmd writes (%s); kept what could be read"
                            % (path, why))
            return kept
        try:
            aside = set_aside(path, data, root=self.paths.root)
        except OSError as err:
            problems.append("%s is not what ovmd writes (%s) and cannot be set aside (%s)"
                            % (path, why, err))
            return kept
        problems.append("%s is not what ovmd writes (%s); copied it to %s and kept what "
                        "could be read" % (path, why, aside))
        if path == self.paths.secret_cache_file:
            self.rewrite_secrets = True
        else:
            self.compact_wanted = True
        return kept

    def load_journal(self, problems: List[str]) -> None:
        data = self.read_state(self.journal_file, problems) or b""
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: b"" or a torn write
        corrupt: List[bytes] = []
        offset = 0
        for raw in lines:
            offset += len(raw) + 1
            if not raw.strip():
                continue
            try:
                entry = decode_entry(raw)
            except ValueError:
                corrupt.append(raw)
                continue
            self.replay(entry)
            self.journal_lines += 1
        self.journal_end = offset
        if not self.repair:
            if corrupt:
                problems.append("%s has %d line(s) that are not journal entries; not read"
                                % (self.journal_file, len(corrupt)))
            return
        if tail:
            # a torn last line: never acknowledged (its messages are still in XenStore);
            # cut it off so that the next line starts on a line of its own
            log.info("cut an incomplete last line (%d bytes) off %s; its messages are read "
                     "again from XenStore", len(tail), self.journal_file)
            try:
                fd = os.open(self.journal_file, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    os.ftruncate(fd, offset)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as err:
                log.error("cannot cut the incomplete line off %s: %s", self.journal_file, err)
                self.compact_wanted = True
        if corrupt:
            try:
                aside = set_aside(self.journal_file, b"\n".join(corrupt) + b"\n",
                                  root=self.paths.root)
            except OSError as err:
                problems.append("%s has %d line(s) that are not journal entries and they "
                                "cannot be set aside (%s)" % (self.journal_file, len(corrupt),
                                                              err))
            else:
                problems.append("%s has %d line(s) that are not journal entries; moved them "
                                "to %s" % (self.journal_file, len(corrupt), aside))
                self.compact_wanted = True

    def replay(self, entry: Dict[str, Any]) -> None:
        self.public.update(entry.get("set", {}))
        for key in entry.get("del", ()):
            self.public.pop(key, None)
        if entry.get("clear"):
            self.public.clear()


def _salvage(data: bytes) -> Dict[str, str]:
    """The string entries of a JSON object that is not all strings; {} if not one."""
    try:
        value = json.loads(data.decode("utf-8", "replace"))
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)
            and "\ufffd" not in k + v}


def _reason(err: ValueError) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8"
    if isinstance(err, json.JSONDecodeError):
        return "not JSON: %s" % err.msg
    return str(err)
