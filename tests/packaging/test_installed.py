"""The RPMs installed by rpm into a minimal Debian root: files, scriptlets, commands.

rpm chroots into the root to run the scriptlets, so the module packages' ``%post``
really runs ``/usr/bin/ovm-chkconfig --add NAME`` with the root's python3 and the
installed packages: what a guest does on ``yum install``.
"""
from __future__ import annotations

import subprocess

import pytest
from packaging_helpers import (
    CONFIGURE_PRIORITIES,
    MODULES,
    TARGETS,
    debian_root,
    in_root,
    links,
    rpm_root,
)


def test_installed_files_verify(installed_root, debian_rpms):
    """rpm -V: every packaged file is in place with its mode, owner and digest."""
    names = list(debian_rpms)
    # --nodeps: the root's python3 is dpkg's, unknown to its rpm database (see rpm_root).
    out = rpm_root(installed_root, "-V", "--nodeps", *names, check=False)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert sorted(rpm_root(installed_root, "-qa", "--qf", "%{NAME}\\n").stdout.split()) == sorted(names)


def test_install_registered_every_module(installed_root):
    expected = {"%02d%s" % (CONFIGURE_PRIORITIES[m], m): "../scripts/%s" % m for m in MODULES}
    assert links(installed_root, "configure") == expected
    for name, target in expected.items():
        assert (installed_root / "etc/template.d/configure.d" / name).resolve() == \
            installed_root / "etc/template.d/scripts" / name[2:]


def test_chkconfig_lists_the_modules_in_the_root(installed_root):
    out = in_root(installed_root, "ovm-chkconfig", "--list").stdout.splitlines()
    assert out[0].split() == ["name"] + list(TARGETS)
    rows = {line.split()[0]: line.split()[1:] for line in out[1:]}
    assert sorted(rows) == sorted(MODULES)
    for module in MODULES:
        assert rows[module][0] == "on:%d" % CONFIGURE_PRIORITIES[module]


@pytest.mark.parametrize("command", ["ovmd", "ovm-vmmessage", "ovm-template-config", "ovm-chkconfig",
                                     "ovmd-xenstored"])
def test_commands_start_in_the_root(installed_root, command):
    """The launchers find their packages with nothing but Debian's python3."""
    out = in_root(installed_root, "/usr/bin/%s" % command, "--help")
    assert "usage" in out.stdout.lower()


def test_runtime_needs_only_the_standard_library(installed_root):
    """Import every installed module with the root's python3: the spec requires only python3."""
    code = ("import pkgutil, importlib, sys\n"
            "import ovmd, templateconfig\n"
            "bad = []\n"
            "for pkg in (ovmd, templateconfig):\n"
            "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        try:\n"
            "            importlib.import_module(info.name)\n"
            "        except Exception as exc:\n"
            "            bad.append('%s: %r' % (info.name, exc))\n"
            "print('\\n'.join(bad))\n"
            "sys.exit(1 if bad else 0)\n")
    out = in_root(installed_root, "python3", "-s", "-c", code, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


def test_sysv_script_status_in_the_root(installed_root):
    script = "/etc/rc.d/init.d/ovmd"
    stopped = in_root(installed_root, script, "status", check=False)
    assert (stopped.returncode, stopped.stdout.strip()) == (3, "ovmd is stopped")
    sleeper = subprocess.Popen(["sleep", "60"])
    pid_dir = installed_root / "run/ovmd"
    pid_dir.mkdir(parents=True, exist_ok=True)
    try:
        (pid_dir / "ovmd.pid").write_text("%d\n" % sleeper.pid)
        running = in_root(installed_root, script, "status", check=False)
        assert (running.returncode, running.stdout.strip()) == (0, "ovmd (pid %d) is running" % sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
        (pid_dir / "ovmd.pid").unlink()
    unknown = in_root(installed_root, script, "frobnicate", check=False)
    assert unknown.returncode == 2 and "Usage:" in unknown.stderr


def test_erase_and_upgrade_keep_the_registry_right(tmp_path, debian_rpms):
    """rpm -e unregisters a module; an upgrade keeps what the administrator switched off."""
    root = debian_root(tmp_path / "root")
    rpm_root(root, "-ivh", *[str(p) for p in debian_rpms.values()])
    assert "70ssh" in links(root, "configure") and "30ssh" in links(root, "cleanup")

    rpm_root(root, "-e", "ovm-template-config-ssh")
    for target in TARGETS:
        assert not [name for name in links(root, target) if name.endswith("ssh")], target
    assert not (root / "etc/template.d/scripts/ssh").exists()
    assert "90authentication" in links(root, "configure")  # the others stay

    rpm_root(root, "-ivh", str(debian_rpms["ovm-template-config-ssh"]))
    assert "70ssh" in links(root, "configure")

    # Reinstalling ($1 == 2 in %post, 1 in %preun) must not re-enable or drop it.
    in_root(root, "ovm-chkconfig", "--target", "configure", "ssh", "off")
    rpm_root(root, "-Uvh", "--replacepkgs", str(debian_rpms["ovm-template-config-ssh"]))
    assert "70ssh" not in links(root, "configure")
    assert "30ssh" in links(root, "cleanup")

    # Erasing everything leaves no links behind.
    rpm_root(root, "-e", *[name for name in debian_rpms if name.startswith("ovm-template-config-")])
    for target in TARGETS:
        assert links(root, target) == {}, target
