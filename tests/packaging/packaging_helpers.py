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

import os
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
from testlib import IN_CI, REPO, bin_path, extract_debian_root, require_tool  # noqa: F401

#: The standard modules, one ovm-template-config-NAME package each.
MODULES = ("selinux", "firewall", "datetime", "network", "system", "user", "ssh",
           "authentication")
TARGETS = ("configure", "unconfigure", "reconfigure", "cleanup", "suspend", "resume",
           "migrate", "shutdown")
#: configure priorities of the standard modules (Oracle's: selinux 30 ... authentication 90).
CONFIGURE_PRIORITIES = {"selinux": 30, "firewall": 41, "datetime": 50, "network": 50,
                        "system": 60, "user": 60, "ssh": 70, "authentication": 90}
#: Debian's python3 reads only dist-packages (not the posix_prefix site-packages).
DEBIAN_SITELIB = "/usr/lib/python3/dist-packages"
#: An rpm database inside the root, at a fixed place (Debian's rpm defaults to ~/.rpmdb).
RPM_DBPATH = "/var/lib/rpm"



def framework_sources():
    """(path relative to the repository, whether it is a standard module's own file) of
    every templateconfig/*.py: the framework package holds all but the module files."""
    for source in sorted((REPO / "templateconfig").rglob("*.py")):
        relative = source.relative_to(REPO)
        yield relative, relative.parent.name == "modules" and source.stem in MODULES


def links(root: Path, target: str) -> Dict[str, str]:
    """The registry of one target in ``root``: link name (``70ssh``) -> link target."""
    directory = root / "etc/template.d" / ("%s.d" % target)
    return {entry.name: os.readlink(entry) for entry in sorted(directory.iterdir())}


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

def debian_root(dest: Path) -> Path:
    """A fresh minimal Debian root with python3 at ``dest``, and an empty rpm database."""
    require_root()
    require_tool("rpm")
    try:
        extract_debian_root(dest)
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
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


# --- the Debian packages ---------------------------------------------------------------------

def build_debs(topdir: Path) -> Dict[str, Path]:
    """``make deb`` into ``topdir``; returns package name -> .deb path."""
    require_tool("dpkg-buildpackage")
    require_tool("dh")
    run(["make", "-s", "-C", str(REPO), "deb", "DEBTOP=%s" % topdir], timeout=600)
    packages = {}
    for path in sorted(topdir.glob("*.deb")):
        packages[deb_field(path, "Package")] = path
    return packages


def deb_field(path: Path, field: str) -> str:
    return run(["dpkg-deb", "--field", str(path), field]).stdout.strip()


def deb_files(path: Path) -> Dict[str, str]:
    """File name -> symbolic mode (``-rwxr-xr-x``; a symlink ``l -> TARGET``) of a .deb."""
    out = run(["dpkg-deb", "--contents", str(path)]).stdout
    files = {}
    for line in out.splitlines():
        mode, _owner, _size, _date, _time, name = line.split(None, 5)
        name = name[1:].rstrip("/") or "/"  # "./usr/bin/" -> "/usr/bin"
        if mode.startswith("l"):
            name, target = name.split(" -> ", 1)
            mode = "l -> " + target
        files[name] = mode
    return files


def deb_script(path: Path, script: str, dest: Path) -> str:
    """A maintainer script of a .deb (postinst, prerm, ...), '' if it has none."""
    control = dest / path.stem
    if not control.exists():
        run(["dpkg-deb", "--control", str(path), str(control)])
    script_path = control / script
    return script_path.read_text() if script_path.exists() else ""


#: The environment maintainer scripts and commands get inside a root (chroot).
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"}


def in_root(root: Path, *argv: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a command chrooted into ``root``, with a clean environment (no PYTHONPATH)."""
    kwargs.setdefault("timeout", 300)
    return run(["chroot", str(root)] + list(argv), env=CHROOT_ENV, check=check, **kwargs)


def debian_boot_root(dest: Path) -> Path:
    """A fresh Debian 12 root that boots (systemd, ssh, chrony, ifupdown, dhclient) and has
    every package the project's .deb files depend on, so dpkg installs them offline."""
    from testlib import DEBIAN_BOOT_PACKAGES
    require_root()
    try:
        extract_debian_root(dest, DEBIAN_BOOT_PACKAGES)
    except RuntimeError as exc:
        if IN_CI:
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    return dest


#: A root that is not booted must not start services from maintainer scripts, as
#: debootstrap and pbuilder do it: invoke-rc.d and deb-systemd-invoke ask policy-rc.d.
POLICY_RC_D = "/usr/sbin/policy-rc.d"


def dpkg_in_root(root: Path, *args: str, debs=(), check: bool = True) -> subprocess.CompletedProcess:
    """The root's own ``dpkg ARGS [DEB...]`` chrooted into it (the .deb files are copied
    to its /tmp first), with services kept from starting."""
    import shutil
    paths = []
    for deb in debs:
        shutil.copy(str(deb), str(root / "tmp" / deb.name))
        paths.append("/tmp/" + deb.name)
    policy = root / POLICY_RC_D.lstrip("/")
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    try:
        return in_root(root, "dpkg", *args, *paths, check=check)
    finally:
        policy.unlink()
        for path in paths:
            os.unlink(str(root) + path)
