"""The identity modules on a real Debian 12 root, checked with the root's own tools.

The root is ``debootstrap --variant=minbase --include=openssh-client,openssh-server
bookworm``, built once per machine and cached as a tarball (identity_helpers). Here the
shadow tools run in ``chroot`` mode (``--root``): the guest's own tools, login.defs and PAM.
Needs root, debootstrap and the Debian mirror; without them the test is skipped, and
fails under CI=true.
"""
from __future__ import annotations

import os
import stat
import subprocess

import pytest
from identity_helpers import extract_debian_root, run_module, verify_password
from testlib import IN_CI, require_tool

U, G, S = "com.oracle.linux.user.", "com.oracle.linux.group.", "com.oracle.linux.ssh."


@pytest.fixture
def debian_root(tmp_path):
    require_tool("debootstrap")
    if os.geteuid() != 0:
        message = "the real-root test needs root (chroot, debootstrap)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        return extract_debian_root(tmp_path / "root")
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        if IN_CI:
            pytest.fail("cannot build the Debian root: %s" % exc)
        pytest.skip("cannot build the Debian root: %s" % exc)


def chroot(root, *argv):
    return subprocess.run(["chroot", str(root)] + list(argv), capture_output=True, text=True,
                          check=True).stdout


def test_configure_on_a_real_root(debian_root, tmp_path):
    root = debian_root
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    template_fp = subprocess.run(["ssh-keygen", "-l", "-f", str(root / "etc/ssh/ssh_host_ed25519_key")],
                                 capture_output=True, text=True, check=True).stdout
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    params = {
        G + "name.0": "devs", G + "gid.0": "3000",
        U + "name.0": "carol", U + "uid.0": "3001", U + "group.0": "devs", U + "groups.0": "users",
        U + "password.0": "Carol pass 1",
        S + "user.0": "carol", S + "authorized-keys.0": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 c@d",
        S + "private-key.0": (tmp_path / "k").read_text(),
        "com.oracle.linux.root-password": "R00t pass 2",
    }
    for module in ("system", "user", "ssh", "authentication"):
        run = run_module(module, "configure", params, root)
        for argv in run.commands():
            if argv[0] in ("useradd", "groupadd", "chpasswd"):
                assert argv[1:3] == ["--root", str(root)]    # the guest's own tools

    assert "carol:x:3001:3000::/home/carol:" in chroot(root, "getent", "passwd", "carol")
    assert chroot(root, "id", "carol").strip() == "uid=3001(carol) gid=3000(devs) groups=3000(devs),100(users)"
    shadow = dict(line.split(":")[:2] for line in (root / "etc/shadow").read_text().splitlines())
    assert verify_password("Carol pass 1", shadow["carol"])
    assert verify_password("R00t pass 2", shadow["root"])
    assert not verify_password("wrong", shadow["root"])

    for name in ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key"):
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(root / "etc/ssh" / name)],
                             capture_output=True, text=True, check=True).stdout
        assert out.split()[1]
    new_fp = subprocess.run(["ssh-keygen", "-l", "-f", str(root / "etc/ssh/ssh_host_ed25519_key")],
                            capture_output=True, text=True, check=True).stdout
    assert new_fp.split()[1] != template_fp.split()[1]      # the template's host key was replaced
    # the guest's own ssh-keygen reads the user's key (chroot, as the guest would)
    assert chroot(root, "ssh-keygen", "-l", "-f", "/home/carol/.ssh/id_ed25519").split()[1] == \
        subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k")], capture_output=True,
                       text=True, check=True).stdout.split()[1]
    ssh_dir = root / "home/carol/.ssh"
    assert (ssh_dir.stat().st_mode & 0o777, ssh_dir.stat().st_uid) == (0o700, 3001)
    assert (ssh_dir / "authorized_keys").stat().st_mode & 0o777 == 0o600
    assert (root / "etc/machine-id").read_text() != "0123456789abcdef0123456789abcdef\n"


def test_hosts_of_a_root_without_one_still_resolve_localhost(debian_root):
    """debootstrap makes no /etc/hosts: the network module writes Debian's localhost lines
    around its own, and the root's own getent (glibc's files backend) resolves both."""
    root = debian_root
    assert not (root / "etc/hosts").exists()
    N = "com.oracle.linux.network."
    run_module("network", "configure", {N + "hostname": "clone1.example.com",
                                        N + "host.0": "192.0.2.50 db.example.com db"}, root)
    assert "localhost" in chroot(root, "getent", "hosts", "localhost").split()
    assert chroot(root, "getent", "ahostsv4", "localhost").split()[0] == "127.0.0.1"
    assert chroot(root, "getent", "ahostsv6", "localhost").split()[0] == "::1"
    assert chroot(root, "getent", "hosts", "clone1").split() == \
        ["127.0.1.1", "clone1.example.com", "clone1"]
    assert chroot(root, "getent", "hosts", "db").split()[0] == "192.0.2.50"
    run_module("network", "cleanup", {}, root)
    assert not (root / "etc/hosts").exists()       # the root had none


def test_password_files_stay_as_debian_has_them(debian_root):
    """The guest's own shadow tools (chroot mode) keep a file's mode and give their
    backups the same: Debian's 0640 root:shadow stays, and a template whose files were
    left too open (0644, another group) is closed to it by the modules."""
    root = debian_root
    shadow_gid = int(chroot(root, "getent", "group", "shadow").split(":")[2])
    for name in ("shadow", "gshadow"):
        path = root / "etc" / name
        assert (stat.S_IMODE(path.stat().st_mode), path.stat().st_uid, path.stat().st_gid) == \
            (0o640, 0, shadow_gid)                   # as debootstrap made them
        os.chown(path, 0, 100)
        os.chmod(path, 0o644)
    params = {U + "name.0": "dave", U + "password.0": "Dave pass 3",
              "com.oracle.linux.root-password": "R00t pass 4"}
    for module in ("user", "authentication"):
        run = run_module(module, "configure", params, root)
        tools = [argv[1:3] for argv in run.commands() if argv[0] in ("useradd", "chpasswd")]
        assert tools and all(t == ["--root", str(root)] for t in tools)  # the guest's own
    for name in ("shadow", "gshadow", "shadow-", "gshadow-"):
        st = (root / "etc" / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, shadow_gid), name
