"""ssh: host keys and users' SSH files (Oracle's ``ssh`` module).

Clones of one template must not share SSH host keys (anyone holding one clone's key could
impersonate every other). ``configure`` installs the host keys the host supplied and
generates fresh ones for every other type the guest's ``sshd`` uses (its ``HostKey``
lines, including ``Include``d files, else the platform's defaults for its release); fresh
keys are made once per boot (see :func:`templateconfig.modules.support.state.generated_this_boot`),
so a retried configure keeps them, and a reconfiguration (``--changed-only``) keeps them
too, generating only a missing one; a running sshd is then restarted (``try-restart``,
without waiting for it). Generating them (an RSA key takes up to a second) needs no
params, so it is the module's *prepare* work: ``--prepare configure`` makes them in the
run's private staging directory (``OVM_TEMPLATE_CONFIG_STAGING``) while the runner still
waits for the params, and ``configure`` installs them, unless the host supplied keys of
that type; a key that was not staged is generated then. Per user N it writes ``authorized_keys``,
``known_hosts`` and a private key into ``~/.ssh`` with sshd's required owner and modes,
refusing any path that leaves the user's home (a symlinked ``~/.ssh``, ``..``).

Private keys are secrets: written with ``secret=True`` (kept out of the journal), never
logged or put on a command line, never echoed in a validation message. ``cleanup`` seals
a template: host keys and the root user's SSH files are removed.
"""
from __future__ import annotations

import base64
import glob
import logging
import os
import posixpath
import re
from typing import Dict, List, Optional, Tuple

from templateconfig import common
from templateconfig.modules.support import accounts
from templateconfig.modules.support.spec import CheckContext, Key, ModuleSpec
from templateconfig.modules.support.state import (
    forget_generated,
    identity_due,
    mark_generated,
)
from templateconfig.platform import detect
from templateconfig.run.contract import STAGING_ENV

log = logging.getLogger(__name__)

P = "com.oracle.linux.ssh."
SSH_DIR = "/etc/ssh"
#: Host key types: key name infix, file name.
HOST_KEY_FILES = {
    "rsa1": "ssh_host_key",
    "rsa": "ssh_host_rsa_key",
    "dsa": "ssh_host_dsa_key",
    "ecdsa": "ssh_host_ecdsa_key",
    "ed25519": "ssh_host_ed25519_key",
}
USER_KEY_TYPES = ("rsa", "dsa", "rsa1", "ecdsa", "ed25519")
IDENTITY_FILES = {"rsa1": "identity", "rsa": "id_rsa", "dsa": "id_dsa", "ecdsa": "id_ecdsa",
                  "ed25519": "id_ed25519"}
_PUBLIC = re.compile(r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-\S+)\s+"
                     r"[A-Za-z0-9+/]+={0,3}(\s.*)?\Z")
_PUBLIC_RSA1 = re.compile(r"^\d+\s+\d+\s+\d+(\s.*)?\Z")


def host_key_name(key_type: str) -> str:
    return P + ("host-key" if key_type == "rsa1" else "host-%s-key" % key_type)


def private_key(value: str) -> None:
    if "PRIVATE KEY" not in value and "SSH PRIVATE KEY FILE FORMAT" not in value:
        raise ValueError("not a private key (expected a '-----BEGIN ... PRIVATE KEY-----' block)")


def public_key(value: str) -> None:
    line = value.strip()
    if "\n" in line or not (_PUBLIC.match(line) or _PUBLIC_RSA1.match(line)):
        raise ValueError("not one OpenSSH public key line ('ssh-ed25519 AAAA... comment')")


def _no_nul(value: str) -> None:
    if "\0" in value:
        raise ValueError("contains a NUL character")


def _host_keys() -> List[Key]:
    keys = []
    labels = {"rsa1": "SSH protocol 1 RSA", "rsa": "RSA", "dsa": "DSA", "ecdsa": "ECDSA",
              "ed25519": "Ed25519"}
    for key_type, label in labels.items():
        keys.append(Key(host_key_name(key_type), "%s host private key." % label,
                        validate=private_key))
        keys.append(Key(host_key_name(key_type) + "-pub", "%s host public key." % label,
                        validate=public_key))
    return keys


SPEC = ModuleSpec(
    "ssh", {"configure": 70, "cleanup": 30},
    "Configure SSH host keys and users' authorized keys, known hosts and private keys.",
    keys=_host_keys() + [
        Key(P + "user.{n}", "User {n} whose SSH files are set (default root).",
            validate=accounts.account_name),
        Key(P + "authorized-keys.{n}", "authorized_keys content for user {n}.", validate=_no_nul),
        Key(P + "private-key.{n}", "Private key of user {n}.", validate=private_key),
        Key(P + "private-key-type.{n}", "Type of the private key of user {n}.",
            choices=USER_KEY_TYPES),
        Key(P + "known-hosts.{n}", "known_hosts content for user {n}.", validate=_no_nul),
    ],
    needs_root=True,
)

USER_FIELDS = ("user", "authorized-keys", "private-key", "private-key-type", "known-hosts")


# --- which host keys sshd uses -------------------------------------------------------------------

def _type_of_host_key(path: str) -> Optional[str]:
    base = posixpath.basename(path)
    if base == "ssh_host_key":
        return "rsa1"
    for key_type in ("ed25519", "ecdsa", "dsa", "rsa"):
        if key_type in base:
            return key_type
    return None


def _config_lines(path: str, depth: int = 0) -> List[str]:
    text = common.read_file(path) or ""
    lines = []
    for line in text.splitlines():
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0].lower() == "include" and len(words) == 2 and depth < 8:
            for pattern in words[1].split():
                if not pattern.startswith("/"):
                    pattern = SSH_DIR + "/" + pattern
                for found in sorted(glob.glob(common.root_path(pattern))):
                    guest = "/" + os.path.relpath(found, common.root_path("/"))
                    lines += _config_lines(guest, depth + 1)
            continue
        lines.append(line.strip())
    return lines


def used_host_keys() -> Dict[str, str]:
    """Type -> guest path of each host key the guest's sshd uses (rsa1 never)."""
    used: Dict[str, str] = {}
    for line in _config_lines(SSH_DIR + "/sshd_config"):
        words = line.split(None, 1)
        if words[0].lower() == "hostkey" and len(words) == 2:
            path = words[1].strip().strip('"')
            key_type = _type_of_host_key(path)
            if key_type is None:
                log.warning("sshd_config HostKey %s: unknown key type, left alone", path)
            elif key_type != "rsa1":
                used.setdefault(key_type, path)
    if not used:
        used = {t: "%s/%s" % (SSH_DIR, HOST_KEY_FILES[t])
                for t in detect().default_host_key_types()}
    return used


def _private_key_mode() -> Tuple[int, Optional[int]]:
    """(mode, gid) of host private keys: 0640 root:GROUP where the platform names a group
    that may read them and the guest has it (EL's ``ssh_keys``), else 0600 root:root."""
    group = detect().ssh_host_key_group
    gid = accounts.group_gid(group) if group else None
    if gid is not None:
        return 0o640, gid
    return 0o600, 0


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _remove_host_key(path: str) -> None:
    common.remove_file(path, secret=True)
    common.remove_file(path + ".pub")


def _generate_host_key(key_type: str, path: str, mode: int, gid: Optional[int]) -> None:
    _remove_host_key(path)
    common.ensure_dir(posixpath.dirname(path), 0o755)
    # The passphrase is empty, so nothing secret is on the command line; the comment is
    # empty so that the host's name does not end up in the guest's key.
    common.run_cmd(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "",
                    "-f", common.root_path(path)])
    if not common.dry_run():
        common.set_metadata(path, mode, 0, gid)
        common.set_metadata(path + ".pub", 0o644, 0, 0)


def _to_generate(used: Dict[str, str], fresh: bool, supplied: List[str]) -> Dict[str, str]:
    """Type -> guest path of the host keys configure makes: every type sshd uses that the
    host did not supply, on the first configure of a boot; later, only missing ones."""
    return {t: path for t, path in used.items()
            if t not in supplied and (fresh or not common.exists(path))}


def _staged(key_type: str) -> Optional[Tuple[bytes, bytes]]:
    """(private, public) key staged for ``key_type`` by ``--prepare configure``, or None."""
    staging = os.environ.get(STAGING_ENV)
    if not staging:
        return None
    path = os.path.join(staging, HOST_KEY_FILES[key_type])
    try:
        with open(path, "rb") as private, open(path + ".pub", "rb") as public:
            pair = private.read(), public.read()
    except OSError:
        return None
    return pair if pair[0] and pair[1] else None


def _install_host_key(pair: Tuple[bytes, bytes], path: str, mode: int,
                      gid: Optional[int]) -> None:
    common.write_file(path, pair[0], mode=mode, uid=0, gid=gid, secret=True)
    common.write_file(path + ".pub", pair[1], mode=0o644, uid=0, gid=0)


def prepare_host_keys() -> None:
    """Generate the host keys configure would make into the staging directory (nothing in
    the guest changes). Not every type may be there when configure runs: it generates
    what is missing."""
    staging = os.environ.get(STAGING_ENV)
    if not staging:
        return
    fresh = identity_due("ssh-host-keys")
    for key_type in sorted(_to_generate(used_host_keys(), fresh, [])):
        common.query_cmd(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "",
                          "-f", os.path.join(staging, HOST_KEY_FILES[key_type])])


def configure_host_keys(params: Dict[str, str]) -> bool:
    """Install the supplied host keys, and the staged or freshly generated others; True
    if any changed."""
    used = used_host_keys()
    mode, gid = _private_key_mode()
    fresh = identity_due("ssh-host-keys")
    supplied = [t for t in HOST_KEY_FILES if params.get(host_key_name(t))]
    changed = False
    for key_type in supplied:
        path = used.get(key_type, "%s/%s" % (SSH_DIR, HOST_KEY_FILES[key_type]))
        changed |= common.write_file(path, _with_newline(params[host_key_name(key_type)]),
                                     mode=mode, uid=0, gid=gid, secret=True)
        changed |= common.write_file(path + ".pub",
                                     _with_newline(params[host_key_name(key_type) + "-pub"]),
                                     mode=0o644, uid=0, gid=0)
    for key_type, path in sorted(_to_generate(used, fresh, supplied).items()):
        staged = None if common.dry_run() else _staged(key_type)
        if staged is not None:
            _install_host_key(staged, path, mode, gid)
        else:
            _generate_host_key(key_type, path, mode, gid)
        changed = True
    if fresh:
        # The template's keys of types sshd does not use would still be shared: drop them.
        for key_type, name in HOST_KEY_FILES.items():
            if key_type not in used and key_type not in supplied:
                _remove_host_key("%s/%s" % (SSH_DIR, name))
        mark_generated("ssh-host-keys")
    return changed


# --- users' files -----------------------------------------------------------------------

def resolve_in_root(path: str) -> str:
    """``path`` with every symlink resolved *inside the root* (absolute links stay in it)."""
    parts = [p for p in path.split("/") if p]
    resolved = "/"
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = posixpath.dirname(resolved) or "/"
            continue
        candidate = posixpath.join(resolved, part)
        real = common.root_path(candidate)
        if os.path.islink(real):
            hops += 1
            if hops > 40:
                raise common.TemplateConfigError("too many symbolic links in %s" % path)
            target = os.readlink(real)
            if target.startswith("/"):
                resolved = "/"
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved = candidate
    return resolved


class UnsafePath(common.TemplateConfigError):
    """A user's SSH path would leave the user's home."""


def user_ssh_dir(pw: accounts.Passwd) -> str:
    """The resolved guest path of ``pw``'s ``~/.ssh``, checked to stay inside the home."""
    home = pw.home
    if not home.startswith("/") or posixpath.normpath(home) != home.rstrip("/") or \
            ".." in home.split("/"):
        raise UnsafePath("user %s: home directory %r is not a plain absolute path"
                         % (pw.name, home))
    real_home = resolve_in_root(home)
    ssh_dir = resolve_in_root(home.rstrip("/") + "/.ssh")
    inside = real_home.rstrip("/") + "/"
    if not ssh_dir.startswith(inside) or ssh_dir == real_home:
        raise UnsafePath("user %s: %s/.ssh leads to %s, outside the home directory %s; "
                         "refusing to write there" % (pw.name, home, ssh_dir, real_home))
    real = common.root_path(ssh_dir)
    if os.path.lexists(real) and not os.path.isdir(real):
        raise UnsafePath("user %s: %s exists and is not a directory" % (pw.name, ssh_dir))
    return ssh_dir


def _user_file(ssh_dir: str, name: str, user_name: str) -> str:
    path = ssh_dir + "/" + name
    if os.path.islink(common.root_path(path)):
        raise UnsafePath("user %s: %s is a symbolic link; refusing to write through it"
                         % (user_name, path))
    return path


def key_type_of(private: str) -> str:
    """The type of a private key, read from its PEM header or OpenSSH key blob."""
    if "SSH PRIVATE KEY FILE FORMAT" in private:
        return "rsa1"
    for marker, key_type in (("BEGIN RSA", "rsa"), ("BEGIN DSA", "dsa"), ("BEGIN EC", "ecdsa")):
        if marker in private:
            return key_type
    body = "".join(line for line in private.splitlines() if line and not line.startswith("-----"))
    try:
        blob = base64.b64decode(body + "=" * (-len(body) % 4))
    except ValueError:
        blob = b""
    for blob_marker, key_type in ((b"ssh-ed25519", "ed25519"), (b"ecdsa-sha2", "ecdsa"),
                                  (b"ssh-dss", "dsa"), (b"ssh-rsa", "rsa")):
        if blob_marker in blob[:200]:
            return key_type
    return "rsa"


def plan_user(params: Dict[str, str], n: int) -> Optional[Tuple[accounts.Passwd, str, list]]:
    """(user, resolved ~/.ssh, [(path, content, mode, secret)]) for user index N, checked.

    Raises before anything is changed when the user is missing or a path is unsafe.
    """
    def get(field: str) -> Optional[str]:
        return params.get("%s%s.%d" % (P, field, n))

    name = get("user") or "root"
    pw = accounts.user(name)
    if pw is None:
        if common.dry_run():
            log.warning("plan: user %s does not exist (yet); its SSH files are not planned", name)
            return None
        raise accounts.AccountError("%suser.%d: user %s does not exist in %s/etc/passwd"
                                    % (P, n, name, common.root().rstrip("/")))
    ssh_dir = user_ssh_dir(pw)
    files = []
    authorized, private, known = get("authorized-keys"), get("private-key"), get("known-hosts")
    if authorized is not None:
        files.append(("authorized_keys", _with_newline(authorized), 0o600, False))
    if private:
        key_type = get("private-key-type") or key_type_of(private)
        files.append((IDENTITY_FILES[key_type], _with_newline(private), 0o600, True))
    if known is not None:
        files.append(("known_hosts", _with_newline(known), 0o644, False))
    return pw, ssh_dir, [(_user_file(ssh_dir, f, name), c, m, s) for f, c, m, s in files]


def configure_user(pw: accounts.Passwd, ssh_dir: str, files: list) -> None:
    if not files:
        return
    common.ensure_dir(ssh_dir, 0o700, pw.uid, pw.gid)
    if not common.dry_run():
        common.set_metadata(ssh_dir, 0o700, pw.uid, pw.gid)
    for path, content, mode, secret in files:
        common.write_file(path, content, mode=mode, uid=pw.uid, gid=pw.gid, secret=secret)


def _user_indices(params: Dict[str, str]) -> List[int]:
    return SPEC.indices(params, *("%s%s.{n}" % (P, f) for f in USER_FIELDS))


@SPEC.check("configure")
def check_configure(params: Dict[str, str], context: CheckContext) -> List[str]:
    """Host keys come in pairs; a key type needs its key; every user whose files are
    set exists (or the user module adds it in the same run) and has a ``~/.ssh`` that
    stays inside the home."""
    problems = []
    for key_type in HOST_KEY_FILES:
        private, public = host_key_name(key_type), host_key_name(key_type) + "-pub"
        if params.get(private) and not params.get(public):
            problems.append("%s: missing: %s needs its public key" % (public, private))
        if params.get(public) and not params.get(private):
            problems.append("%s: missing: %s alone cannot be installed" % (private, public))
    added = accounts.added(params)[0] if context.runs("user") else set()
    for n in _user_indices(params):
        if params.get("%sprivate-key-type.%d" % (P, n)) \
                and not params.get("%sprivate-key.%d" % (P, n)):
            problems.append("%sprivate-key-type.%d: set, but %sprivate-key.%d is missing"
                            % (P, n, P, n))
        name = params.get("%suser.%d" % (P, n)) or "root"
        pw = accounts.user(name)
        if pw is None:
            if name not in added:
                problems.append("%suser.%d: value %r: no such user on the guest, nor one "
                                "the user module adds" % (P, n, name))
            continue
        try:
            plan_user(params, n)
        except common.TemplateConfigError as exc:
            problems.append("%suser.%d: %s" % (P, n, exc))
    return problems


@SPEC.prepare("configure")
def prepare() -> None:
    prepare_host_keys()


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    plans = [plan_user(params, n) for n in _user_indices(params)]  # (checked by SPEC.run)
    if configure_host_keys(params):
        # A running sshd keeps what it loaded when it started: restart it (queued, not
        # waited for). One that has not started yet in this boot (it is ordered after
        # the first-boot configuration) starts with the new keys anyway.
        platform = detect()
        platform.service_control().try_restart(platform.ssh_service)
    for plan in plans:
        if plan is not None:
            configure_user(*plan)
    return None


@SPEC.target("cleanup")
def cleanup(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    paths = set("%s/%s" % (SSH_DIR, name) for name in HOST_KEY_FILES.values())
    paths.update(used_host_keys().values())
    for path in sorted(paths):
        _remove_host_key(path)
    forget_generated("ssh-host-keys")
    root_user = accounts.user("root")
    if root_user is not None:
        ssh_dir = user_ssh_dir(root_user)
        real = common.root_path(ssh_dir)
        if os.path.isdir(real):
            for name in sorted(os.listdir(real)):
                entry = os.path.join(real, name)
                if not os.path.isdir(entry) or os.path.islink(entry):
                    common.remove_file(ssh_dir + "/" + name, secret=True)
    return None
