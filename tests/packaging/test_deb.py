"""`make deb` builds the Debian packages that mirror the RPMs, and dpkg really installs,
registers, upgrades and removes them in a Debian 12 root.

The root is a cached debootstrap of bookworm with every package the .deb files depend
on; the packages are installed by the root's own dpkg, chrooted into it, so the
maintainer scripts run ``ovm-chkconfig``, ``py3compile``, ``deb-systemd-helper`` and
``update-rc.d`` as on a guest. Only service starts are held back (policy-rc.d), as in
any root that is not booted.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging_helpers import (
    CONFIGURE_PRIORITIES,
    MODULES,
    REPO,
    TARGETS,
    deb_field,
    deb_files,
    deb_script,
    debian_boot_root,
    dpkg_in_root,
    framework_sources,
    in_root,
    links,
    require_tool,
    run,
)

from ovmd import __version__ as VERSION

SITELIB = "/usr/lib/python3/dist-packages"
UNITDIR = "/lib/systemd/system"
SCRIPTDIR = "/usr/lib/ovm-template-config/scripts"
#: lintian warnings we accept, with the reason (README, "Debian packages").
ACCEPTED_WARNINGS = {
    # /var/lib/ovmd and /var/lib/ovm-template-config hold host messages and state: 0700,
    # as the RPM's %attr(0700).
    "non-standard-dir-perm",
    # The packages are not uploaded to Debian, so there is no ITP bug to close.
    "initial-upload-closes-no-bugs",
    # ovmd-xenstored is a development tool (documented in the README), not a guest command.
    "no-manual-page",
}


def lintian_tags(output: str):
    """(severity, package, tag, detail) of each ``X: package: tag detail`` line."""
    tags = []
    for line in output.splitlines():
        match = re.match(r"([EWIPX]): (\S+?)(?: \w+)?: (\S+)\s*(.*)$", line)
        if match:
            tags.append(match.groups())
    return tags


def test_packages_built(debs):
    expected = {"ovmd", "ovm-template-config"} | {"ovm-template-config-%s" % m for m in MODULES}
    assert set(debs) == expected
    for name, path in debs.items():
        assert path.name == "%s_%s-1_all.deb" % (name, VERSION)
        assert deb_field(path, "Architecture") == "all"
        assert deb_field(path, "Version") == "%s-1" % VERSION


def depends(path: Path):
    return [d.strip() for d in deb_field(path, "Depends").split(",")]


def test_dependencies_are_debians_packages(debs):
    version = "%s-1" % VERSION
    ovmd = depends(debs["ovmd"])
    assert {"python3", "python3-daemon", "ovm-template-config (= %s)" % version} <= set(ovmd), ovmd
    framework = depends(debs["ovm-template-config"])
    assert {"python3", "python3-pycdlib", "python3-simplejson", "ovmd (= %s)" % version} \
        <= set(framework), framework
    for module in MODULES:
        names = depends(debs["ovm-template-config-%s" % module])
        assert "ovm-template-config (= %s)" % version in names, names
    assert "python3-pyudev" in depends(debs["ovm-template-config-network"])
    # deb-systemd-invoke and invoke-rc.d --skip-systemd-native need it before unpacking.
    assert "init-system-helpers" in deb_field(debs["ovmd"], "Pre-Depends")


def test_ovmd_package_files(debs):
    files = deb_files(debs["ovmd"])
    for command in ("ovmd", "ovm-vmmessage", "ovmd-xenstored"):
        assert files["/usr/bin/%s" % command] == "-rwxr-xr-x"
    for source in sorted((REPO / "ovmd").rglob("*.py")):
        assert files.get("%s/%s" % (SITELIB, source.relative_to(REPO))) == "-rw-r--r--", source
    # Byte-code is compiled by py3compile in postinst, not shipped (Debian policy).
    assert not [name for name in files if "__pycache__" in name or name.endswith(".pyc")]
    assert files[UNITDIR + "/ovmd.service"] == "-rw-r--r--"
    assert files[UNITDIR + "/ovmd-initial-config-wait.service"] == "-rw-r--r--"
    assert files["/etc/init.d/ovmd"] == "-rwxr-xr-x"
    assert files["/etc/sysconfig/ovmd"] == "-rw-r--r--"
    assert files["/var/lib/ovmd"] == "drwx------"
    for page in ("ovmd.8.gz", "ovm-vmmessage.8.gz"):
        assert files["/usr/share/man/man8/" + page] == "-rw-r--r--"
    assert files["/usr/share/doc/ovmd/copyright"] == "-rw-r--r--"
    # EL's `service ovmd ACTION` helpers have no place on Debian (its `service` runs
    # /etc/init.d/ovmd ACTION for actions systemctl does not know).
    assert not [name for name in files if "legacy-actions" in name or "/rc.d/" in name]
    assert not [name for name in files if "templateconfig" in name or "template.d" in name]
    conffiles = deb_script(debs["ovmd"], "conffiles", debs["ovmd"].parent).split()
    assert sorted(conffiles) == ["/etc/init.d/ovmd", "/etc/sysconfig/ovmd"]


def test_framework_package_files(debs):
    files = deb_files(debs["ovm-template-config"])
    for command in ("ovm-template-config", "ovm-chkconfig"):
        assert files["/usr/bin/%s" % command] == "-rwxr-xr-x"
    for relative, is_module in framework_sources():
        name = "%s/%s" % (SITELIB, relative)
        if is_module:
            assert name not in files, "%s belongs to its module's package" % name
        else:
            assert files.get(name) == "-rw-r--r--", name
    for target in TARGETS:
        assert files["/etc/template.d/%s.d" % target] == "drwxr-xr-x"
    assert files["/etc/template.d/scripts"] == "drwxr-xr-x"
    assert not [name for name in files if name.startswith("/etc/template.d/scripts/")]
    assert files[UNITDIR + "/ovm-template-initial-config.service"] == "-rw-r--r--"
    assert files["/var/lib/ovm-template-config"] == "drwx------"
    conffiles = deb_script(debs["ovm-template-config"], "conffiles", debs["ovmd"].parent).split()
    assert sorted(conffiles) == ["/etc/logrotate.d/ovm-template-config",
                                 "/etc/sysconfig/ovm-template-initial-config"]


@pytest.mark.parametrize("module", MODULES)
def test_module_package(debs, module, tmp_path):
    package = debs["ovm-template-config-%s" % module]
    files = {name: mode for name, mode in deb_files(package).items()
             if not mode.startswith("d") and not name.startswith("/usr/share/doc/")}
    # The script is code: it lives under /usr; /etc/template.d/scripts/NAME (where the
    # framework looks for it) links to it, so it is no conffile and dpkg -r removes it.
    assert files == {
        "%s/%s" % (SCRIPTDIR, module): "-rwxr-xr-x",
        "/etc/template.d/scripts/%s" % module: "l -> %s/%s" % (SCRIPTDIR, module),
        "%s/templateconfig/modules/%s.py" % (SITELIB, module): "-rw-r--r--",
    }
    postinst = deb_script(package, "postinst", tmp_path)
    prerm = deb_script(package, "prerm", tmp_path)
    # Register on first install only, unregister on removal only (not on upgrade).
    assert 'if [ "$1" = configure ] && [ -z "$2" ]; then\n    ovm-chkconfig --add %s' % module \
        in postinst
    assert 'if [ "$1" = remove ]; then\n    ovm-chkconfig --del %s' % module in prerm
    assert "py3compile -p ovm-template-config-%s" % module in postinst
    assert deb_script(package, "conffiles", tmp_path) == ""


def test_services_enabled_the_debian_way(debs, tmp_path):
    postinst = deb_script(debs["ovmd"], "postinst", tmp_path)
    for unit in ("ovmd.service", "ovmd-initial-config-wait.service"):
        assert "deb-systemd-helper enable '%s'" % unit in postinst
    # Only the daemon is started on install; the first-boot wait runs only at boot.
    assert re.findall(r"deb-systemd-invoke \S+ '([^']+)'", postinst) == ["ovmd.service"]
    assert "update-rc.d ovmd defaults" in postinst
    framework = deb_script(debs["ovm-template-config"], "postinst", tmp_path)
    assert "deb-systemd-helper enable 'ovm-template-initial-config.service'" in framework
    assert "deb-systemd-invoke" not in framework


def test_no_file_in_two_packages(debs):
    owner = {}
    for package, path in debs.items():
        for name, mode in deb_files(path).items():
            if mode.startswith("d"):
                continue
            assert name not in owner, "%s is in both %s and %s" % (name, owner[name], package)
            owner[name] = package


def test_lintian_reports_no_errors(debs):
    """lintian on the build's .changes: no error, and only the warnings we accepted."""
    lintian = require_tool("lintian")
    changes = sorted(next(iter(debs.values())).parent.glob("*.changes"))
    assert len(changes) == 1, changes
    proc = run([lintian, "--no-tag-display-limit", str(changes[0])], check=False)
    tags = lintian_tags(proc.stdout)
    errors = [t for t in tags if t[0] == "E"]
    assert errors == [], proc.stdout
    unexpected = [t for t in tags if t[0] == "W" and t[2] not in ACCEPTED_WARNINGS]
    assert unexpected == [], proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- installed by dpkg in a Debian 12 root ----------------------------------------------------

@pytest.fixture(scope="module")
def deb_root(tmp_path_factory, debs) -> Path:
    """A Debian 12 root with every .deb installed by its own dpkg (read-only for the tests)."""
    root = debian_boot_root(tmp_path_factory.mktemp("deb-installed") / "root")
    dpkg_in_root(root, "-i", debs=debs.values())
    return root


def test_dpkg_installed_every_package(deb_root, debs):
    out = in_root(deb_root, "dpkg-query", "-W", "-f", "${Package} ${Status}\\n", *debs).stdout
    status = dict(line.split(" ", 1) for line in out.splitlines())
    assert status == {name: "install ok installed" for name in debs}
    # dpkg --verify: every file in place with its digest.
    assert in_root(deb_root, "dpkg", "--verify", *debs).stdout == ""


def test_postinst_registered_every_module(deb_root):
    expected = {"%02d%s" % (CONFIGURE_PRIORITIES[m], m): "../scripts/%s" % m for m in MODULES}
    assert links(deb_root, "configure") == expected
    out = in_root(deb_root, "ovm-chkconfig", "--list").stdout.splitlines()
    assert out[0].split() == ["name"] + list(TARGETS)
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert {m: rows[m][0] for m in rows} == {m: "on:%d" % CONFIGURE_PRIORITIES[m] for m in MODULES}


def test_units_enabled_and_sysv_links(deb_root):
    wants = deb_root / "etc/systemd/system/multi-user.target.wants"
    for unit in ("ovmd.service", "ovmd-initial-config-wait.service",
                 "ovm-template-initial-config.service"):
        assert (wants / unit).is_symlink() and \
            str((wants / unit).readlink()) == "%s/%s" % (UNITDIR, unit), unit
    # update-rc.d: S01 in the default runlevels (first, as Oracle's S00ovmd), K01 in 0/1/6.
    assert [p.name for p in sorted((deb_root / "etc/rc2.d").glob("S*ovmd"))] == ["S01ovmd"]
    assert [p.name for p in sorted((deb_root / "etc/rc0.d").glob("K*ovmd"))] == ["K01ovmd"]


@pytest.mark.parametrize("command", ["ovmd", "ovm-vmmessage", "ovm-template-config",
                                     "ovm-chkconfig", "ovmd-xenstored"])
def test_commands_run_with_debians_python(deb_root, command):
    out = in_root(deb_root, "/usr/bin/" + command, "--help")
    assert "usage" in out.stdout.lower()
    if command != "ovmd-xenstored":  # a development tool without --version
        out = in_root(deb_root, "/usr/bin/" + command, "--version")
        assert VERSION in out.stdout + out.stderr


def test_postinst_byte_compiled_the_modules(deb_root):
    """py3compile ran: the first boot compiles nothing."""
    tag = in_root(deb_root, "python3", "-c",
                  "import sys; print(sys.implementation.cache_tag)").stdout.strip()
    for module in MODULES:
        assert (deb_root / SITELIB.lstrip("/") / "templateconfig/modules/__pycache__" /
                ("%s.%s.pyc" % (module, tag))).is_file(), module
    assert (deb_root / SITELIB.lstrip("/") / "ovmd/__pycache__" / ("cli.%s.pyc" % tag)).is_file()


def test_remove_upgrade_and_purge_keep_the_registry_right(tmp_path, debs):
    """dpkg -r unregisters a module; reinstalling registers it again; an upgrade keeps a
    target switched off; removing every module leaves no link; purge removes the rest."""
    root = debian_boot_root(tmp_path / "root")
    dpkg_in_root(root, "-i", debs=debs.values())
    ssh = debs["ovm-template-config-ssh"]
    assert "70ssh" in links(root, "configure") and "30ssh" in links(root, "cleanup")

    dpkg_in_root(root, "-r", "ovm-template-config-ssh")
    for target in TARGETS:
        assert not [name for name in links(root, target) if name.endswith("ssh")], target
    assert not (root / "etc/template.d/scripts/ssh").exists()
    assert not (root / SCRIPTDIR.lstrip("/") / "ssh").exists()
    assert "90authentication" in links(root, "configure")  # the others stay
    listed = in_root(root, "ovm-chkconfig", "--list").stdout
    assert not re.search(r"^ssh\s", listed, re.M), listed

    dpkg_in_root(root, "-i", debs=[ssh])
    assert "70ssh" in links(root, "configure")

    # Installing the package again is an upgrade (postinst configure OLD-VERSION): the
    # target switched off stays off, the other stays on.
    in_root(root, "ovm-chkconfig", "--target", "configure", "ssh", "off")
    dpkg_in_root(root, "-i", debs=[ssh])
    assert "70ssh" not in links(root, "configure")
    assert "30ssh" in links(root, "cleanup")

    modules = [name for name in debs if name.startswith("ovm-template-config-")]
    dpkg_in_root(root, "-r", *modules)
    for target in TARGETS:
        assert links(root, target) == {}, target

    dpkg_in_root(root, "--purge", "ovmd", "ovm-template-config", *modules)
    assert not (root / "etc/sysconfig/ovmd").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants/ovmd.service").exists()
    assert not list((root / "etc/rc2.d").glob("S*ovmd"))
    leftovers = [str(p) for p in (root / SITELIB.lstrip("/")).glob("*") if p.name in
                 ("ovmd", "templateconfig")]
    assert leftovers == []


# --- make install with its defaults --------------------------------------------------------

def test_make_install_defaults_to_where_debians_python3_looks(tmp_path):
    """`make install` into a Debian root: the system python3 (PYTHONPATH unset, chrooted
    into the tree) finds the packages, because they went to its dist-packages."""
    root = debian_boot_root(tmp_path / "root")
    run(["make", "-s", "-C", str(REPO), "install", "DESTDIR=%s" % root], timeout=120)
    assert (root / SITELIB.lstrip("/") / "ovmd/cli.py").is_file()
    assert not list((root / "usr/lib").glob("python3.*/site-packages/ovmd"))
    out = in_root(root, "/usr/bin/ovmd", "--version")
    assert VERSION in out.stdout + out.stderr
    out = in_root(root, "/usr/bin/python3", "-c", "import templateconfig.run.runner, ovmd.daemon")
    assert out.returncode == 0


def test_make_install_sitelib_override(tmp_path):
    dest = tmp_path / "dest"
    run(["make", "-s", "-C", str(REPO), "install", "DESTDIR=%s" % dest,
         "SITELIB=/opt/ovmd/lib"], timeout=120)
    assert (dest / "opt/ovmd/lib/ovmd/cli.py").is_file()
    assert not (dest / SITELIB.lstrip("/")).exists()


@pytest.mark.parametrize("python,prefix,expected", [
    ("/usr/bin/python3", "/usr", "/usr/lib/python3/dist-packages"),
    ("/usr/bin/python3", "/usr/local", "/usr/local/lib/python3.%d/dist-packages"),
])
def test_python_sitelib_follows_debians_site(python, prefix, expected):
    minor = int(run([python, "-c", "import sys; print(sys.version_info[1])"]).stdout)
    out = run([python, str(REPO / "scripts/python-sitelib.py"), prefix]).stdout.strip()
    assert out == (expected % minor if "%d" in expected else expected)
    searched = run([python, "-c", "import sys; print('\\n'.join(sys.path))"]).stdout.split()
    assert out in searched
