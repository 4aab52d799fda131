"""user: users and groups via the real shadow tools (``--prefix``) on fixture roots."""
from __future__ import annotations

import json

import pytest
from identity_helpers import (
    DISTROS,
    SCRIPTS,
    entry,
    fixture_root,
    owner_and_mode,
    run_module,
    shadow_norm,
    tree,
    verify_password,
)

from templateconfig.modules.user import SPEC

U, G = "com.oracle.linux.user.", "com.oracle.linux.group."

ADD = {
    G + "name.0": "devs", G + "gid.0": "2000",
    G + "name.1": "ops", G + "action.1": "add",
    U + "name.0": "alice", U + "uid.0": "2001", U + "group.0": "devs",
    U + "groups.0": "users,ops", U + "password.0": "Al1ce pass:word",
    U + "name.1": "bob", U + "action.1": "add",
}


def test_header_matches_spec():
    assert SPEC.header() in (SCRIPTS / "user").read_text()
    assert (SCRIPTS / "user").stat().st_mode & 0o777 == 0o755


def test_enumerate_exact(tmp_path):
    out = run_module("user", "configure", None, fixture_root("ol9", tmp_path / "r"),
                     enumerate_only=True)
    assert json.loads(out.stdout) == [
        {"key": U + "name.0", "description": "Name of user 0."},
        {"key": U + "action.0", "description": "What to do with user 0: add, del or mod.",
         "choices": ["add", "del", "mod"]},
        {"key": U + "uid.0", "description": "User ID of user 0."},
        {"key": U + "group.0", "description": "Primary group (name or GID) of user 0."},
        {"key": U + "groups.0", "description": "Supplementary groups of user 0 (comma-separated)."},
        {"key": U + "password.0", "description": "Password of user 0 (or a crypt hash).",
         "password": True},
        {"key": U + "new-name.0", "description": "New name of user 0 (action mod)."},
        {"key": G + "name.0", "description": "Name of group 0."},
        {"key": G + "action.0", "description": "What to do with group 0: add, del or mod.",
         "choices": ["add", "del", "mod"]},
        {"key": G + "gid.0", "description": "Group ID of group 0."},
        {"key": G + "new-name.0", "description": "New name of group 0 (action mod)."},
    ]
    cleanup = run_module("user", "cleanup", None, tmp_path / "r", enumerate_only=True)
    assert json.loads(cleanup.stdout) == []


@pytest.mark.parametrize("distro", DISTROS)
def test_add_golden(tmp_path, distro):
    root = fixture_root(distro, tmp_path / "r")
    run = run_module("user", "configure", ADD, root)
    prefix = ["--prefix", str(root)]
    assert run.commands()[:4] == [
        ["groupadd"] + prefix + ["-g", "2000", "devs"],
        ["groupadd"] + prefix + ["ops"],
        ["useradd"] + prefix + ["-m", "-k", str(root / "etc/skel"), "-u", "2001", "-g", "devs",
                                "-G", "users,ops", "alice"],
        ["useradd"] + prefix + ["-m", "-k", str(root / "etc/skel"), "bob"],
    ]
    assert entry(root, "etc/passwd", "alice")[:6] == ["alice", "x", "2001", "2000", "", "/home/alice"]
    bob = entry(root, "etc/passwd", "bob")
    assert bob[2] == "2002" and bob[3] == entry(root, "etc/group", "bob")[2]  # user private group
    assert entry(root, "etc/group", "ops")[2] == "2001"  # next free gid after devs
    assert entry(root, "etc/group", "devs") == ["devs", "x", "2000", ""]
    assert entry(root, "etc/group", "users")[3] == "alice"
    assert entry(root, "etc/group", "ops")[3] == "alice"
    shadow = entry(root, "etc/shadow", "alice")
    assert shadow[1].startswith("$6$") and verify_password("Al1ce pass:word", shadow[1])
    assert entry(root, "etc/shadow", "bob")[1] in ("!", "!!")
    home = root / "home/alice"
    assert home.is_dir() and home.stat().st_uid == 2001 and (home / ".bashrc").exists()
    # The shadow file keeps the guest's mode; the password is in no journal entry.
    assert owner_and_mode(root / "etc/shadow") == shadow_norm(root)
    assert "Al1ce" not in json.dumps(run.journal)


def test_idempotent(tmp_path):
    root = fixture_root("ol8", tmp_path / "r")
    run_module("user", "configure", ADD, root)
    before = tree(root, normalize_hashes=False)
    again = run_module("user", "configure", ADD, root)
    # byte for byte: the password already matches its hash, so /etc/shadow is not
    # rewritten (no fresh salt), and no account command runs twice
    assert tree(root, normalize_hashes=False) == before
    assert [argv[0] for argv in again.commands()] == []
    assert again.files() == []


def test_mod_rename_and_del(tmp_path):
    root = fixture_root("debian12", tmp_path / "r")
    run_module("user", "configure", ADD, root)
    mod = {
        G + "name.0": "devs", G + "action.0": "mod", G + "new-name.0": "developers",
        G + "gid.0": "2100",
        G + "name.1": "ops", G + "action.1": "del",
        U + "name.0": "alice", U + "action.0": "mod", U + "new-name.0": "alicia",
        U + "uid.0": "2101", U + "group.0": "developers", U + "groups.0": "users",
        U + "name.1": "bob", U + "action.1": "del",
    }
    run = run_module("user", "configure", mod, root)
    assert [argv[0] for argv in run.commands()] == ["groupmod", "usermod", "userdel", "groupdel"]
    assert entry(root, "etc/passwd", "alice") is None
    assert entry(root, "etc/passwd", "alicia")[:6] == ["alicia", "x", "2101", "2100", "", "/home/alicia"]
    assert (root / "home/alicia").is_dir() and not (root / "home/alice").exists()
    assert entry(root, "etc/group", "developers")[2] == "2100"
    assert entry(root, "etc/group", "ops") is None
    assert entry(root, "etc/group", "users")[3] == "alicia"
    assert entry(root, "etc/passwd", "bob") is None
    assert (root / "home/bob").is_dir()  # deleting a user keeps the data
    before = tree(root)
    assert run_module("user", "configure", mod, root).commands() == []  # already renamed
    assert tree(root) == before


@pytest.mark.parametrize("params, message", [
    ({U + "name.0": "9"}, U + "name.0: value '9' is invalid"),
    ({U + "name.0": "x", U + "action.0": "remove"}, U + "action.0: value 'remove' is not one of"),
    ({U + "name.0": "x", U + "uid.0": "-1"}, U + "uid.0: value '-1' is invalid"),
    ({U + "uid.5": "5000"}, U + "name.5: missing"),
    ({U + "name.0": "x", U + "group.0": "nosuch"}, U + "group.0: value 'nosuch' is not a group"),
    ({U + "name.0": "x", U + "new-name.0": "y"}, "a new name needs action mod"),
    ({U + "name.0": "x", U + "password.0": "line\nbreak"}, U + "password.0: value (hidden) is invalid"),
])
def test_invalid_params_change_nothing(tmp_path, params, message):
    root = fixture_root("ol7", tmp_path / "r")
    params = dict(ADD, **params)
    before = tree(root)
    run = run_module("user", "configure", params, root, check=False)
    assert run.returncode == 1
    assert message in run.stderr
    assert "line\nbreak" not in run.stderr and "line\\nbreak" not in run.stderr
    assert run.journal == [] and tree(root) == before


def test_dry_run_changes_nothing(tmp_path):
    root = fixture_root("ol9", tmp_path / "r")
    before = tree(root, normalize_hashes=False)
    run = run_module("user", "configure", ADD, root, dry_run=True)
    assert tree(root, normalize_hashes=False) == before
    assert [argv[0] for argv in run.commands()] == ["groupadd", "groupadd", "useradd", "chpasswd",
                                                   "useradd"]
    assert all(not e["applied"] for e in run.journal)
    assert "Al1ce" not in json.dumps(run.journal)
