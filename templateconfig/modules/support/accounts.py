"""The guest's account database, read from the root's files and changed with its shadow tools.

Shared by the user, authentication and ssh modules. Reading is plain parsing of the root's
``/etc/passwd``, ``/etc/group`` (never NSS: on a sandbox root NSS would answer for the host).
Changing goes through the shadow tools (``useradd``, ``usermod``, ``userdel``, ``groupadd``,
``groupmod``, ``groupdel``, ``chpasswd``), run by :func:`templateconfig.common.run_cmd`, so
every change is journaled and nothing runs in plan mode. How the tools reach the root:

``host``    the root is ``/``: the tools run as they are, with the guest's PAM and policy.
``chroot``  a sandbox root that holds its own shadow tools (a real guest image): the host's
            tool is given ``--root ROOT`` and chroots into it, so the guest's own tools,
            ``login.defs`` and PAM stack do the work (needs root privileges).
``prefix``  a bare tree (only ``/etc`` files, like the test fixtures): ``--prefix ROOT``
            (shadow >= 4.9) makes the host's tools use ROOT's ``/etc`` files and
            ``login.defs``. ``chpasswd`` has no ``--prefix``: the password is hashed with
            SHA-512 by ``openssl passwd -6 -stdin`` (password on stdin) and the shadow
            entry is written by :func:`templateconfig.common.write_file` with
            ``secret=True``. Home directories get ROOT's ``/etc/skel`` (or none), never the
            host's.

Passwords never go on a command line: ``chpasswd`` reads ``name:password`` on stdin, and a
value that already is a crypt hash (``$6$...``, ``$y$...``) is passed with ``-e``.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from typing import Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from templateconfig import common
from templateconfig.platform import detect_generic

log = logging.getLogger(__name__)

HOST, CHROOT, PREFIX = "host", "chroot", "prefix"
#: The prefixes of the user module's keys (``user.name.N``, ``group.action.N``, ...).
USER_KEYS = "com.oracle.linux.user."
GROUP_KEYS = "com.oracle.linux.group."

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")
#: A crypt(3) hash as chpasswd -e accepts it: MD5, SHA-256/512, yescrypt, gost-yescrypt, bcrypt.
_CRYPT_HASH = re.compile(r"^\$(1|5|6|y|gy|7|2[abxy])\$[./A-Za-z0-9$=,]+\Z")


class AccountError(common.TemplateConfigError):
    """A user or group is missing or cannot be changed."""


class Passwd(NamedTuple):
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str


class Group(NamedTuple):
    name: str
    gid: int
    members: List[str]


# --- validation helpers -----------------------------------------------------------------------

def account_name(value: str) -> None:
    """A user or group name the shadow tools accept everywhere (validator)."""
    if not _NAME.match(value) or value.isdigit():
        raise ValueError("expected a name of letters, digits, '_', '.', '-' (at most 32, "
                         "starting with a letter or '_', not all digits)")


def password_value(value: str) -> None:
    """A password (or crypt hash) chpasswd can take on one stdin line (validator)."""
    if not value:
        raise ValueError("the password is empty")
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("the password contains a line break or NUL character")


def is_crypt_hash(value: str) -> bool:
    """True when ``value`` is already a crypt hash (passed to ``chpasswd -e``)."""
    return _CRYPT_HASH.match(value) is not None


# --- reading ---------------------------------------------------------------------------------

def _rows(path: str, fields: int) -> List[List[str]]:
    rows = []
    for line in (common.read_file(path) or "").splitlines():
        if not line.strip() or line.startswith(("#", "+", "-")):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            rows.append(parts)
    return rows


def users() -> Dict[str, Passwd]:
    """The root's ``/etc/passwd`` by name."""
    out = {}
    for p in _rows("/etc/passwd", 7):
        try:
            out[p[0]] = Passwd(p[0], int(p[2]), int(p[3]), p[4], p[5], p[6])
        except ValueError:
            log.warning("ignoring malformed /etc/passwd entry for %s", p[0])
    return out


def groups() -> Dict[str, Group]:
    """The root's ``/etc/group`` by name."""
    out = {}
    for g in _rows("/etc/group", 4):
        try:
            out[g[0]] = Group(g[0], int(g[2]), [m for m in g[3].split(",") if m])
        except ValueError:
            log.warning("ignoring malformed /etc/group entry for %s", g[0])
    return out


def user(name: str) -> Optional[Passwd]:
    return users().get(name)


def group_gid(name_or_gid: str) -> Optional[int]:
    """The gid of a group given by name or number (None if there is no such group)."""
    if name_or_gid.isdigit():
        return int(name_or_gid)
    found = groups().get(name_or_gid)
    return found.gid if found else None


def supplementary_groups(name: str) -> List[str]:
    """Names of the groups that list ``name`` as a member."""
    return sorted(g.name for g in groups().values() if name in g.members)


def added(params: Mapping[str, str]) -> Tuple[Set[str], Set[str]]:
    """(users, groups) the user module's params create: the names of entries with
    action ``add`` (the default) and the new names of ``mod`` entries. Other modules'
    checks count them as existing when the user module runs before them."""
    found: Tuple[Set[str], Set[str]] = (set(), set())
    for index, prefix in enumerate((USER_KEYS, GROUP_KEYS)):
        for key, name in params.items():
            if not key.startswith(prefix + "name.") or not name:
                continue
            n = key[len(prefix + "name."):]
            action = params.get("%saction.%s" % (prefix, n)) or "add"
            if action == "add":
                found[index].add(name)
            new_name = params.get("%snew-name.%s" % (prefix, n))
            if action == "mod" and new_name:
                found[index].add(new_name)
    return found


# --- changing ---------------------------------------------------------------------------------

def tool_mode() -> str:
    """How the shadow tools reach the root: ``host``, ``chroot`` or ``prefix`` (see above)."""
    if not common.is_sandbox():
        return HOST
    if os.geteuid() == 0 and detect_generic().find_command("useradd", ("/usr/sbin", "/sbin")):
        return CHROOT
    return PREFIX


def tool(name: str, *args: str) -> List[str]:
    """The argv that runs shadow tool ``name`` with ``args`` against the root."""
    mode = tool_mode()
    if mode == CHROOT:
        return [name, "--root", os.path.abspath(common.root())] + list(args)
    if mode == PREFIX:
        return [name, "--prefix", os.path.abspath(common.root())] + list(args)
    return [name] + list(args)


def skel_args() -> List[str]:
    """``useradd -k`` for prefix mode: the root's skeleton, never the host's."""
    if tool_mode() != PREFIX:
        return []
    skel = common.root_path("/etc/skel")
    if os.path.isdir(skel):
        return ["-k", skel]
    return ["-k", os.path.join(tempfile.gettempdir(), ".ovmd-no-skel-%d" % os.getpid())]


def set_password(name: str, password: str) -> None:
    """Set ``name``'s password (clear text or a crypt hash); never on a command line."""
    hashed = is_crypt_hash(password)
    if tool_mode() != PREFIX:
        argv = tool("chpasswd", *(["-e"] if hashed else []))
        common.run_cmd(argv, input="%s:%s\n" % (name, password))
        return
    # prefix mode: chpasswd cannot work on a bare tree; hash (stdin) and edit shadow.
    if common.dry_run():
        common.record("command", argv=["openssl", "passwd", "-6", "-stdin"], applied=False)
        crypt_hash = "*"
    elif hashed:
        crypt_hash = password
    else:
        crypt_hash = common.query_cmd(["openssl", "passwd", "-6", "-stdin"],
                                      input=password + "\n").strip()
        if not is_crypt_hash(crypt_hash):
            raise AccountError("openssl passwd did not return a SHA-512 crypt hash")
    _write_shadow_hash(name, crypt_hash)


def _write_shadow_hash(name: str, crypt_hash: str) -> None:
    text = common.read_file("/etc/shadow")
    if text is None:
        raise AccountError("%s has no /etc/shadow" % common.root())
    today = str(int(time.time() // 86400))
    lines, found = [], False
    for line in text.splitlines():
        fields = line.split(":")
        if fields[0] == name and len(fields) >= 2:
            fields[1] = crypt_hash
            if len(fields) >= 3:
                fields[2] = today
            line = ":".join(fields)
            found = True
        lines.append(line)
    if not found:
        raise AccountError("user %s has no entry in /etc/shadow" % name)
    common.write_file("/etc/shadow", "\n".join(lines) + "\n", secret=True)
