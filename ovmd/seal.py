"""Sealing a template (``ovmd --seal``): on a running guest, or on a disk image.

Sealing makes a configured VM a template that every clone configures afresh: the
cleanup target's modules remove what they own (SSH host keys, the machine-id, what
configure wrote), then the state that made the VM one machine to ovmd and the runner is
removed (:attr:`ovmd.paths.Paths.SEALED`: the parameter cache and its journal, the
secrets, the run report and run state, the run log, runner directories), each removal
printed as it is done, and INITIAL_CONFIG=yes arms first boot for the clones. If the
cleanup target fails, nothing is removed and the flag is left alone.

Who does it: the daemon serving the root, when one answers (``ovmd --seal`` asks it:
it holds the cache in memory, and the flag it sets is the clones', not its own boot's:
:mod:`ovmd.daemon.sealing`). Otherwise the command itself (:func:`seal_here`), for
example on a disk image mounted at DIR (``ovmd --seal --root DIR``), changing nothing
outside DIR: the runner works on the root (commands for the running system are
recorded, not run, under a root other than ``/``), its temporary files are made inside
the root, and a file whose way leads out of the root through a symbolic link is not
removed (:func:`ovmd.fsutil.check_inside_root`). ``--dry-run`` changes nothing: the
runner's plan, and what would be removed.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import sys
from typing import Callable, Dict, List, Optional, Tuple

from .control import EXIT_FAILURE, EXIT_NOT_RUNNING, EXIT_OK, ControlClient, ControlError
from .firstboot.flag import set_initial_config, sysconfig_files
from .fsutil import (
    OutsideRootError,
    check_inside_root,
    ensure_private_dir,
    read_text,
    wipe_file,
)
from .paths import ROOT_ENV, Paths

#: The target whose modules remove what they own before the rest is removed.
CLEANUP = "cleanup"

Say = Callable[[str], None]


class SealError(Exception):
    """Sealing stopped; the message says what was not done and why."""


def sealed_files(paths: Paths) -> List[Tuple[str, str, bool]]:
    """``(path, what, secret)`` of every file :attr:`Paths.SEALED` names that exists
    under the root, in the declaration's order."""
    found: List[Tuple[str, str, bool]] = []
    seen = set()
    prefix = "" if paths.root == "/" else glob.escape(paths.root)
    for pattern, what, secret in Paths.SEALED:
        for path in sorted(glob.glob(prefix + pattern)):
            if path not in seen:
                seen.add(path)
                found.append((path, what, secret))
    return found


def remove_sealed(paths: Paths, dry_run: bool, say: Say) -> int:
    """Remove (``dry_run``: list) what :attr:`Paths.SEALED` names, saying each; the
    number of paths. A path that cannot be removed stops it (:class:`SealError`)."""
    found = sealed_files(paths)
    for path, what, secret in found:
        try:
            check_inside_root(paths.root, path, action="remove")
        except OutsideRootError as err:
            raise SealError(str(err)) from None
        if dry_run:
            say("would remove %s (%s)" % (path, what))
            continue
        try:
            info = os.lstat(path)
            if stat.S_ISDIR(info.st_mode):
                shutil.rmtree(path)
            elif secret and stat.S_ISREG(info.st_mode):
                wipe_file(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            continue
        except OSError as err:
            raise SealError("cannot remove %s (%s): %s" % (path, what,
                                                          err.strerror or err)) from None
        say("removed %s (%s)" % (path, what))
    if not found:
        say("no state of ovmd or of the runner to remove")
    return len(found)


def arm_first_boot(paths: Paths, dry_run: bool, say: Say) -> None:
    """INITIAL_CONFIG=yes, for the clones' first boot."""
    if dry_run:
        files = [path for path in sysconfig_files(paths) if read_text(path) is not None]
        say("would set INITIAL_CONFIG=yes in %s" % ", ".join(files or [paths.sysconfig_ovmd]))
        return
    try:
        files = set_initial_config(paths, True)
    except OSError as err:
        raise SealError("cannot set INITIAL_CONFIG=yes: %s" % err) from None
    say("INITIAL_CONFIG=yes in %s" % ", ".join(files))


def finish(paths: Paths, dry_run: bool, say: Say) -> None:
    """After the cleanup target: remove ovmd's and the runner's state, arm first boot."""
    remove_sealed(paths, dry_run, say)
    arm_first_boot(paths, dry_run, say)


def nothing_linked(paths: Paths) -> str:
    return "no module is linked for %s (%s): nothing to run" % (CLEANUP,
                                                                paths.target_dir(CLEANUP))


def stopped_message(code: int) -> str:
    return ("ovmd: sealing stopped: the cleanup target failed (exit %d); nothing was "
            "removed and INITIAL_CONFIG is unchanged: correct what it says and run "
            "ovmd --seal again" % code)


# --- the command ------------------------------------------------------------------------

def seal(paths: Paths, dry_run: bool) -> int:
    """``ovmd --seal [--dry-run]``: through the daemon serving the root if one answers,
    else here (:func:`seal_here`); the exit status."""
    import logging

    handler = logging.StreamHandler(sys.stderr)  # what the cache says, as one line each
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("ovmd: %(message)s"))
    logging.getLogger().addHandler(handler)
    client = ControlClient(paths.control_socket)
    params: Optional[Dict[str, str]] = None
    try:
        if dry_run:
            params = dict(client.list_params())
        else:
            code, out, err = client.call("seal")
            _write(sys.stdout, out)
            _write(sys.stderr, err)
            return code
    except ControlError as error:
        if error.code != EXIT_NOT_RUNNING:
            print(error, file=sys.stderr)
            return error.code
    if not dry_run:
        holder = daemon_pid(paths)
        if holder is not None:
            print("ovmd: the daemon (pid %s) runs but does not answer on %s: stop it "
                  "(systemctl stop ovmd) and run ovmd --seal again"
                  % (holder, paths.control_socket), file=sys.stderr)
            return EXIT_FAILURE
    if params is None:
        params = cached_params(paths)
    return seal_here(paths, dry_run, params)


def _write(stream, data: bytes) -> None:
    if data:
        stream.flush()
        stream.buffer.write(data)
        stream.buffer.flush()


def daemon_pid(paths: Paths) -> Optional[str]:
    """The pid in the daemon's pid file if a daemon holds its lock, else None."""
    import fcntl

    try:
        fd = os.open(paths.pid_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return os.read(fd, 32).decode("ascii", "replace").strip() or "?"
    finally:
        os.close(fd)
    return None


def cached_params(paths: Paths) -> Dict[str, str]:
    """The params the root's cache holds (what ``ovmd -s cleanup`` would give), read
    without changing a file: sealing removes them, a dry run leaves them as they are."""
    from .cachefiles import read_only

    return read_only(paths)


def seal_here(paths: Paths, dry_run: bool, params: Dict[str, str]) -> int:
    """Seal the root without a daemon: cleanup, then :func:`finish`; the exit status."""
    def say(line: str) -> None:
        print(line, flush=True)

    code = run_cleanup(paths, dry_run, params, say)
    if code != EXIT_OK:
        print(stopped_message(code), file=sys.stderr)
        return code
    try:
        finish(paths, dry_run, say)
    except SealError as err:
        print("ovmd: %s" % err, file=sys.stderr)
        return EXIT_FAILURE
    if dry_run:
        say("dry run: nothing was changed")
    elif paths.root == "/":
        say("sealed: shut the guest down now (shutdown -h now); its next boot is a first "
            "boot")
    else:
        say("sealed the guest tree in %s: unmount it now" % paths.root)
    return EXIT_OK


def run_cleanup(paths: Paths, dry_run: bool, params: Dict[str, str], say: Say) -> int:
    """``ovm-template-config --root ROOT --stdin [--dry-run] cleanup`` with ``params``,
    its output shown as it comes; its exit status (0 when nothing is linked)."""
    from .daemon.targetrun import runner_command

    if not paths.linked_modules(CLEANUP):
        say(nothing_linked(paths))
        return EXIT_OK
    argv = [runner_command(), "--root", paths.root, "--stdin"]
    argv += ["--dry-run", CLEANUP] if dry_run else [CLEANUP]
    env = dict(os.environ)
    env[ROOT_ENV] = paths.root
    scratch = None
    if paths.root != "/" and not dry_run:
        # the runner's temporary files (its actions journals) stay inside the root too
        scratch = os.path.join(paths.run_dir, ".seal-%d" % os.getpid())
        ensure_private_dir(scratch, paths.root)
        env["TMPDIR"] = scratch
    try:
        sys.stdout.flush()
        return subprocess.run(argv, input=json.dumps(params), text=True, env=env).returncode
    except OSError as err:
        print("ovmd: cannot run %s: %s" % (argv[0], err.strerror or err), file=sys.stderr)
        return EXIT_FAILURE
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
