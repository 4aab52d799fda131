"""Helpers for template-configuration modules: commands, files, config files, services.

Oracle's API (``run_cmd``, ``shell_cmd``) is kept as it was, so third-party modules run
unchanged. Everything else exists so that our own modules never touch the system
directly: every path goes through the configured root, every change is written
atomically and recorded, and in plan mode (``--dry-run``) nothing is changed at all.

The environment a module process gets from the runner:

``OVM_TEMPLATE_CONFIG_ROOT``
    the guest's root (``/`` by default); all guest paths are joined to it.
``OVM_TEMPLATE_CONFIG_DRY_RUN=1``
    plan mode: file writes and commands are recorded, not made.
``OVM_TEMPLATE_CONFIG_ACTIONS``
    a file to which each change is appended as one JSON object per line; the runner
    turns it into the dry-run plan and the run report (format in the README).

The three make up :class:`GuestFiles`, the process's view of the guest (:func:`guest`),
which also holds what plan mode "wrote" so far.

Commands that change the *running* system (``system_cmd``: reload a service, set the
clock, setenforce) run only when the root is ``/``; under another root they are recorded
as not applied, since a sandbox root has no running system to change. One that cannot
work on this kind of guest (no hardware clock, no SELinux, no service manager:
:mod:`templateconfig.environment`) is a warning, not a failure.

Warnings: a module reports one with :func:`warn` (a ``warning: TEXT`` line on stderr,
the format any module may print, docs/module-contract.md); the runner puts them in the
run report. The standard modules' ``log.warning`` records become such lines too
(:func:`log_warnings_to_stderr`).

Every file operation stays inside the root (:func:`confined`): a symbolic link on the way
that leads outside it is refused with :class:`TemplateConfigError` naming the path and
the link, before anything changes; a link at the file itself is read through only if it
stays inside the root, and a whole-file write (:func:`write_file`) replaces such a link
by a regular file (the module owns that file), whose mode never comes from the link.
"""
from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from ovmd import fsutil
from ovmd.paths import ROOT_ENV, join_root
from templateconfig.errors import TemplateConfigError
from templateconfig.run.contract import ACTIONS_ENV, DRY_RUN_ENV

log = logging.getLogger(__name__)


class CommandError(TemplateConfigError):
    """A command failed. Carries argv, the return code and stderr (never stdin)."""

    shows_traceback = True  # where the module ran it

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        #: the tool's own reason: the last line of its stderr that is not a hint such as
        #: "Use the --verbose option to see the details"
        self.detail = _reason_line(stderr)
        super().__init__("command %s failed with exit code %s: %s" % (
            " ".join(shlex.quote(a) for a in self.argv), returncode, self.detail))


_HINT = re.compile(r"\b(use|try|see)\b.*(--[a-z]|for more|details)", re.IGNORECASE)


def _reason_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    reasons = [line for line in lines if not _HINT.search(line)] or lines
    return reasons[-1] if reasons else "no error output"


# --- the environment: the guest as this process sees it --------------------------------

class GuestFiles:
    """The guest as one module process sees it: the root every path is joined to,
    whether this is plan mode, the journal changes are appended to, and, in plan mode,
    what the process "wrote" so far (``planned``: guest path -> content, None for
    removed), so that later reads see the planned content.

    :func:`guest` makes it from the environment the runner gives a module process;
    a test gets a fresh one with :func:`new_guest` after setting the environment.
    """

    def __init__(self, root: str = "/", dry_run: bool = False,
                 journal: Optional[str] = None) -> None:
        self.root = root or "/"
        self.dry_run = dry_run
        self.journal = journal or None
        self.planned: Dict[str, Optional[bytes]] = {}
        #: the environment values this view was made from (see :func:`guest`)
        self.source: Optional[Tuple[str, str, str]] = None

    @classmethod
    def from_environ(cls) -> GuestFiles:
        source = _environ_source()
        view = cls(source[0], source[1] not in ("", "0"), source[2])
        view.source = source
        return view

    def plan_only(self) -> None:
        """Plan mode from now on: record what would change, change nothing. A module
        whose tools need root, run without root, decides this itself (see
        :meth:`templateconfig.modules.support.spec.ModuleSpec.run`)."""
        self.dry_run = True

    def __repr__(self) -> str:
        return "GuestFiles(root=%r, dry_run=%r, journal=%r)" % (self.root, self.dry_run,
                                                               self.journal)


def _environ_source() -> Tuple[str, str, str]:
    environ = os.environ
    return (environ.get(ROOT_ENV, ""), environ.get(DRY_RUN_ENV, ""),
            environ.get(ACTIONS_ENV, ""))


_guest: Optional[GuestFiles] = None


def guest() -> GuestFiles:
    """This process's view of the guest, made from its environment on first use
    (``OVM_TEMPLATE_CONFIG_ROOT``, ``_DRY_RUN``, ``_ACTIONS``), and made afresh when
    those change (a forked module process gets its environment after the runner's
    imports)."""
    global _guest
    if _guest is None or _guest.source != _environ_source():
        _guest = GuestFiles.from_environ()
    return _guest


def new_guest() -> GuestFiles:
    """A fresh view of the guest from the current environment (nothing planned yet),
    made this process's view."""
    global _guest
    _guest = GuestFiles.from_environ()
    return _guest


@contextlib.contextmanager
def viewing(root: str) -> Iterator[GuestFiles]:
    """Within the block this process sees the guest under ``root`` in plan mode, with no
    journal: the runner checks the params against the guest (a time zone, an account, a
    device) before anything is changed, with the modules' own code, and nothing it calls
    can change the guest. The view the process had is restored afterwards."""
    global _guest
    saved = _guest
    view = GuestFiles(root, dry_run=True)
    view.source = _environ_source()
    _guest = view
    try:
        yield view
    finally:
        _guest = saved


def root() -> str:
    """The guest root every path is joined to (``/`` unless ``--root`` was given)."""
    return guest().root


def is_sandbox() -> bool:
    """True when working on a root other than ``/`` (no running system to change)."""
    return os.path.abspath(root()) != "/"


def dry_run() -> bool:
    """True in plan mode: record what would change, change nothing."""
    return guest().dry_run


def root_path(path: str) -> str:
    """The real location of the guest path ``path`` (``/etc/hosts`` -> ROOT/etc/hosts)."""
    return join_root(root(), path)


def confined(path: str, follow_leaf: bool, action: str) -> str:
    """:func:`root_path` of ``path``, checked to stay inside the root: every directory on
    the way, and the file itself if ``follow_leaf``, must not be a symbolic link leading
    outside (:func:`ovmd.fsutil.check_inside_root`); else ``TemplateConfigError``."""
    real = root_path(path)
    try:
        fsutil.check_inside_root(root(), real, follow_leaf=follow_leaf, action=action)
    except fsutil.OutsideRootError as err:
        raise TemplateConfigError(str(err)) from None
    return real


def _leaf_leads_outside(real: str) -> bool:
    """True if ``real`` is a symbolic link whose target is not inside the root."""
    if not os.path.islink(real) or not is_sandbox():
        return False
    return not fsutil.is_within(os.path.realpath(real), os.path.realpath(root()))


# --- the journal of changes -------------------------------------------------------------

def _encode(data: Optional[bytes]) -> Tuple[Optional[str], str]:
    if data is None:
        return None, "utf-8"
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def record(op: str, **fields) -> None:
    """Append one change to the journal named by ``OVM_TEMPLATE_CONFIG_ACTIONS``."""
    journal = guest().journal
    if not journal:
        return
    entry = {"op": op}
    entry.update(fields)
    line = json.dumps(entry, sort_keys=True) + "\n"
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def _record_file(op: str, path: str, old: Optional[bytes], new: Optional[bytes], mode,
                 secret: bool, applied: bool) -> None:
    old_text, old_enc = _encode(None if secret else old)
    new_text, new_enc = _encode(None if secret else new)
    record(op, path=path, mode=mode, old=old_text, new=new_text,
           encoding="base64" if "base64" in (old_enc, new_enc) else "utf-8",
           secret=secret, applied=applied)


# --- commands -----------------------------------------------------------------------------

def _run(argv: Sequence[str], success_return_code: Iterable[int], input: Optional[str],
         env: Optional[Mapping[str, str]]) -> str:
    try:
        proc = subprocess.run(
            list(argv), input=input if input is not None else "", capture_output=True,
            text=True, env=dict(env) if env is not None else None)
    except OSError as exc:
        raise CommandError(argv, 127, "%s: %s" % (argv[0], exc.strerror)) from None
    if proc.returncode not in tuple(success_return_code):
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc.stdout


def run_cmd(argv: Sequence[str], success_return_code: Iterable[int] = (0,),
            input: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> str:
    """Run a command and return its stdout; raise :class:`CommandError` on failure.

    Oracle's API. Secrets go through ``input`` (stdin), never into ``argv``. In plan mode
    the command is recorded and not run, and the result is ``""``; use
    :func:`query_cmd` for commands that only read.
    """
    if isinstance(argv, str):
        raise TypeError("run_cmd takes a list of arguments; use shell_cmd for a string")
    if dry_run():
        record("command", argv=list(argv), applied=False)
        return ""
    record("command", argv=list(argv), applied=True)
    return _run(argv, success_return_code, input, env)


def shell_cmd(command: str, success_return_code: Iterable[int] = (0,)) -> str:
    """Run a shell command line (Oracle's firewall module uses it); see :func:`run_cmd`."""
    return run_cmd(["/bin/sh", "-c", command], success_return_code)


def query_cmd(argv: Sequence[str], success_return_code: Iterable[int] = (0,),
              input: Optional[str] = None) -> str:
    """Run a command that only reads (``getent``, ``ssh -V``): runs in plan mode too."""
    return _run(argv, success_return_code, input, None)


def system_cmd(argv: Sequence[str], success_return_code: Iterable[int] = (0,),
               input: Optional[str] = None) -> str:
    """Run a command that changes the running system (reload, setenforce, hwclock).

    Runs only on the real root and not in plan mode; otherwise it is recorded as not
    applied, and ``""`` is returned. If it fails because it cannot work on this kind of
    guest (:func:`templateconfig.environment.environment_failure`: no hardware clock, no
    SELinux, no service manager), that is a warning (:func:`warn`) and ``""`` is
    returned; any other failure raises :class:`CommandError`.
    """
    if dry_run() or is_sandbox():
        record("command", argv=list(argv), applied=False)
        return ""
    record("command", argv=list(argv), applied=True)
    try:
        return _run(argv, success_return_code, input, None)
    except CommandError as exc:
        from templateconfig.environment import environment_failure

        reason = environment_failure(exc.argv, exc.returncode, exc.stderr)
        if reason is None:
            raise
        said = [line.strip() for line in exc.stderr.splitlines() if line.strip()]
        warn("%s: %s; ignored (%s)" % (" ".join(shlex.quote(a) for a in exc.argv), reason,
                                       said[0] if said else "no error output"))
        return ""


# --- warnings -------------------------------------------------------------------------------

#: The prefix of a warning line on a module's stderr (docs/module-contract.md).
WARNING_PREFIX = "warning: "


def one_line(text: str) -> str:
    """``text`` on one line (runs of white space, line breaks included, become a space)."""
    return " ".join(str(text).split())


def warn(message: str) -> None:
    """Report a warning of this module: a ``warning: MESSAGE`` line on stderr, which the
    runner records in the run report (the run still succeeds, "degraded")."""
    sys.stderr.write(WARNING_PREFIX + one_line(message) + "\n")
    sys.stderr.flush()


class _WarningLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return "%s: %s" % (record.levelname.lower(), one_line(super().format(record)))


def log_warnings_to_stderr() -> None:
    """Print this process's log records of level WARNING and above on stderr as
    ``warning: TEXT`` (``error: TEXT``) lines, one line each: a standard module's
    ``log.warning`` is then a warning in the run report. Called once by the standard
    modules' entry point."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(_WarningLines())
    logging.getLogger().addHandler(handler)


# --- files ------------------------------------------------------------------------------------

def read_bytes(path: str) -> Optional[bytes]:
    """Content of the guest file ``path`` (as planned, in plan mode), ``None`` if absent.

    A symbolic link leading outside the root (the file or a directory on the way) is
    refused with ``TemplateConfigError``: its content is not the guest's."""
    planned = guest().planned
    if path in planned:
        return planned[path]
    try:
        with open(confined(path, True, "read"), "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return None


def _current_bytes(path: str, real: str) -> Optional[bytes]:
    """What a write or a removal replaces: :func:`read_bytes`, but nothing for a link
    that leads outside the root (the link itself is what is replaced)."""
    if path not in guest().planned and _leaf_leads_outside(real):
        return None
    return read_bytes(path)


def read_file(path: str) -> Optional[str]:
    """Text of the guest file ``path``, or ``None`` if it does not exist."""
    data = read_bytes(path)
    return None if data is None else data.decode("utf-8", "surrogateescape")


def exists(path: str) -> bool:
    planned = guest().planned
    if path in planned:
        return planned[path] is not None
    return os.path.lexists(root_path(path))


def atomic_write(real_path: str, data: bytes, mode: Optional[int] = None,
                 uid: Optional[int] = None, gid: Optional[int] = None) -> None:
    """Write ``data`` to the real (already rooted) path ``real_path`` atomically and
    durably (:func:`ovmd.fsutil.atomic_write`): an existing file's mode, owner and
    SELinux context are kept unless ``mode``/``uid``/``gid`` say otherwise; a new file
    (or one replacing a symbolic link) gets ``mode`` (default 0644). Parent directories
    must exist, inside the root."""
    try:
        fsutil.atomic_write(real_path, data, mode, uid=uid, gid=gid, make_dirs=None,
                            root=root())
    except fsutil.OutsideRootError as err:
        raise TemplateConfigError(str(err)) from None


def ensure_dir(path: str, mode: int = 0o755, uid: Optional[int] = None,
               gid: Optional[int] = None) -> None:
    """Create the guest directory ``path`` (and parents) if missing."""
    if dry_run():
        if not exists(path):
            record("mkdir", path=path, mode=mode, applied=False)
        return
    real = confined(path, True, "create the directory")
    if os.path.isdir(real):
        return
    missing = []
    guest = path
    while guest not in ("/", "") and not os.path.isdir(root_path(guest)):
        missing.append(guest)
        guest = os.path.dirname(guest)
    for guest in reversed(missing):
        os.mkdir(root_path(guest), mode)
        os.chmod(root_path(guest), mode)
        if uid is not None or gid is not None:
            os.chown(root_path(guest), -1 if uid is None else uid, -1 if gid is None else gid)
        record("mkdir", path=guest, mode=mode, applied=True)


def write_file(path: str, content, mode: Optional[int] = None, uid: Optional[int] = None,
               gid: Optional[int] = None, secret: bool = False) -> bool:
    """Make the guest file ``path`` hold ``content`` (str or bytes); True if it changed.

    Idempotent: an identical file (content, and mode/owner when given) is left alone.
    Missing parent directories are created. ``secret=True`` keeps the content out of
    the journal (private keys, shadow entries).
    """
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    view = guest()
    real = confined(path, False, "write")
    old = _current_bytes(path, real)
    same_meta = True
    if old is not None and not view.dry_run and path not in view.planned:
        st = os.stat(real)
        same_meta = ((mode is None or (st.st_mode & 0o7777) == mode)
                     and (uid is None or st.st_uid == uid) and (gid is None or st.st_gid == gid))
    if old == data and same_meta:
        return False
    if view.dry_run:
        view.planned[path] = data
        _record_file("write", path, old, data, mode, secret, applied=False)
        return True
    ensure_dir(os.path.dirname(path) or "/")
    atomic_write(real, data, mode, uid, gid)
    _record_file("write", path, old, data, mode, secret, applied=True)
    return True


def remove_file(path: str, secret: bool = False) -> bool:
    """Remove the guest file ``path`` if it exists; True if it did. A symbolic link is
    removed itself, never followed."""
    real = confined(path, False, "remove")
    old = _current_bytes(path, real)
    if old is None and not os.path.islink(real):
        return False
    view = guest()
    if view.dry_run:
        view.planned[path] = None
        _record_file("remove", path, old, None, None, secret, applied=False)
        return True
    try:
        os.unlink(real)
    except FileNotFoundError:
        return False
    fsutil.fsync_dir(os.path.dirname(real))
    _record_file("remove", path, old, None, None, secret, applied=True)
    return True


def set_metadata(path: str, mode: Optional[int] = None, uid: Optional[int] = None,
                 gid: Optional[int] = None) -> bool:
    """Give the existing guest path ``path`` (file or directory) ``mode``/owner; True if changed.

    Symbolic links are not followed (a link is refused with ``TemplateConfigError``), so a
    link planted in a user's directory cannot redirect the change. Recorded as op
    ``metadata`` in the journal.
    """
    real = confined(path, False, "change the mode of")
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        if dry_run() and exists(path):
            record("metadata", path=path, mode=mode, uid=uid, gid=gid, applied=False)
            return True
        raise TemplateConfigError("cannot set the mode of %s: it does not exist" % path) from None
    if os.path.islink(real):
        raise TemplateConfigError("refusing to change %s: it is a symbolic link" % path)
    want_mode = mode if mode is not None else st.st_mode & 0o7777
    want_uid = uid if uid is not None else st.st_uid
    want_gid = gid if gid is not None else st.st_gid
    if ((st.st_mode & 0o7777) == want_mode and st.st_uid == want_uid and st.st_gid == want_gid):
        return False
    if dry_run():
        record("metadata", path=path, mode=mode, uid=uid, gid=gid, applied=False)
        return True
    if (st.st_uid, st.st_gid) != (want_uid, want_gid):
        os.lchown(real, want_uid, want_gid)
    os.chmod(real, want_mode)
    record("metadata", path=path, mode=mode, uid=uid, gid=gid, applied=True)
    return True


def symlink(path: str, target: str) -> bool:
    """Make the guest path ``path`` a symlink to ``target`` (kept as given)."""
    real = confined(path, False, "create the link")
    if os.path.islink(real) and os.readlink(real) == target:
        return False
    if dry_run():
        record("symlink", path=path, target=target, applied=False)
        return True
    ensure_dir(os.path.dirname(path) or "/")
    fsutil.atomic_symlink(target, real)
    record("symlink", path=path, target=target, applied=True)
    return True


# --- key=value (sysconfig) files -----------------------------------------------------------

_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.,:/@+%=-]*$")


def _unquote(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        inner = raw[1:-1]
        if raw[0] == "'":
            return inner
        return re.sub(r'\\([\\"$`])', r"\1", inner)
    return raw.split(" #", 1)[0].strip()


def quote_value(value: str) -> str:
    """A sysconfig value, quoted only when it needs to be."""
    if _SAFE_VALUE.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % escaped.replace("$", "\\$").replace("`", "\\`")


def parse_sysconfig(text: str) -> Dict[str, str]:
    """Variables of a sysconfig-style (shell ``KEY=value``) text; the last one wins."""
    values = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            values[match.group(1)] = _unquote(match.group(2))
    return values


def read_sysconfig(path: str) -> Dict[str, str]:
    """Variables of the guest sysconfig file ``path`` (empty if absent)."""
    text = read_file(path)
    return parse_sysconfig(text) if text is not None else {}


def edit_sysconfig_text(text: str, updates: Mapping[str, Optional[str]]) -> str:
    """``text`` with ``updates`` applied: set (value) or remove (``None``) variables.

    Comments, order and unrelated lines are kept; a variable set more than once keeps
    only its first assignment; new variables are appended.
    """
    lines = text.splitlines()
    seen = set()
    out: List[str] = []
    for line in lines:
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) in updates:
            name = match.group(1)
            value = updates[name]
            if name in seen or value is None:
                continue
            seen.add(name)
            out.append("%s=%s" % (name, quote_value(value)))
        else:
            out.append(line)
    for name, value in updates.items():
        if name not in seen and value is not None:
            out.append("%s=%s" % (name, quote_value(value)))
    return "\n".join(out) + "\n" if out else ""


def edit_sysconfig(path: str, updates: Mapping[str, Optional[str]],
                   mode: Optional[int] = None) -> bool:
    """Apply ``updates`` to the guest sysconfig file ``path``; True if it changed."""
    return write_file(path, edit_sysconfig_text(read_file(path) or "", updates), mode=mode)


# --- services ---------------------------------------------------------------------------------

class ServiceControl:
    """Enable, disable, start, stop and restart services, whatever the guest's init system.

    systemd guests use ``systemctl`` (``--root`` for enabling in a sandbox root, which
    needs no running systemd); SysV guests use ``chkconfig``/``service`` (EL5/6) or
    ``update-rc.d``/``invoke-rc.d`` (Debian). Persistent changes (enable/disable) are
    made on the root; runtime changes (start/restart/stop) go through
    :func:`system_cmd`, so they are recorded, not run, under a sandbox root.

    Runtime changes never wait for the service. On systemd they are queued with
    ``--no-block``: during a first boot the configuration runs before
    ``network-pre.target``, and a service ordered after it (chrony after
    ``network.target``, sshd after the first-boot wait unit) cannot start until the
    configuration is done, so a blocking ``systemctl restart`` would wait for itself. The
    queued job merges with the service's own boot job, which then starts it once, with
    the new configuration; on a running guest (a reconfigure) the service restarts at
    once. SysV has no job queue: ``service NAME ACTION`` runs the script there and then.
    """

    SYSTEMD, CHKCONFIG, UPDATE_RC = "systemd", "chkconfig", "update-rc.d"

    def __init__(self, kind: Optional[str] = None) -> None:
        self.kind = kind or self.detect()

    @classmethod
    def detect(cls) -> str:
        """The guest's init system; the platform decides (:mod:`templateconfig.platform`)."""
        from templateconfig.platform.base import detect_init_system
        return detect_init_system()

    def _persistent(self, argv: List[str]) -> None:
        # Persistent: made on the root itself. Under a sandbox root with a systemd guest,
        # systemctl --root works offline; the SysV tools have no root option, so record.
        if self.kind == self.SYSTEMD and is_sandbox():
            argv = [argv[0], "--root=%s" % root()] + argv[1:]
            if dry_run() or not _have(argv[0]):
                record("command", argv=argv, applied=False)
                return
            run_cmd(argv)
            return
        system_cmd(argv)

    def enable(self, name: str) -> None:
        if self.kind == self.SYSTEMD:
            self._persistent(["systemctl", "enable", name])
        elif self.kind == self.CHKCONFIG:
            self._persistent(["chkconfig", name, "on"])
        else:
            self._persistent(["update-rc.d", name, "enable"])

    def disable(self, name: str) -> None:
        if self.kind == self.SYSTEMD:
            self._persistent(["systemctl", "disable", name])
        elif self.kind == self.CHKCONFIG:
            self._persistent(["chkconfig", name, "off"])
        else:
            self._persistent(["update-rc.d", name, "disable"])

    #: Red Hat's SysV scripts name try-restart ``condrestart``.
    _CHKCONFIG_ACTIONS = {"try-restart": "condrestart"}

    def runtime_argv(self, action: str, name: str) -> List[str]:
        """The command for a runtime ``action`` (start, stop, restart, try-restart,
        reload) on service ``name``: one that queues it and returns (see the class)."""
        if self.kind == self.SYSTEMD:
            return ["systemctl", "--no-block", action, name]
        if self.kind == self.CHKCONFIG:
            return ["service", name, self._CHKCONFIG_ACTIONS.get(action, action)]
        return ["invoke-rc.d", name, action]

    def _runtime(self, action: str, name: str) -> None:
        system_cmd(self.runtime_argv(action, name))

    def start(self, name: str) -> None:
        self._runtime("start", name)

    def stop(self, name: str) -> None:
        self._runtime("stop", name)

    def restart(self, name: str) -> None:
        """Restart ``name`` (start it if it is stopped): its configuration changed."""
        self._runtime("restart", name)

    def try_restart(self, name: str) -> None:
        """Restart ``name`` only if it runs now: its configuration changed, and a service
        that is not running (or will start later in this boot) reads it when it starts."""
        self._runtime("try-restart", name)

    def reload(self, name: str) -> None:
        self._runtime("reload", name)

    def is_active(self, name: str) -> Optional[bool]:
        """Whether service ``name`` runs now on the running system; None under a sandbox
        root (no running system to ask). A service queued to start later in this boot
        is not active yet. SysV: Red Hat's scripts keep ``/var/lock/subsys/NAME`` while
        the service runs; Debian's answer ``invoke-rc.d NAME status`` (LSB)."""
        if is_sandbox():
            return None
        if self.kind == self.CHKCONFIG:
            return os.path.exists(root_path("/var/lock/subsys/" + name))
        try:
            if self.kind == self.SYSTEMD:
                out = query_cmd(["systemctl", "is-active", name], success_return_code=range(256))
                return out.strip() == "active"
            query_cmd(["invoke-rc.d", "--quiet", name, "status"])
        except CommandError:      # not running, or no such command: nothing runs it
            return False
        return True


def _have(command: str) -> bool:
    from shutil import which
    return which(command) is not None


def service_control() -> ServiceControl:
    """The :class:`ServiceControl` for the configured root."""
    return ServiceControl()


__all__ = [
    "TemplateConfigError", "CommandError", "GuestFiles", "guest", "new_guest", "root",
    "root_path", "confined", "is_sandbox", "dry_run",
    "record", "run_cmd", "shell_cmd", "query_cmd", "system_cmd", "warn", "one_line",
    "log_warnings_to_stderr", "viewing", "read_bytes", "read_file",
    "exists", "atomic_write", "ensure_dir", "write_file", "remove_file", "set_metadata",
    "symlink",
    "quote_value", "parse_sysconfig", "read_sysconfig", "edit_sysconfig_text",
    "edit_sysconfig", "ServiceControl", "service_control",
]
