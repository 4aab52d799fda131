"""ssh: host keys (supplied or freshly generated with the real ssh-keygen) and users' files."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from identity_helpers import SCRIPTS, fixture_root, run_module, tree

from templateconfig.modules.ssh import SPEC

P = "com.oracle.linux.ssh."
ADD_ALICE = {"com.oracle.linux.user.name.0": "alice", "com.oracle.linux.user.uid.0": "2001"}


def keypair(tmp_path, key_type):
    path = tmp_path / ("k-" + key_type)
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", "test", "-f", str(path)],
                   check=True)
    return path.read_text(), path.with_suffix(".pub").read_text() if False else open(str(path) + ".pub").read()


def fingerprint(path):
    return subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def test_header_matches_spec():
    assert SPEC.header() in (SCRIPTS / "ssh").read_text()


def test_enumerate_exact(tmp_path):
    out = json.loads(run_module("ssh", "configure", None, fixture_root("ol9", tmp_path / "r"),
                                enumerate_only=True).stdout)
    assert [d["key"] for d in out] == [
        P + "host-key", P + "host-key-pub", P + "host-rsa-key", P + "host-rsa-key-pub",
        P + "host-dsa-key", P + "host-dsa-key-pub", P + "host-ecdsa-key", P + "host-ecdsa-key-pub",
        P + "host-ed25519-key", P + "host-ed25519-key-pub",
        P + "user.0", P + "authorized-keys.0", P + "private-key.0", P + "private-key-type.0",
        P + "known-hosts.0"]
    assert all(set(d) == {"key", "description"} for d in out if d["key"] != P + "private-key-type.0")
    assert out[13]["choices"] == ["rsa", "dsa", "rsa1", "ecdsa", "ed25519"]


#: sshd restarted after its host keys changed, only if it runs (queued, not waited for).
SYSTEMD_RESTART = ["systemctl", "--no-block", "try-restart", "sshd"]


@pytest.mark.parametrize("distro, types, mode, group, restart", [
    ("ol6", ["dsa", "rsa"], 0o600, 0, ["service", "sshd", "condrestart"]),
    ("ol7", ["ecdsa", "ed25519", "rsa"], 0o640, 998, SYSTEMD_RESTART),
    ("ol8", ["ecdsa", "ed25519", "rsa"], 0o640, 998, SYSTEMD_RESTART),
    # HostKey lines of an Include'd file
    ("ol9", ["ecdsa", "ed25519"], 0o640, 998, SYSTEMD_RESTART),
    ("debian12", ["ecdsa", "ed25519", "rsa"], 0o600, 0, SYSTEMD_RESTART[:-1] + ["ssh"]),
    ("ubuntu2204", ["ecdsa", "ed25519", "rsa"], 0o600, 0, SYSTEMD_RESTART[:-1] + ["ssh"]),
])
def test_fresh_host_keys_per_distro(tmp_path, distro, types, mode, group, restart):
    root = fixture_root(distro, tmp_path / "r")
    old = {p.name: p.read_bytes() for p in (root / "etc/ssh").glob("ssh_host_*")}
    run = run_module("ssh", "configure", {}, root)
    keys = sorted(p.name for p in (root / "etc/ssh").glob("ssh_host_*_key"))
    assert keys == ["ssh_host_%s_key" % t for t in types]
    assert run.commands() == [["ssh-keygen", "-q", "-t", t, "-N", "", "-C", "", "-f",
                               str(root / "etc/ssh" / ("ssh_host_%s_key" % t))]
                              for t in types] + [restart]
    for name in keys:
        private, public = root / "etc/ssh" / name, root / "etc/ssh" / (name + ".pub")
        st = private.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, 0, group)
        assert public.stat().st_mode & 0o777 == 0o644
        assert fingerprint(private) == fingerprint(public)
        assert private.read_bytes() != old.get(name)   # the template's key is gone
    assert not (root / "etc/ssh/ssh_host_dsa_key").exists() or "dsa" in types
    assert not any(e.get("new") and "PRIVATE" in e["new"] for e in run.journal)


def test_idempotent_and_clones_differ(tmp_path):
    a = fixture_root("ol8", tmp_path / "a")
    b = fixture_root("ol8", tmp_path / "b")
    run_module("ssh", "configure", {}, a)
    run_module("ssh", "configure", {}, b)
    for name in ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key"):
        assert fingerprint(a / "etc/ssh" / name) != fingerprint(b / "etc/ssh" / name)
    before = tree(a)
    assert run_module("ssh", "configure", {}, a).journal == []  # same boot: kept
    assert tree(a) == before


def test_supplied_host_keys(tmp_path):
    root = fixture_root("ol8", tmp_path / "r")
    rsa, rsa_pub = keypair(tmp_path, "rsa")
    ed, ed_pub = keypair(tmp_path, "ed25519")
    params = {P + "host-rsa-key": rsa, P + "host-rsa-key-pub": rsa_pub,
              P + "host-ed25519-key": ed.rstrip("\n"), P + "host-ed25519-key-pub": ed_pub}
    run = run_module("ssh", "configure", params, root)
    assert (root / "etc/ssh/ssh_host_rsa_key").read_text() == rsa
    assert (root / "etc/ssh/ssh_host_ed25519_key").read_text() == ed   # newline restored
    assert (root / "etc/ssh/ssh_host_ed25519_key.pub").read_text() == ed_pub
    assert (root / "etc/ssh/ssh_host_rsa_key").stat().st_mode & 0o777 == 0o640
    # the type sshd uses that was not supplied is generated fresh; sshd reads them anew
    assert run.commands() == [["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "", "-f",
                               str(root / "etc/ssh/ssh_host_ecdsa_key")], SYSTEMD_RESTART]
    writes = [e for e in run.journal if e["op"] == "write" and e["path"].endswith("_key")]
    assert writes and all(e["secret"] and e["new"] is None for e in writes)
    before = tree(root)
    run_module("ssh", "configure", params, root)
    assert tree(root) == before


def test_user_files(tmp_path):
    root = fixture_root("debian12", tmp_path / "r")
    run_module("user", "configure", ADD_ALICE, root)
    private, _ = keypair(tmp_path, "ed25519")
    params = {P + "user.0": "alice", P + "authorized-keys.0": "ssh-ed25519 AAAAC3Nza a@b",
              P + "private-key.0": private, P + "known-hosts.0": "host1 ssh-rsa AAAAB3",
              P + "authorized-keys.1": "ssh-rsa AAAAB3Nza root@admin"}   # user.1 absent: root
    run_module("ssh", "configure", params, root)
    ssh = root / "home/alice/.ssh"
    expect = {".": 0o700, "authorized_keys": 0o600, "id_ed25519": 0o600, "known_hosts": 0o644}
    for name, mode in expect.items():
        st = (ssh / name).stat()
        assert (st.st_mode & 0o777, st.st_uid) == (mode, 2001), name
    assert (ssh / "id_ed25519").read_text() == private
    assert (ssh / "authorized_keys").read_text() == "ssh-ed25519 AAAAC3Nza a@b\n"
    assert (root / "root/.ssh/authorized_keys").read_text() == "ssh-rsa AAAAB3Nza root@admin\n"
    assert (root / "root/.ssh").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize("link", ["/etc", "../../etc", "/home"])
def test_ssh_dir_escaping_home_is_refused(tmp_path, link):
    root = fixture_root("ol9", tmp_path / "r")
    run_module("user", "configure", ADD_ALICE, root)
    os.symlink(link, root / "home/alice/.ssh")
    before = tree(root)
    run = run_module("ssh", "configure", {P + "user.0": "alice", P + "authorized-keys.0": "ssh-rsa AAAA x"},
                     root, check=False)
    assert run.returncode == 1 and "outside the home directory" in run.stderr
    after = tree(root)
    assert after == before and run.journal == []   # checked before any change
    assert not (root / "etc/authorized_keys").exists() and not (root / "home/authorized_keys").exists()


def test_invalid_private_key_is_not_echoed(tmp_path):
    root = fixture_root("ol9", tmp_path / "r")
    run = run_module("ssh", "configure", {P + "private-key.0": "secret-not-a-key-material"}, root,
                     check=False)
    assert run.returncode == 1 and P + "private-key.0: value (hidden) is invalid" in run.stderr
    assert "secret-not-a-key-material" not in run.stderr and run.journal == []


def test_cleanup_removes_host_keys_and_root_ssh(tmp_path):
    root = fixture_root("ol8", tmp_path / "r")
    run_module("ssh", "configure", {}, root)
    run = run_module("ssh", "cleanup", {}, root)
    assert list((root / "etc/ssh").glob("ssh_host_*")) == []
    assert list((root / "root/.ssh").iterdir()) == []
    assert not (root / "var/lib/ovm-template-config/ssh-host-keys.generated").exists()
    assert "TEMPLATE" not in json.dumps(run.journal)
    # after sealing, configure generates fresh keys again
    run_module("ssh", "configure", {}, root)
    assert (root / "etc/ssh/ssh_host_rsa_key").exists()


def test_dry_run(tmp_path):
    root = fixture_root("ol7", tmp_path / "r")
    before = tree(root, normalize_hashes=False)
    run = run_module("ssh", "configure", {P + "authorized-keys.0": "ssh-rsa AAAA x"}, root, dry_run=True)
    assert tree(root, normalize_hashes=False) == before
    assert [argv[3] for argv in run.commands()[:-1]] == ["ecdsa", "ed25519", "rsa"]
    assert run.commands()[-1] == SYSTEMD_RESTART
    assert ("write", "/root/.ssh/authorized_keys") in run.files()
    assert all(not e["applied"] for e in run.journal)
