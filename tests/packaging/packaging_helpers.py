"""Helpers of the packaging tests: building the RPMs, reading them, and a Debian root.

- ``rpms``: ``make rpm`` as a user runs it (default macros), into a temporary _topdir.
- ``debian_rpms``: the same build with ``python3_sitelib`` aimed at Debian's
  ``/usr/lib/python3/dist-packages``, the only site directory the Debian root's python3
  reads, so the installed packages are importable there.
- ``installed_root``: a minimal Debian 12 root (debootstrap ``minbase`` + python3, cached
  as a tarball per machine) with every built RPM installed by ``rpm --root``. rpm chroots
  into it to run the scriptlets, which is why it needs ``/bin/sh`` and a python3.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List

import pytest


from testlib import IN_CI, REPO, bin_path, require_tool  # noqa: F401  (re-exported)

#: The standard modules, one ovm-template-config-NAME package each.
MODULES = ("selinux", "firewall", "datetime", "network", "system", "user", "ssh",
           "authentication")
TARGETS = ("configure", "unconfigure", "reconfigure", "cleanup", "suspend", "resume",
           "migrate", "shutdown")
#: Debian's python3 reads only dist-packages (not the posix_prefix site-packages).
DEBIAN_SITELIB = "/usr/lib/python3/dist-packages"
#: An rpm database inside the root, at a fixed place (Debian's rpm defaults to ~/.rpmdb).
RPM_DBPATH = "/var/lib/rpm"

CACHE_DIR = Path(os.environ.get("OVMD_TEST_CACHE", "/var/cache/ovmd-tests"))
DEBIAN_MIRROR = os.environ.get("OVMD_TEST_MIRROR", "http://deb.debian.org/debian")
PYTHON_ROOT_TARBALL = CACHE_DIR / "bookworm-minbase-python3.tar"


def require_root() -> None:
    """rpm --root chroots and debootstrap creates device nodes: both need uid 0."""
    if os.geteuid() != 0:
        message = "this test needs root (rpm --root chroots into the test root)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


def run(argv: List[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output if it fails."""
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    check = kwargs.pop("check", True)
    proc = subprocess.run(argv, **kwargs)
    if check and proc.returncode != 0:
        pytest.fail("%s failed (%d):\n%s\n%s" % (" ".join(argv), proc.returncode,
                                                 proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc


def build_rpms(topdir: Path, rpmbuild_flags: str = "") -> Dict[str, Path]:
    """``make rpm`` into ``topdir``; returns package name -> .rpm path."""
    require_tool("rpmbuild")
    require_tool("make")
    argv = ["make", "-s", "-C", str(REPO), "rpm", "RPMTOP=%s" % topdir]
    if rpmbuild_flags:
        argv.append("RPMBUILD_FLAGS=%s" % rpmbuild_flags)
    run(argv, timeout=600)
    packages = {}
    for path in sorted((topdir / "RPMS").rglob("*.rpm")):
        name = run(["rpm", "-qp", "--qf", "%{NAME}", str(path)]).stdout
        packages[name] = path
    return packages


def rpm_files(path: Path) -> Dict[str, str]:
    """File name -> symbolic mode (``-rwxr-xr-x``) of every file an RPM holds."""
    out = run(["rpm", "-qp", "--qf", "[%{FILEMODES:perms} %{FILENAMES}\\n]", str(path)]).stdout
    files = {}
    for line in out.splitlines():
        mode, name = line.split(" ", 1)
        files[name] = mode
    return files


def rpm_scripts(path: Path) -> str:
    return run(["rpm", "-qp", "--scripts", str(path)]).stdout


# --- the Debian root ---------------------------------------------------------------------

def python_root_tarball() -> Path:
    """The cached tarball of ``debootstrap --variant=minbase --include=python3 bookworm``.

    Built once per machine (a few minutes, needs the mirror) under a lock, so parallel
    sessions wait for one build. The identity-module tests cache a root with openssh
    instead (tests/modules/identity_helpers.py); the two differ only in --include.
    """
    if PYTHON_ROOT_TARBALL.exists():
        return PYTHON_ROOT_TARBALL
    require_tool("debootstrap")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".build-python3.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if PYTHON_ROOT_TARBALL.exists():
            return PYTHON_ROOT_TARBALL
        staging = Path(tempfile.mkdtemp(prefix="bookworm-python3-", dir=str(CACHE_DIR)))
        try:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=python3", "bookworm",
                 str(staging / "root"), DEBIAN_MIRROR],
                capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError("debootstrap failed (%d): %s" % (
                    proc.returncode, (proc.stdout + proc.stderr)[-2000:]))
            partial = PYTHON_ROOT_TARBALL.with_suffix(".tar.partial")
            with tarfile.open(partial, "w") as archive:
                archive.add(str(staging / "root"), arcname=".")
            os.rename(partial, PYTHON_ROOT_TARBALL)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PYTHON_ROOT_TARBALL


def debian_root(dest: Path) -> Path:
    """A fresh minimal Debian root with python3 at ``dest``, and an empty rpm database."""
    require_root()
    require_tool("rpm")
    try:
        tarball = python_root_tarball()
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    dest.mkdir(parents=True, exist_ok=True)
    run(["tar", "-xpf", str(tarball), "-C", str(dest), "--numeric-owner"])
    rpm_root(dest, "--initdb")
    return dest


def rpm_root(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``rpm`` on the database inside ``root``.

    ``--nodeps``: the Debian root's python3 and /bin/sh come from dpkg, so rpm's database
    there knows nothing of the ``python3`` and ``/bin/sh`` our packages require; what they
    really need is checked by running them in the root. ``--force-debian``: Debian's rpm
    otherwise refuses to install on a dpkg system (it is a root, not this machine).
    """
    changes = bool(args) and args[0][:2] in ("-i", "-U", "-e")
    argv = ["rpm", "--root", str(root), "--dbpath", RPM_DBPATH]
    argv += ["--nodeps", "--force-debian"] if changes else []
    argv += list(args)
    return run(argv, check=check, timeout=300)
