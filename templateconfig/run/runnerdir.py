"""One runner's directory under ``/run``: the process groups of its module processes and
the staging directories of what its modules prepared. No module process outlives it.

A module process runs in its own process group (what it starts stays in it) and dies
with the runner (its parent-death signal is SIGKILL, :mod:`templateconfig.run.child`).
When a module ends or is stopped, the runner kills its group; but a runner that is itself
killed (SIGKILL, the OOM killer) cannot, and what its modules started would live on, and
a retry would then run a module a second time while the first one still works. So every
module process group is written down as it starts, in the runner's own directory
``Paths.runners_dir/<pid>-<n>/`` (0700, under ``/run``: processes do not outlive a
reboot either; ``n`` counts the runners of one process):

``runner``   the runner's identity: its pid's start time and the kernel's boot id
``groups``   one JSON line per module process group: ``{"pgid", "start", "boot"}``
``staging/<module>/``
             what the module's ``--prepare`` call made (:mod:`templateconfig.run.prepare`)

The runner kills what is left of its groups and removes the directory when it ends. The
next runner, before it starts any module process, does the same for the directory of
every runner that is gone: a retry never runs a module twice at the same time.

A recorded group is killed only while it is still ours: same boot, and if a process with
the group's id is alive, it is the recorded leader (same start time); if the leader is
gone, the rest of the group can only be ours, since the kernel does not hand out a
process id while a process group still has it.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
from typing import Any, Dict, List, Optional

from ovmd.fsutil import ensure_private_dir
from ovmd.paths import Paths

log = logging.getLogger(__name__)

_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_boot: Optional[str] = None
_numbers = itertools.count(1)


def boot_id() -> str:
    """The running kernel's boot id ("" if unknown)."""
    global _boot
    if _boot is None:
        try:
            with open(_BOOT_ID) as handle:
                _boot = handle.read().strip()
        except OSError:
            _boot = ""
    return _boot


def start_time(pid: int) -> Optional[int]:
    """When process ``pid`` started (clock ticks since boot), None if it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after "pid (comm)": state is field 3 of proc(5), starttime field 22
    return int(fields[19]) if len(fields) > 19 and fields[0] != b"Z" else None


def identity(pid: int) -> Dict[str, Any]:
    return {"pid": pid, "start": start_time(pid), "boot": boot_id()}


def is_alive(record: Dict[str, Any]) -> bool:
    """True if the process ``record`` (:func:`identity`) names still runs."""
    pid = record.get("pid")
    return (isinstance(pid, int) and record.get("boot") == boot_id()
            and record.get("start") is not None and start_time(pid) == record.get("start"))


def kill_group(record: Dict[str, Any]) -> bool:
    """Kill the process group ``record`` names if it is still ours (module docstring);
    True if something was killed."""
    pgid = record.get("pgid")
    if not isinstance(pgid, int) or pgid <= 1 or record.get("boot") != boot_id():
        return False
    leader = start_time(pgid)
    if leader is not None and leader != record.get("start"):
        return False  # the id is another process's now
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:  # no member left (ESRCH)
        return False
    return True


class RunnerDir:
    """This runner's directory (created on first use, :meth:`record`, :meth:`staging`)."""

    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self.path = os.path.join(paths.runners_dir, "%d-%d" % (os.getpid(), next(_numbers)))
        self._groups: List[Dict[str, Any]] = []
        self._ready: Optional[bool] = None

    def _open(self) -> bool:
        """Create the directory, after cleaning up after runners that are gone; False
        if it cannot be made (not root: nothing is recorded then). It appears whole
        (made under another name, then renamed), so that no other runner sees it
        without its ``runner`` file."""
        if self._ready is None:
            remove_stale(self.paths)
            fresh = self.path + ".new"
            try:
                ensure_private_dir(self.paths.run_dir, self.paths.root)  # inside the root
                ensure_private_dir(self.paths.runners_dir, self.paths.root)
                shutil.rmtree(fresh, ignore_errors=True)
                os.mkdir(fresh, 0o700)
                with open(os.path.join(fresh, "runner"), "w") as handle:
                    handle.write(json.dumps(identity(os.getpid())) + "\n")
                os.rename(fresh, self.path)
                self._ready = True
            except OSError as exc:
                log.debug("cannot keep a runner directory in %s: %s", self.path, exc)
                shutil.rmtree(fresh, ignore_errors=True)
                self._ready = False
        return self._ready

    def record(self, pgid: int) -> None:
        """A module process group started (its leader ``pgid``): write it down."""
        entry = {"pgid": pgid, "start": start_time(pgid), "boot": boot_id()}
        if entry["start"] is None or not self._open():
            return  # gone already: nothing will be left of it
        self._groups.append(entry)
        try:
            with open(os.path.join(self.path, "groups"), "a") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
        except OSError as exc:
            log.debug("cannot record process group %d: %s", pgid, exc)

    def staging(self, module: str) -> str:
        """A new private staging directory for ``module`` (OSError if it cannot be made)."""
        if not self._open():
            raise OSError("no runner directory in %s" % self.paths.runners_dir)
        directory = os.path.join(self.path, "staging", module)
        ensure_private_dir(os.path.dirname(directory), self.paths.root)
        ensure_private_dir(directory, self.paths.root)
        return directory

    def close(self) -> None:
        """The runner ends: kill what is left of its module process groups, remove the
        directory (what was staged with it)."""
        for entry in self._groups:
            kill_group(entry)
        self._groups = []
        if self._ready:
            shutil.rmtree(self.path, ignore_errors=True)
            try:
                os.rmdir(self.paths.runners_dir)  # unless another runner's is there
            except OSError:
                pass
        self._ready = None


def remove_stale(paths: Paths) -> None:
    """For each runner directory whose runner is gone: kill its module process groups
    that are still ours, then remove it."""
    try:
        names = os.listdir(paths.runners_dir)
    except OSError:
        return
    for name in names:
        if name.endswith(".new"):
            continue  # being made
        directory = os.path.join(paths.runners_dir, name)
        runner = _read_lines(os.path.join(directory, "runner"))
        if not (runner and is_alive(runner[0])):
            remove_runner_dir(directory, "pid %s" % name.split("-")[0])


def remove_runner_dir(directory: str, name: str) -> None:
    """Kill the process groups a gone runner's directory records, then remove it."""
    killed = [entry["pgid"] for entry in _read_lines(os.path.join(directory, "groups"))
              if kill_group(entry)]
    if killed:
        log.warning("killed what was left of the module processes of a runner that died "
                    "(%s): process groups %s", name,
                    ", ".join(map(str, killed)))
    shutil.rmtree(directory, ignore_errors=True)


def _read_lines(path: str) -> List[Dict[str, Any]]:
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # torn by the kill
        if isinstance(entry, dict):
            found.append(entry)
    return found
