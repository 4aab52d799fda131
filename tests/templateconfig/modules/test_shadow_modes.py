"""The files of password hashes are never left more readable than the distribution has them.

On every fixture root, the user and authentication modules change accounts with the real
shadow tools (``--prefix``: the tools keep the mode a file had and give their backups,
``/etc/shadow-`` and the others, the same one) and, for root's password, write the
shadow entry themselves. With the modes a real guest has (EL 0000 root:root, Debian and
Ubuntu 0640 root:shadow) those stay; a template whose files are too open (0644 and a
user's group, as a careless copy leaves them) is closed to the norm; never opened. The
shadow tools in chroot mode (``--root``, the guest's own tools) are checked on a real
Debian root in test_real_root.py.
"""
from __future__ import annotations

import json
import os

import pytest
from identity_helpers import (
    DISTROS,
    fixture_root,
    owner_and_mode,
    run_module,
    shadow_norm,
    tree,
)
from testlib import require_root

U, G = "com.oracle.linux.user.", "com.oracle.linux.group."
ACCOUNTS = {G + "name.0": "devs", G + "gid.0": "2000",
            U + "name.0": "alice", U + "uid.0": "2001", U + "groups.0": "devs",
            U + "password.0": "Al1ce pass:word"}
ROOT_PASSWORD = {"com.oracle.linux.root-password": "n3w Root:pw"}
SHADOW_FILES = ("etc/shadow", "etc/gshadow", "etc/shadow-", "etc/gshadow-")
USERS_GID = 100  # "users" in every fixture root


def configure_accounts(root):
    run_module("user", "configure", ACCOUNTS, root)
    run_module("authentication", "configure", ROOT_PASSWORD, root)


@pytest.mark.parametrize("distro", DISTROS)
def test_the_guests_modes_are_kept(tmp_path, distro):
    require_root("the shadow tools change a root's accounts as root")
    root = fixture_root(distro, tmp_path / "r")
    norm = shadow_norm(root)
    assert owner_and_mode(root / "etc/shadow") == norm  # the fixture as a real guest has it
    configure_accounts(root)
    for name in SHADOW_FILES:
        assert owner_and_mode(root / name) == norm, name  # the backups were made, alike


@pytest.mark.parametrize("distro", DISTROS)
def test_a_too_open_template_is_closed_to_the_norm(tmp_path, distro):
    require_root("the shadow tools change a root's accounts as root")
    root = fixture_root(distro, tmp_path / "r")
    norm = shadow_norm(root)
    for name in ("etc/shadow", "etc/gshadow"):
        os.chown(root / name, 0, USERS_GID)
        os.chmod(root / name, 0o644)
    configure_accounts(root)
    for name in SHADOW_FILES:
        assert owner_and_mode(root / name) == norm, name
    # run again: nothing left to do, nothing changes
    before = tree(root, normalize_hashes=False)
    run_module("user", "configure", ACCOUNTS, root)
    run_module("authentication", "configure", ROOT_PASSWORD, root)
    assert tree(root, normalize_hashes=False) == before


@pytest.mark.parametrize("distro", ["ol9", "debian12"])
def test_root_password_alone_closes_shadow(tmp_path, distro):
    require_root("the shadow tools change a root's accounts as root")
    root = fixture_root(distro, tmp_path / "r")
    os.chmod(root / "etc/shadow", 0o666)
    run = run_module("authentication", "configure", ROOT_PASSWORD, root)
    assert owner_and_mode(root / "etc/shadow") == shadow_norm(root)
    changed = [(r["op"], r["path"]) for r in run.journal if r["op"] != "command"]
    assert ("metadata", "/etc/shadow") in changed
    assert "n3w Root" not in json.dumps(run.journal)


def test_a_dry_run_plans_the_change_and_makes_none(tmp_path):
    require_root("the shadow tools change a root's accounts as root")
    root = fixture_root("ol9", tmp_path / "r")
    os.chmod(root / "etc/shadow", 0o644)
    before = tree(root, normalize_hashes=False)
    run = run_module("authentication", "configure", ROOT_PASSWORD, root, dry_run=True)
    assert tree(root, normalize_hashes=False) == before
    planned = [r for r in run.journal if r["op"] == "metadata"]
    assert [(r["path"], r["mode"], r["applied"]) for r in planned] == [("/etc/shadow", 0, False)]


def test_a_stricter_file_is_never_opened(tmp_path):
    require_root("the shadow tools change a root's accounts as root")
    root = fixture_root("debian12", tmp_path / "r")
    os.chmod(root / "etc/shadow", 0o600)
    configure_accounts(root)
    mode, uid, _ = owner_and_mode(root / "etc/shadow")
    assert (mode, uid) == (0o600, 0)
