"""What a run leaves behind: the run report, the run log, the resumable run state and the
enumerate cache.

Four files, three readers (the cache is the runner's own):

``Paths.report_file`` (:class:`RunReport`)
    The JSON report of the last (or current) run, read by ``ovmd --status``; rewritten
    atomically at every module transition, mode 0600, every error text redacted.
``Paths.log_file`` (:func:`open_run_log`)
    ``/var/log/ovm-template-config.log``, root-only (0600), one line per event; a
    :class:`~ovmd.secrets.RedactingFilter` on the handler removes secret values.
``Paths.run_state_file`` (:class:`RunState`)
    Progress of an unfinished run, written durably (temp file, fsync, rename, fsync of
    the directory) after each module that succeeded, so that a run killed half-way resumes
    after the modules that completed instead of redoing them. It holds the target, a salted
    fingerprint of the input params, and per completed module the non-secret param changes
    it made (secret values never: only the names of secret keys it changed). Removed when
    the run finishes.
``Paths.report_dir/enumerate-cache.json`` (:class:`EnumerateCache`)
    The descriptor lists of module scripts that have not changed since they were
    enumerated, so that a steady-state run forks once per module instead of twice.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from ovmd.fsutil import atomic_write, atomic_write_json
from ovmd.paths import Paths
from ovmd.runreport import ModuleStatus, RunStatus
from ovmd.secrets import RedactingFilter, redact

log = logging.getLogger(__name__)

#: Iterations of PBKDF2 over the secret part of the fingerprint: the state file must not
#: be a fast oracle for guessing the root password (it is root-only and short-lived too).
_SECRET_ROUNDS = 20000
_STATE_VERSION = 1


def write_json_atomic(path: str, data: Any, mode: int = 0o600, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (the file never exists with
    another mode); ``durable`` also fsyncs (crash safety)."""
    atomic_write_json(path, data, mode, make_dirs=0o755, durable=durable)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunReport:
    """The run report of one target run, kept up to date in ``Paths.report_file``.

    ``secrets`` is a live collection of secret values (the runner adds values that
    modules produce); every error text is redacted against it when written.
    """

    def __init__(self, paths: Paths, target: str, modules: Sequence[tuple],
                 secrets: Iterable[str] = (), write: bool = True) -> None:
        self.path = paths.report_file
        self.target = target
        self.secrets = secrets
        self.enabled = write
        self.status = RunStatus.RUNNING
        self.started = _now()
        self.finished: Optional[str] = None
        self.changed_keys: List[str] = []
        self.modules: List[Dict[str, Any]] = [
            {"name": name, "priority": priority, "status": ModuleStatus.PENDING, "seconds": None,
             "error": None}
            for priority, name in modules]
        self._by_name = {entry["name"]: entry for entry in self.modules}

    def update(self, name: str, status: str, seconds: Optional[float] = None,
               error: Optional[str] = None, write: bool = True, **extra: Any) -> None:
        """Record a module's new status and (unless ``write`` is false) rewrite the report."""
        entry = self._by_name[name]
        entry["status"] = status
        if seconds is not None:
            entry["seconds"] = round(seconds, 4)
        entry["error"] = error
        entry.update(extra)
        if write:
            self.write()

    def finish(self, status: str, changed_keys: Iterable[str]) -> None:
        self.status = status
        self.finished = _now()
        self.changed_keys = sorted(changed_keys)
        self.write()

    def to_dict(self) -> Dict[str, Any]:
        """The report as a JSON-ready dict, every error text redacted."""
        secrets = list(self.secrets)
        modules = []
        for entry in self.modules:
            entry = dict(entry)
            if entry.get("error"):
                entry["error"] = redact(entry["error"], secrets)
            if entry.get("actions"):
                entry["actions"] = [redact(a, secrets) for a in entry["actions"]]
            modules.append(entry)
        return {"target": self.target, "status": self.status, "started": self.started,
                "finished": self.finished, "modules": modules,
                "changed_keys": list(self.changed_keys)}

    def write(self) -> None:
        if self.enabled:
            write_json_atomic(self.path, self.to_dict())


def open_run_log(paths: Paths, redactor: RedactingFilter) -> logging.Handler:
    """Attach a handler writing ``templateconfig`` records to ``Paths.log_file``.

    The file is created root-only (0600, and tightened if it already exists); records
    pass through ``redactor``. Detach with :func:`close_run_log`.
    """
    path = paths.log_file
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    stream = os.fdopen(fd, "a", encoding="utf-8", errors="backslashreplace")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s [%(process)d] %(message)s", "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(redactor)
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("templateconfig")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def close_run_log(handler: logging.Handler) -> None:
    logging.getLogger("templateconfig").removeHandler(handler)
    handler.flush()
    handler.stream.close()


# --- resumable state ------------------------------------------------------------------------

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


class RunState:
    """The resumable progress of one run (``Paths.run_state_file``)."""

    def __init__(self, paths: Paths, target: str, params: Mapping[str, Any],
                 secret_keys: Iterable[str], enabled: bool = True) -> None:
        self.path = paths.run_state_file
        self.target = target
        self.enabled = enabled
        self._params = params
        self._secret_keys = set(secret_keys)
        self.salt = os.urandom(16)
        self.completed: List[Dict[str, Any]] = []
        self._fingerprint: Optional[str] = None
        self._fd: Optional[int] = None

    def load_previous(self) -> List[Dict[str, Any]]:
        """Completed modules of an interrupted run of the same target and params.

        An unreadable state, another target or other params: ``[]`` (start over).
        """
        if not self.enabled:
            return []
        try:
            with open(self.path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
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
        """Compute the fingerprint now (PBKDF2: a few ms), e.g. while a module runs."""
        if self.enabled and self._fingerprint is None:
            self._fingerprint = fingerprint(self.target, self._params, self._secret_keys,
                                            self.salt)

    def _create(self) -> None:
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.target, self._params, self._secret_keys,
                                            self.salt)
        header = {"version": _STATE_VERSION, "target": self.target, "salt": self.salt.hex(),
                  "fingerprint": self._fingerprint}
        lines = [header] + self.completed
        atomic_write(self.path, "".join(json.dumps(line, sort_keys=True) + "\n"
                                        for line in lines).encode("utf-8"),
                     0o600, make_dirs=0o755)
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


# --- the enumerate cache -----------------------------------------------------------------------

#: Set to 1 to enumerate every module afresh (the cache is then neither read nor written).
NO_ENUMERATE_CACHE_ENV = "OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE"
_CACHE_VERSION = 1


def enumerate_cache_path(paths: Paths) -> str:
    return os.path.join(paths.report_dir, "enumerate-cache.json")


def _framework_fingerprint() -> List[Any]:
    """What the descriptors of a module may depend on besides its script: the Python
    version and the files of the ``templateconfig`` package (the standard modules declare
    their keys there, their scripts only hand over). A package upgrade changes it."""
    import sys

    import templateconfig

    files = []
    top = os.path.dirname(os.path.abspath(templateconfig.__file__))
    for directory in (top, os.path.join(top, "modules"), os.path.join(top, "platform")):
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if entry.name.endswith(".py"):
                try:
                    st = entry.stat()
                except OSError:
                    continue
                files.append([os.path.relpath(entry.path, top), st.st_mtime_ns, st.st_size,
                              st.st_ino])
    return [templateconfig.__version__, sys.version, files]


def script_identity(path: str) -> Optional[List[int]]:
    """``[st_mtime_ns, st_size, st_ino, st_dev]`` of the script (through symlinks)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev]


class EnumerateCache:
    """Descriptor lists of module scripts, keyed by (target, script path) and valid while
    the script's identity (mtime, size, inode) and the framework fingerprint are unchanged.

    A steady-state run then forks once per module (the run) instead of twice (enumerate
    and run). The file (``Paths.report_dir/enumerate-cache.json``, root-only, replaced
    atomically) is written only by runs that change the system, after validation, and
    only when something new was learnt; a failed enumeration is never stored, nor are
    descriptors that carry a default value for a password key. If the cached descriptors
    refuse the params, the runner re-enumerates afresh before it refuses the run.
    ``OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE=1`` disables it.
    """

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.path = enumerate_cache_path(paths)
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
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
            if data.get("version") != _CACHE_VERSION or data.get("framework") != self.fingerprint:
                return
            entries = data.get("entries")
            if isinstance(entries, dict):
                self._entries = entries
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as exc:
            log.info("ignoring the enumerate cache %s: %s", self.path, exc)

    @property
    def fingerprint(self) -> List[Any]:
        if self._fingerprint is None:
            self._fingerprint = _framework_fingerprint()
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
        write_json_atomic(self.path, {"version": _CACHE_VERSION, "framework": self.fingerprint,
                                      "entries": live})
        self._dirty = False


def _cacheable(descriptors: List[dict]) -> bool:
    for desc in descriptors:
        if isinstance(desc, dict) and desc.get("password") and desc.get("default"):
            return False  # a default password: not something to keep in a file
    return True
