"""`make rpm` builds the packages we promise, with the right files, modes and scriptlets,
and `make install DESTDIR=...` lays out exactly what the RPMs hold."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from packaging_helpers import MODULES, REPO, TARGETS, framework_sources, rpm_files, rpm_scripts, run

SYSCONF = "/etc"
COMMANDS_OVMD = ("ovmd", "ovm-vmmessage", "ovmd-xenstored")
COMMANDS_FRAMEWORK = ("ovm-template-config", "ovm-chkconfig")


#: The byte-code tag of the python3 that builds the RPMs (scripts/install-tree compiles).
BUILD_CACHE_TAG = subprocess.run(["/usr/bin/python3", "-c",
                                  "import sys; print(sys.implementation.cache_tag)"],
                                 capture_output=True, text=True, check=True).stdout.strip()


def sitelib_of(files) -> str:
    """The python site directory a build used (where ovmd/__init__.py or cli.py lives)."""
    for name in files:
        if name.endswith("/templateconfig/__init__.py") or name.endswith("/ovmd/__init__.py"):
            return name.rsplit("/", 2)[0]
    raise AssertionError("no Python package in %s" % sorted(files))


def man(files, page: str) -> str:
    """The man page's file name in a package (brp-compress may have gzipped it)."""
    found = [name for name in files if name in ("/usr/share/man/man8/%s" % page,
                                                "/usr/share/man/man8/%s.gz" % page)]
    assert len(found) == 1, "man page %s not packaged: %s" % (page, sorted(files))
    return found[0]


def test_packages_built(rpms):
    expected = {"ovmd", "ovm-template-config"} | {"ovm-template-config-%s" % m for m in MODULES}
    assert set(rpms) == expected
    for path in rpms.values():
        assert path.name.endswith(".noarch.rpm")


def test_ovmd_package_files(rpms):
    files = rpm_files(rpms["ovmd"])
    sitelib = sitelib_of(files)
    for command in COMMANDS_OVMD:
        assert files["/usr/bin/%s" % command] == "-rwxr-xr-x"
    for source in sorted((REPO / "ovmd").rglob("*.py")):
        relative = source.relative_to(REPO)
        name = "%s/%s" % (sitelib, relative)
        assert files.get(name) == "-rw-r--r--", name
        compiled = "%s/%s/__pycache__/%s.%s.pyc" % (sitelib, relative.parent, source.stem,
                                                   BUILD_CACHE_TAG)
        assert files.get(compiled) == "-rw-r--r--", compiled
    assert files["/usr/lib/systemd/system/ovmd.service"] == "-rw-r--r--"
    assert files["/etc/rc.d/init.d/ovmd"] == "-rwxr-xr-x"
    for action in ("enable-initial-config", "disable-initial-config"):
        assert files["/usr/libexec/initscripts/legacy-actions/ovmd/%s" % action] == "-rwxr-xr-x"
    assert files["/etc/sysconfig/ovmd"] == "-rw-r--r--"
    assert files["/var/lib/ovmd"] == "drwx------"
    for page in ("ovmd.8", "ovm-vmmessage.8"):
        assert files[man(files, page)] == "-rw-r--r--"
    for completion in ("ovmd", "ovm-vmmessage"):
        assert files["/usr/share/bash-completion/completions/%s" % completion] == "-rw-r--r--"
    # Nothing of the framework's.
    assert not [name for name in files if "/templateconfig/" in name or "template.d" in name]


def test_framework_package_files(rpms):
    files = rpm_files(rpms["ovm-template-config"])
    sitelib = sitelib_of(files)
    for command in COMMANDS_FRAMEWORK:
        assert files["/usr/bin/%s" % command] == "-rwxr-xr-x"
    for relative, is_module in framework_sources():
        name = "%s/%s" % (sitelib, relative)
        if is_module:
            assert name not in files, "%s belongs to its module's package" % name
        else:
            assert files.get(name) == "-rw-r--r--", name
            compiled = "%s/%s/__pycache__/%s.%s.pyc" % (sitelib, relative.parent, relative.stem,
                                                       BUILD_CACHE_TAG)
            assert files.get(compiled) == "-rw-r--r--", compiled
    assert files["%s/templateconfig/sdk.py" % sitelib] == "-rw-r--r--"
    assert files["/etc/template.d"] == "drwxr-xr-x"
    assert files["/etc/template.d/scripts"] == "drwxr-xr-x"
    for target in TARGETS:
        assert files["/etc/template.d/%s.d" % target] == "drwxr-xr-x"
    # No module script in the framework: each comes with its package.
    assert not [name for name in files if name.startswith("/etc/template.d/scripts/")]
    assert files["/usr/lib/systemd/system/ovm-template-initial-config.service"] == "-rw-r--r--"
    assert files["/etc/sysconfig/ovm-template-initial-config"] == "-rw-r--r--"
    assert files["/etc/logrotate.d/ovm-template-config"] == "-rw-r--r--"
    assert files["/var/lib/ovm-template-config"] == "drwx------"
    for page in ("ovm-template-config.8", "ovm-chkconfig.8"):
        assert files[man(files, page)] == "-rw-r--r--"
    for completion in COMMANDS_FRAMEWORK:
        assert files["/usr/share/bash-completion/completions/%s" % completion] == "-rw-r--r--"


@pytest.mark.parametrize("module", MODULES)
def test_module_package(rpms, module):
    package = rpms["ovm-template-config-%s" % module]
    files = rpm_files(package)
    sitelib = sitelib_of(rpm_files(rpms["ovm-template-config"]))
    assert files == {
        "/etc/template.d/scripts/%s" % module: "-rwxr-xr-x",
        "%s/templateconfig/modules/%s.py" % (sitelib, module): "-rw-r--r--",
        # byte-compiled at build time (the build's python3), so first boot compiles nothing
        "%s/templateconfig/modules/__pycache__/%s.%s.pyc" % (sitelib, module, BUILD_CACHE_TAG):
            "-rw-r--r--",
    }
    scripts = rpm_scripts(package)
    # Register on first install ($1 == 1), unregister on the final erase ($1 == 0): an
    # upgrade keeps what the administrator switched off.
    post = scripts.split("postinstall scriptlet")[1].split("preuninstall scriptlet")[0]
    preun = scripts.split("preuninstall scriptlet")[1]
    assert '[ "$1" -eq 1 ]' in post and "/usr/bin/ovm-chkconfig --add %s" % module in post
    assert '[ "$1" -eq 0 ]' in preun and "/usr/bin/ovm-chkconfig --del %s" % module in preun
    requires = run(["rpm", "-qp", "--qf", "[%{REQUIRENAME} %{REQUIREFLAGS:deptype}\\n]",
                    str(package)]).stdout.splitlines()
    # The scriptlets need ovm-chkconfig while they run: Requires(post) and Requires(preun).
    for kind in ("manual", "post", "preun"):
        assert "ovm-template-config %s" % kind in requires, requires


def test_no_file_in_two_packages(rpms):
    owner = {}
    for package, path in rpms.items():
        for name, mode in rpm_files(path).items():
            if mode.startswith("d") and name in owner:
                continue  # shared directories are allowed
            assert name not in owner, "%s is in both %s and %s" % (name, owner.get(name), package)
            owner[name] = package


def test_config_files_are_noreplace(rpms):
    config = run(["rpm", "-qcp", str(rpms["ovmd"]), str(rpms["ovm-template-config"])]).stdout.split()
    assert sorted(config) == ["/etc/logrotate.d/ovm-template-config", "/etc/sysconfig/ovm-template-initial-config",
                              "/etc/sysconfig/ovmd"]
    flags = run(["rpm", "-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\\n]", str(rpms["ovmd"])]).stdout
    assert "cn /etc/sysconfig/ovmd" in flags  # %config(noreplace)


def test_daemon_scriptlets_are_guarded(rpms):
    """Debian's rpmbuild has no %systemd_post: the spec must not leave it unexpanded."""
    scripts = rpm_scripts(rpms["ovmd"])
    assert "%systemd" not in scripts
    assert "chkconfig --add ovmd" in scripts and "chkconfig --del ovmd" in scripts


def _tree(root: Path):
    """Path -> symbolic mode of everything under root (man pages without .gz)."""
    tree = {}
    for path in sorted(root.rglob("*")):
        name = "/" + str(path.relative_to(root))
        tree[name] = stat.filemode(os.lstat(path).st_mode)
    return tree


def test_make_install_matches_the_rpms(debian_rpms, tmp_path):
    """`make install` with its defaults on this Debian machine puts the packages in
    Debian's dist-packages, where the debian_rpms build puts them too."""
    dest = tmp_path / "destdir"
    run(["make", "-s", "-C", str(REPO), "install", "DESTDIR=%s" % dest], timeout=120)
    installed = _tree(dest)
    packaged = {}
    for path in debian_rpms.values():
        for name, mode in rpm_files(path).items():
            if name.startswith("/usr/share/man/") and name.endswith(".gz"):
                name = name[:-3]
            packaged[name] = mode
    # Every packaged path is installed with the same mode ...
    differences = {name: (mode, installed.get(name)) for name, mode in packaged.items()
                   if installed.get(name) != mode}
    assert differences == {}
    # ... and every installed file is packaged (directories may be implied parents).
    extra = [name for name, mode in installed.items()
             if name not in packaged and not mode.startswith("d")]
    assert extra == []


def test_spec_names_each_standard_module_once():
    """The modules macro (used for the framework's %exclude lines) and the %module_package
    lines must list the same modules, or a module .py would land in two packages or none."""
    import re
    spec = (REPO / "packaging" / "ovmd.spec").read_text()
    macro = re.search(r"^%global modules (.*)$", spec, re.M).group(1).split()
    packages = re.findall(r"^%module_package (\S+)$", spec, re.M)
    assert sorted(macro) == sorted(packages) == sorted(MODULES)
    assert sorted(p.name for p in (REPO / "template.d" / "scripts").iterdir()) == sorted(MODULES)
