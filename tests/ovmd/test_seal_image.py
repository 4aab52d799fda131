"""``ovmd --seal --root MNT`` on a real disk image: a small ext4 file system on a loop
device, holding a configured guest (a fixture root with the standard modules, configured
by the real runner, plus ovmd's state), mounted, and sealed from a mount namespace whose
/ is read-only: a write outside the image would fail there. Then the host's state is
compared with what it was, the image is unmounted, detached and checked with e2fsck.

The offline way with a partitioned disk (``kpartx -av disk.img; mount /dev/mapper/...``)
is the same once the partition is mounted; this image has no partition table, so the
loop device itself is mounted. Needs root (losetup, mount); names are unique per run and
the image is always unmounted and detached.
"""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from testlib import (
    SEALED_SECRET,
    bin_path,
    configured_guest_root,
    host_state,
    require_root,
    require_tool,
    with_ovmd_state,
)

from ovmd.paths import Paths
from ovmd.seal import sealed_files


def run(*argv: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, **options)


@pytest.fixture
def mounted_image(tmp_path):
    """A 64 MiB ext4 image holding a configured guest, mounted at tmp_path/mnt."""
    require_root("losetup and mount a disk image")
    for tool in ("mkfs.ext4", "losetup", "mount", "umount", "unshare", "e2fsck"):
        require_tool(tool)
    guest = with_ovmd_state(configured_guest_root(tmp_path / "guest"))
    image = tmp_path / "disk.img"
    with open(image, "wb") as handle:
        handle.truncate(64 << 20)
    assert run("mkfs.ext4", "-q", "-F", "-L", "ovmd-seal-test", str(image)).returncode == 0
    device = run("losetup", "--find", "--show", str(image)).stdout.strip()
    assert device.startswith("/dev/loop"), device
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounted = False
    try:
        proc = run("mount", device, str(mnt))
        assert proc.returncode == 0, proc.stderr
        mounted = True
        assert run("cp", "-a", str(guest) + "/.", str(mnt)).returncode == 0
        shutil.rmtree(guest)
        yield mnt
        proc = run("umount", str(mnt))
        assert proc.returncode == 0, proc.stderr
        mounted = False
    finally:
        if mounted:
            run("umount", "-l", str(mnt))
        run("losetup", "-d", device)
    assert device not in run("losetup", "-a").stdout
    check = run("e2fsck", "-f", "-n", str(image))
    assert check.returncode == 0, check.stdout + check.stderr


def in_read_only_namespace(script: str) -> subprocess.CompletedProcess:
    """``sh -c SCRIPT`` in a new mount namespace whose / is read-only (the image, mounted
    before, stays writable)."""
    return run("unshare", "--mount", "--propagation", "private", "sh", "-c",
               "mount -o remount,bind,ro / && " + script)


def test_an_offline_image_is_sealed_and_nothing_outside_it_changes(mounted_image):
    mnt = mounted_image
    declared = [path for path, _, _ in sealed_files(Paths(str(mnt)))]
    assert any(path.endswith("/var/lib/ovmd/params.json") for path in declared)
    before = host_state()
    probe = in_read_only_namespace("touch /var/lib/.ovmd-seal-probe 2>/dev/null && echo "
                                   "writable || echo read-only")
    assert probe.stdout.strip() == "read-only", probe.stdout + probe.stderr
    proc = in_read_only_namespace("exec %s --seal --root %s" % (bin_path("ovmd"), mnt))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    removed = re.findall(r"^removed (\S+) \(", proc.stdout, re.M)
    # (the cleanup run set the configure run's report aside as it wrote its own)
    assert set(removed) == set(declared) | {Paths(str(mnt)).configure_report_file}
    assert proc.stdout.rstrip().endswith("sealed the guest tree in %s: unmount it now" % mnt)
    assert host_state() == before
    # the image is a template now: no host keys, no machine-id, no ovmd state, armed
    assert sealed_files(Paths(str(mnt))) == []
    assert list((mnt / "etc/ssh").glob("ssh_host_*")) == []
    assert (mnt / "etc/machine-id").read_text() == ""
    assert re.search(r"^INITIAL_CONFIG=yes$", (mnt / "etc/sysconfig/ovmd").read_text(), re.M)
    # the runner's temporary files were made inside the image, and are gone
    assert [p.name for p in (mnt / "run/ovmd").iterdir()] == ["run.lock"]
    assert run("grep", "-rl", SEALED_SECRET, str(mnt)).stdout == ""
