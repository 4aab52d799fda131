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

The files of password hashes are never left more readable than the distribution has
them (:func:`protect_shadow_files`): the shadow tools keep the mode a file had, and give
their backups (``/etc/shadow-``) the same, so a template whose ``/etc/shadow`` was too
open would otherwise keep it so, now with hashes in it.

Passwords never go on a command line: ``chpasswd`` reads ``name:password`` on stdin, and a
value that already is a crypt hash (``$6$...``, ``$y$...``) is passed with ``-e``. A
password the shadow entry already holds is not set again (a fresh salt would rewrite
``/etc/shadow`` on every run): it is checked against the existing hash by the system's
libcrypt (through ctypes; Python's ``crypt`` module is gone from 3.13), which knows every
method the system's own tools write.
"""
from __future__ import annotations

import hmac
import logging
import os
import re
import stat
import tempfile
import time
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

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

#: The files of password hashes, and the backups the shadow tools keep of them.
SHADOW_FILES = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")


def protect_shadow_files() -> None:
    """Make the files of password hashes no more readable than the distribution's norm
    (the platform's ``shadow_mode`` and ``shadow_group``: EL 0000 root:root, Debian 0640
    root:shadow): owned by root and the norm's group, permissions only taken away (and
    the group's, if the guest lacks that group). Called by the modules that change
    accounts, once their changes are made."""
    platform = detect_generic()
    gid = group_gid(platform.shadow_group) if platform.shadow_group else 0
    for path in SHADOW_FILES:
        real = common.root_path(path)
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        mode = stat.S_IMODE(st.st_mode) & platform.shadow_mode
        if gid is None:  # the norm's group is missing: no group may read
            mode &= ~0o070
        want = (mode, 0, gid or 0)
        have = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if want != have:
            log.info("%s: mode %04o owner %d:%d is more open than this distribution's; "
                     "now %04o %d:%d", path, *(have + want))
            common.set_metadata(path, mode=want[0], uid=want[1], gid=want[2])


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


def shadow_hash(name: str) -> Optional[str]:
    """The password field of ``name``'s entry in the root's ``/etc/shadow`` (None if there
    is no such entry or no file)."""
    for fields in _rows("/etc/shadow", 2):
        if fields[0] == name:
            return fields[1]
    return None


_libcrypt: Any = None


def _crypt(phrase: bytes, setting: bytes) -> Optional[bytes]:
    """crypt(3) of the system's libcrypt (None if there is none, or it refuses the
    setting). The phrase goes to the library in memory, never to another process."""
    global _libcrypt
    if _libcrypt is None:
        import ctypes
        import ctypes.util

        _libcrypt = False
        for name in ("libcrypt.so.1", "libcrypt.so.2", ctypes.util.find_library("crypt")):
            if not name:
                continue
            try:
                library = ctypes.CDLL(name, use_errno=True)
            except OSError:
                continue
            library.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            library.crypt.restype = ctypes.c_char_p
            _libcrypt = library
            break
    if not _libcrypt:
        return None
    result = _libcrypt.crypt(phrase, setting)
    # libxcrypt answers a failure token ("*0", "*1") or NULL for a setting it rejects
    return result if result and not result.startswith(b"*") else None


def password_matches(name: str, password: str) -> bool:
    """True if ``name``'s shadow entry already holds ``password``: a crypt hash as given,
    a clear-text password as libcrypt hashes it with the entry's own method and salt.
    False whenever that cannot be told (no entry, a locked or empty field, no libcrypt)."""
    current = shadow_hash(name)
    if not current or not is_crypt_hash(current):
        return False
    if is_crypt_hash(password):
        return hmac.compare_digest(password.encode("utf-8"), current.encode("utf-8"))
    computed = _crypt(password.encode("utf-8"), current.encode("utf-8"))
    return computed is not None and hmac.compare_digest(computed, current.encode("utf-8"))


def set_password(name: str, password: str) -> None:
    """Set ``name``'s password (clear text or a crypt hash); never on a command line. A
    password the entry already holds is left alone (the file is not rewritten)."""
    if password_matches(name, password):
        log.info("the password of %s is already set; /etc/shadow left as it is", name)
        return
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
