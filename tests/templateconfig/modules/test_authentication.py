"""authentication: the root password, through chpasswd (or the prefix fallback) on stdin."""
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

from templateconfig.modules.authentication import SPEC

KEY = "com.oracle.linux.root-password"


def test_header_and_enumerate(tmp_path):
    assert SPEC.header() in (SCRIPTS / "authentication").read_text()
    root = fixture_root("ol9", tmp_path / "r")
    out = run_module("authentication", "configure", None, root, enumerate_only=True)
    assert json.loads(out.stdout) == [
        {"key": KEY, "description": "Root password.", "required": True, "password": True}]


@pytest.mark.parametrize("distro", DISTROS)
def test_sets_root_password(tmp_path, distro):
    root = fixture_root(distro, tmp_path / "r")
    old = entry(root, "etc/shadow", "root")
    run_module("authentication", "configure", {KEY: "n3w Root:pw"}, root)
    new = entry(root, "etc/shadow", "root")
    assert new[1].startswith("$6$") and verify_password("n3w Root:pw", new[1])
    assert new[0] == "root" and new[3:] == old[3:]
    assert owner_and_mode(root / "etc/shadow") == shadow_norm(root)
    # the same password again: checked against the hash, /etc/shadow is not rewritten
    before = tree(root, normalize_hashes=False)
    again = run_module("authentication", "configure", {KEY: "n3w Root:pw"}, root)
    assert tree(root, normalize_hashes=False) == before and again.journal == []
    # another password is set
    run_module("authentication", "configure", {KEY: "an0ther Root:pw"}, root)
    changed = entry(root, "etc/shadow", "root")[1]
    assert verify_password("an0ther Root:pw", changed) and not verify_password("n3w Root:pw",
                                                                                changed)


def test_a_hash_that_is_already_there_is_not_written_again(tmp_path):
    root = fixture_root("ol8", tmp_path / "r")
    run_module("authentication", "configure", {KEY: "first-pw"}, root)
    current = entry(root, "etc/shadow", "root")[1]
    before = tree(root, normalize_hashes=False)
    again = run_module("authentication", "configure", {KEY: current}, root)
    assert tree(root, normalize_hashes=False) == before and again.journal == []


def test_crypt_hash_is_stored_as_given(tmp_path):
    root = fixture_root("debian12", tmp_path / "r")
    hashed = "$y$j9T$abcdefghijklmnopqrstu.$0123456789abcdefghijklmnopqrstuvwxyzABCDE"
    run = run_module("authentication", "configure", {KEY: hashed}, root)
    assert entry(root, "etc/shadow", "root")[1] == hashed
    assert hashed not in json.dumps(run.journal)


@pytest.mark.parametrize("value", ["", "two\nlines"])
def test_invalid_password_is_refused_without_echo(tmp_path, value):
    root = fixture_root("ol8", tmp_path / "r")
    before = tree(root, normalize_hashes=False)
    run = run_module("authentication", "configure", {KEY: value}, root, check=False)
    assert run.returncode == 1 and KEY + ": value (hidden) is invalid" in run.stderr
    if value:
        assert "two" not in run.stderr
    assert tree(root, normalize_hashes=False) == before and run.journal == []


def test_dry_run(tmp_path):
    root = fixture_root("ol8", tmp_path / "r")
    before = tree(root, normalize_hashes=False)
    run = run_module("authentication", "configure", {KEY: "pw-dry"}, root, dry_run=True)
    assert tree(root, normalize_hashes=False) == before
    assert [e["op"] for e in run.journal] == ["command", "write"]
    assert "pw-dry" not in json.dumps(run.journal)
