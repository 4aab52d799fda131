"""The module SDK: the skeleton it writes obeys the module contract, runs under the real
runner, and builds an RPM whose scriptlets register it, in a real root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging_helpers import (
    REPO,
    bin_path,
    debian_root,
    require_tool,
    rpm_files,
    rpm_root,
    rpm_scripts,
    run,
)

from templateconfig import sdk
from templateconfig.header import parse_header

NAME = "acme-app"
PACKAGE = "ovm-template-config-%s" % NAME
KEY = "com.acme.%s.message" % NAME


def module_env(root: Path, **extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OVM_TEMPLATE_CONFIG_ROOT=str(root))
    env.pop("OVM_TEMPLATE_CONFIG_DRY_RUN", None)
    env.update(extra)
    return env


@pytest.fixture
def skeleton(tmp_path) -> Path:
    written = sdk.create_module(NAME, str(tmp_path), priority_configure=55, vendor_prefix="com.acme")
    directory = tmp_path / PACKAGE
    assert written == [str(directory / f) for f in (NAME, "%s.spec" % PACKAGE, "Makefile", "README.md")]
    return directory


def test_files_and_modes(skeleton):
    assert oct((skeleton / NAME).stat().st_mode & 0o777) == "0o755"
    script = (skeleton / NAME).read_text()
    assert script.startswith("#!/usr/bin/env python3\n")
    assert "from templateconfig.cli import main" in script
    assert "from templateconfig.common import write_file" in script
    for other in ("%s.spec" % PACKAGE, "Makefile", "README.md"):
        assert oct((skeleton / other).stat().st_mode & 0o777) == "0o644"
    assert "noarch" in (skeleton / ("%s.spec" % PACKAGE)).read_text().lower()


def test_header_is_what_ovm_chkconfig_reads(skeleton):
    info = parse_header(str(skeleton / NAME), strict_name=True)
    assert info.name == NAME
    assert info.targets == {"configure": 55}


def test_enumerate(skeleton, tmp_path):
    proc = subprocess.run([sys.executable, str(skeleton / NAME), "--enumerate", "configure"],
                          capture_output=True, text=True, env=module_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    descriptors = json.loads(proc.stdout)
    assert [d["key"] for d in descriptors] == [KEY]
    assert {"description", "required"} <= set(descriptors[0])


def test_configure_writes_through_the_root(skeleton, tmp_path):
    root = tmp_path / "sandbox"
    root.mkdir()
    params = {KEY: "hello", "com.oracle.linux.root-password": "x"}
    proc = subprocess.run([sys.executable, str(skeleton / NAME), "configure"],
                          input=json.dumps(params), capture_output=True, text=True,
                          env=module_env(root))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == params
    assert (root / ("etc/%s.conf" % NAME)).read_text() == "message=hello\n"
    # Run twice, same tree.
    again = subprocess.run([sys.executable, str(skeleton / NAME), "configure"],
                           input=json.dumps(params), capture_output=True, text=True,
                           env=module_env(root))
    assert again.returncode == 0
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == ["etc", "etc/%s.conf" % NAME]


def test_configure_in_dry_run_touches_nothing(skeleton, tmp_path):
    root = tmp_path / "sandbox"
    root.mkdir()
    proc = subprocess.run([sys.executable, str(skeleton / NAME), "configure"],
                          input=json.dumps({KEY: "hello"}), capture_output=True, text=True,
                          env=module_env(root, OVM_TEMPLATE_CONFIG_DRY_RUN="1"))
    assert proc.returncode == 0, proc.stderr
    assert list(root.iterdir()) == []


def test_runs_under_the_real_runner(skeleton, tmp_path):
    """Registered with ovm-chkconfig in a sandbox root and run by ovm-template-config."""
    root = tmp_path / "guest"
    scripts = root / "etc/template.d/scripts"
    scripts.mkdir(parents=True)
    (scripts / NAME).write_bytes((skeleton / NAME).read_bytes())
    (scripts / NAME).chmod(0o755)
    env = module_env(root)
    run([bin_path("ovm-chkconfig"), "--root", str(root), "--add", NAME], env=env)
    assert os.readlink(root / ("etc/template.d/configure.d/55%s" % NAME)) == "../scripts/%s" % NAME
    proc = run([bin_path("ovm-template-config"), "--root", str(root), "--stdin", "configure"],
               input=json.dumps({KEY: "from the runner"}), env=env, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (root / ("etc/%s.conf" % NAME)).read_text() == "message=from the runner\n"


@pytest.mark.parametrize("name, fragment", [
    ("Bad", "invalid module name"),
    ("-x", "invalid module name"),
    ("", "invalid module name"),
    ("a/b", "invalid module name"),
    ("a b", "invalid module name"),
    ("ssh", "taken by a standard module"),
])
def test_bad_names_are_refused(tmp_path, name, fragment):
    with pytest.raises(sdk.SDKError, match=fragment):
        sdk.create_module(name, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_bad_priority_and_vendor_are_refused(tmp_path):
    with pytest.raises(sdk.SDKError, match="priority"):
        sdk.create_module("x", str(tmp_path), priority_configure=100)
    with pytest.raises(sdk.SDKError, match="vendor prefix"):
        sdk.create_module("x", str(tmp_path), vendor_prefix="Example")


def test_existing_directory_is_kept_unless_forced(skeleton):
    (skeleton / NAME).write_text("mine\n")
    with pytest.raises(sdk.SDKError, match="already exists"):
        sdk.create_module(NAME, str(skeleton.parent))
    assert (skeleton / NAME).read_text() == "mine\n"
    sdk.create_module(NAME, str(skeleton.parent), force=True)
    assert (skeleton / NAME).read_text().startswith("#!/usr/bin/env python3")


def test_as_a_process(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ok = subprocess.run([sys.executable, "-m", "templateconfig.sdk", "widget", "--dest", str(tmp_path)],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[0] == str(tmp_path / "ovm-template-config-widget" / "widget")
    bad = subprocess.run([sys.executable, "-m", "templateconfig.sdk", "Widget", "--dest", str(tmp_path)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2
    assert "invalid module name 'Widget'" in bad.stderr


@pytest.fixture(scope="module")
def sdk_rpm(tmp_path_factory) -> Path:
    require_tool("rpmbuild")
    dest = tmp_path_factory.mktemp("sdk")
    sdk.create_module(NAME, str(dest), priority_configure=55, vendor_prefix="com.acme")
    run(["make", "-s", "-C", str(dest / PACKAGE), "rpm"], timeout=300)
    built = sorted((dest / PACKAGE / "rpmbuild" / "RPMS").rglob("*.rpm"))
    assert [p.name for p in built] == ["%s-1.0-1.noarch.rpm" % PACKAGE]
    return built[0]


def test_rpm_contents_and_scriptlets(sdk_rpm):
    files = rpm_files(sdk_rpm)
    assert files == {"/etc/template.d/scripts/%s" % NAME: "-rwxr-xr-x",
                     "/usr/share/doc/%s/README.md" % PACKAGE: "-rw-r--r--"}
    scripts = rpm_scripts(sdk_rpm)
    post = scripts.split("postinstall scriptlet")[1].split("preuninstall scriptlet")[0]
    preun = scripts.split("preuninstall scriptlet")[1]
    assert 'if [ "$1" -eq 1 ]; then /usr/bin/ovm-chkconfig --add %s || :; fi' % NAME in post
    assert 'if [ "$1" -eq 0 ]; then /usr/bin/ovm-chkconfig --del %s || :; fi' % NAME in preun


def test_rpm_installs_registers_runs_and_erases(sdk_rpm, debian_rpms, tmp_path):
    root = debian_root(tmp_path / "root")
    rpm_root(root, "-ivh", *[str(p) for p in debian_rpms.values()], str(sdk_rpm))
    link = root / ("etc/template.d/configure.d/55%s" % NAME)
    assert os.readlink(link) == "../scripts/%s" % NAME
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    proc = run(["chroot", str(root), "/etc/template.d/scripts/%s" % NAME, "configure"],
               input=json.dumps({KEY: "in the root"}), env=env)
    assert json.loads(proc.stdout) == {KEY: "in the root"}
    assert (root / ("etc/%s.conf" % NAME)).read_text() == "message=in the root\n"
    rpm_root(root, "-e", PACKAGE)
    assert not os.path.lexists(link)
