"""system: clone identity (machine-id, persistent net rules, registration) and sealing."""
from __future__ import annotations

import json
import re

import pytest
from identity_helpers import DISTROS, SCRIPTS, fixture_root, run_module, tree

from templateconfig.modules.system import SPEC

TEMPLATE_ID = "0123456789abcdef0123456789abcdef\n"


def test_header_and_enumerate(tmp_path):
    assert SPEC.header() in (SCRIPTS / "system").read_text()
    root = fixture_root("ol7", tmp_path / "r")
    for target in ("configure", "cleanup"):
        assert json.loads(run_module("system", target, None, root, enumerate_only=True).stdout) == []


@pytest.mark.parametrize("distro", DISTROS)
def test_configure_gives_a_new_identity(tmp_path, distro):
    root = fixture_root(distro, tmp_path / "r")
    run_module("system", "configure", {}, root)
    machine_id = root / "etc/machine-id"
    dbus = root / "var/lib/dbus/machine-id"
    if distro == "ol6":
        assert not machine_id.exists()           # no systemd: only D-Bus's id
        new = dbus.read_text()
    else:
        new = machine_id.read_text()
        assert machine_id.stat().st_mode & 0o777 == 0o444
    assert re.match(r"^[0-9a-f]{32}\n\Z", new) and new != TEMPLATE_ID
    if distro == "debian12":
        assert dbus.is_symlink()                 # a link to /etc/machine-id is left alone
    elif dbus.exists():
        assert dbus.read_text() == new
    assert not (root / "etc/udev/rules.d/70-persistent-net.rules").exists()
    assert not (root / "etc/sysconfig/rhn/systemid").exists()
    assert not (root / "etc/pki/consumer/cert.pem").exists()
    if distro.startswith("ol"):
        assert (root / "etc/sysconfig/rhn/up2date").exists()   # configuration is kept
    before = tree(root)
    assert run_module("system", "configure", {}, root).journal == []   # same boot: idempotent
    assert tree(root) == before


def test_clones_differ(tmp_path):
    ids = set()
    for name in ("a", "b"):
        root = fixture_root("ol9", tmp_path / name)
        run_module("system", "configure", {}, root)
        ids.add((root / "etc/machine-id").read_text())
    assert len(ids) == 2


@pytest.mark.parametrize("distro", ["ol6", "ol8", "ubuntu2204"])
def test_cleanup_seals(tmp_path, distro):
    root = fixture_root(distro, tmp_path / "r")
    run_module("system", "configure", {}, root)
    run_module("system", "cleanup", {}, root)
    if distro != "ol6":
        assert (root / "etc/machine-id").read_text() == ""    # systemd's first-boot marker
    assert not (root / "var/lib/dbus/machine-id").exists()
    assert not (root / "var/lib/systemd/random-seed").exists()
    assert not (root / "etc/pki/consumer/key.pem").exists()
    assert not (root / "var/lib/ovm-template-config/machine-id.generated").exists()
    before = tree(root)
    run_module("system", "cleanup", {}, root)
    assert tree(root) == before
    run_module("system", "configure", {}, root)      # the sealed template's clone
    mid = root / ("var/lib/dbus/machine-id" if distro == "ol6" else "etc/machine-id")
    if distro != "ol6":
        assert len(mid.read_text()) == 33


def test_dry_run(tmp_path):
    root = fixture_root("ol6", tmp_path / "r")
    before = tree(root, normalize_hashes=False)
    run = run_module("system", "configure", {}, root, dry_run=True)
    assert tree(root, normalize_hashes=False) == before
    assert ("remove", "/etc/udev/rules.d/70-persistent-net.rules") in run.files()
    assert all(not e["applied"] for e in run.journal)
