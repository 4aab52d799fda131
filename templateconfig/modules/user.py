"""user: add, modify and delete the guest's users and groups (Oracle's ``user`` module).

A template carries no accounts for the people who will use its clones; the host sends
them here. Groups are added and modified before users (a user may name a new group) and
deleted after them (a group may be some user's primary group until that user goes). All
changes go through the guest's shadow tools (see :mod:`templateconfig.modules.support.accounts`
for how they reach a sandbox root) and are idempotent: adding an existing user brings
its uid and groups in line instead, deleting a missing one does nothing, a rename that
already happened is recognised. Passwords go to ``chpasswd`` on stdin; a crypt hash is
accepted too. Deleting a user keeps the home directory (its data is not ours to destroy).
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Set

from templateconfig import common
from templateconfig.modules.support import accounts, validators
from templateconfig.modules.support.spec import CheckContext, Key, ModuleSpec

log = logging.getLogger(__name__)

U = accounts.USER_KEYS
G = accounts.GROUP_KEYS
ACTIONS = ("add", "del", "mod")
MAX_ID = 2 ** 31 - 2


def _group_ref(value: str) -> None:
    if not value.isdigit():
        accounts.account_name(value)


def _group_list(value: str) -> None:
    if value.strip():
        validators.comma_list(accounts.account_name)(value)


SPEC = ModuleSpec(
    "user", {"configure": 60, "cleanup": 40},
    "Add, modify or delete users and groups.",
    keys=[
        Key(U + "name.{n}", "Name of user {n}.", validate=accounts.account_name),
        Key(U + "action.{n}", "What to do with user {n}: add, del or mod.", choices=ACTIONS),
        Key(U + "uid.{n}", "User ID of user {n}.", validate=validators.integer(0, MAX_ID)),
        Key(U + "group.{n}", "Primary group (name or GID) of user {n}.", validate=_group_ref),
        Key(U + "groups.{n}", "Supplementary groups of user {n} (comma-separated).",
            validate=_group_list),
        Key(U + "password.{n}", "Password of user {n} (or a crypt hash).", password=True,
            validate=accounts.password_value),
        Key(U + "new-name.{n}", "New name of user {n} (action mod).",
            validate=accounts.account_name),
        Key(G + "name.{n}", "Name of group {n}.", validate=accounts.account_name),
        Key(G + "action.{n}", "What to do with group {n}: add, del or mod.", choices=ACTIONS),
        Key(G + "gid.{n}", "Group ID of group {n}.", validate=validators.integer(0, MAX_ID)),
        Key(G + "new-name.{n}", "New name of group {n} (action mod).",
            validate=accounts.account_name),
    ],
    needs_root=True,
)


class Entry:
    """One indexed user or group request, read from the params."""

    def __init__(self, prefix: str, n: int, params: Dict[str, str]) -> None:
        self.prefix, self.n = prefix, n
        get = lambda field: params.get("%s%s.%d" % (prefix, field, n))  # noqa: E731
        self.name = get("name") or ""   # checked by _check before anything is applied
        self.action = get("action") or "add"
        self.id = get("uid") if prefix == U else get("gid")
        self.new_name = get("new-name")
        self.group = get("group")
        self.groups = get("groups")
        self.password = get("password")

    def key(self, field: str) -> str:
        return "%s%s.%d" % (self.prefix, field, self.n)


def _entries(prefix: str, params: Dict[str, str]) -> List[Entry]:
    fields = ("name", "action", "uid", "group", "groups", "password", "new-name") if prefix == U \
        else ("name", "action", "gid", "new-name")
    indices = SPEC.indices(params, *("%s%s.{n}" % (prefix, f) for f in fields))
    return [Entry(prefix, n, params) for n in indices]


@SPEC.check("configure")
def check_configure(params: Dict[str, str], context: CheckContext) -> List[str]:
    """The requests as a whole, against the guest's accounts: a name for every index, a
    new name only with action mod, groups that exist or are being added, and accounts
    to modify that exist (or were renamed already)."""
    user_entries, group_entries = _entries(U, params), _entries(G, params)
    problems = []
    for entry in user_entries + group_entries:
        if not entry.name:
            problems.append("%s: missing (other keys of index %d are set)"
                            % (entry.key("name"), entry.n))
        if entry.new_name and entry.action != "mod":
            problems.append("%s: a new name needs action mod, not %r"
                            % (entry.key("new-name"), entry.action))
    groups, users = set(accounts.groups()), set(accounts.users())
    added_users, added_groups = accounts.added(params)
    problems += _missing_accounts(group_entries, groups, "group", added_groups)
    problems += _missing_accounts(user_entries, users, "user", added_users)
    known = groups | added_groups
    for entry in user_entries:
        if entry.action == "del":
            continue
        if entry.group and not entry.group.isdigit() and entry.group not in known:
            problems.append("%s: value %r is not a group of the guest nor one being added"
                            % (entry.key("group"), entry.group))
        for name in validators.split_list(entry.groups or ""):
            if name not in known:
                problems.append("%s: group %r is not a group of the guest nor one being added"
                                % (entry.key("groups"), name))
    return problems


def _missing_accounts(entries: List[Entry], existing: Set[str], kind: str,
                      added: Set[str]) -> List[str]:
    """Action mod of an account that neither exists nor was renamed already, nor is
    being added."""
    problems = []
    for entry in entries:
        if entry.action == "mod" and entry.name and entry.name not in existing \
                and entry.new_name not in existing and entry.name not in added:
            problems.append("%s: value %r: no such %s on the guest to modify"
                            % (entry.key("name"), entry.name, kind))
    return problems


# --- groups -------------------------------------------------------------------------------------

def _apply_group(entry: Entry) -> None:
    current = accounts.groups()
    name = entry.name
    if entry.action == "del":
        if name in current:
            common.run_cmd(accounts.tool("groupdel", name))
        return
    if entry.action == "mod" and name not in current and entry.new_name in current:
        name = entry.new_name  # renamed by an earlier run
    args: List[str] = []
    if name not in current:
        if entry.action == "mod":
            raise accounts.AccountError("%s: group %s does not exist" % (entry.key("name"), name))
        common.run_cmd(accounts.tool("groupadd", *(["-g", entry.id] if entry.id else []), name))
        return
    if entry.id and int(entry.id) != current[name].gid:
        args += ["-g", entry.id]
    if entry.action == "mod" and entry.new_name and entry.new_name != name:
        args += ["-n", entry.new_name]
    if args:
        common.run_cmd(accounts.tool("groupmod", *(args + [name])))


# --- users --------------------------------------------------------------------------------------

def _apply_user(entry: Entry) -> None:
    current = accounts.users()
    name = entry.name
    if entry.action == "del":
        if name in current:
            common.run_cmd(accounts.tool("userdel", name))
        return
    if entry.action == "mod" and name not in current and entry.new_name in current:
        name = entry.new_name
    if name not in current:
        if entry.action == "mod":
            raise accounts.AccountError("%s: user %s does not exist" % (entry.key("name"), name))
        args = ["-m"] + accounts.skel_args()
        if entry.id:
            args += ["-u", entry.id]
        if entry.group:
            args += ["-g", entry.group]
        if entry.groups and entry.groups.strip():
            args += ["-G", ",".join(validators.split_list(entry.groups))]
        common.run_cmd(accounts.tool("useradd", *(args + [name])))
    else:
        _modify_user(entry, current[name])
        if entry.action == "mod" and entry.new_name:
            name = entry.new_name
    if entry.password is not None:
        if common.dry_run() and name not in accounts.users():
            log.info("plan: would set the password of %s once it exists", name)
            common.record("command", argv=accounts.tool("chpasswd"), applied=False)
        else:
            accounts.set_password(name, entry.password)


def _modify_user(entry: Entry, pw: accounts.Passwd) -> None:
    args: List[str] = []
    if entry.id and int(entry.id) != pw.uid:
        args += ["-u", entry.id]
    if entry.group:
        gid = accounts.group_gid(entry.group)
        if gid != pw.gid:
            args += ["-g", entry.group]
    if entry.groups is not None:
        wanted = sorted(set(validators.split_list(entry.groups)))
        if wanted != accounts.supplementary_groups(pw.name):
            args += ["-G", ",".join(wanted)]
    if entry.action == "mod" and entry.new_name and entry.new_name != pw.name:
        args += ["-l", entry.new_name]
        if pw.home == "/home/%s" % pw.name:  # the default home follows the name
            args += ["-d", "/home/%s" % entry.new_name, "-m"]
    if args:
        common.run_cmd(accounts.tool("usermod", *(args + [pw.name])))


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    user_entries = _entries(U, params)   # checked (check_configure) by SPEC.run
    group_entries = _entries(G, params)
    for entry in group_entries:
        if entry.action != "del":
            _apply_group(entry)
    for entry in user_entries:
        _apply_user(entry)
    for entry in group_entries:
        if entry.action == "del":
            _apply_group(entry)
    if user_entries or group_entries:
        accounts.protect_shadow_files()
    return None


@SPEC.target("cleanup")
def cleanup(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    """Sealing keeps the template's accounts: the accounts a host added are its business."""
    return None
