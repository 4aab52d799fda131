"""The boot-time services: systemd units that systemd itself accepts, a SysV script that
parses and answers as LSB says.

``systemd-analyze verify`` checks that each ExecStart= binary exists and that the
Documentation= man pages resolve, on this machine. So the units are verified as
installed by ``make install DESTDIR=...``, with their absolute /usr/bin paths pointed
into that tree and MANPATH aimed at its man pages; nothing else is changed. (Its
``--root`` option does not help: it then wants a whole systemd tree in the root.)
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from packaging_helpers import REPO, require_tool, run

UNITS = ("ovmd.service", "ovmd-initial-config-wait.service", "ovm-template-initial-config.service")
SYSV = REPO / "packaging" / "sysv" / "ovmd"


@pytest.fixture(scope="module")
def install_tree(tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("destdir")
    run(["make", "-s", "-C", str(REPO), "install", "DESTDIR=%s" % dest], timeout=120)
    return dest


def verify(tmp_path: Path, tree: Path, unit: str, text: str) -> subprocess.CompletedProcess:
    analyze = require_tool("systemd-analyze")
    copy = tmp_path / unit
    copy.write_text(text.replace("/usr/bin/", "%s/usr/bin/" % tree))
    env = dict(os.environ, MANPATH=str(tree / "usr/share/man"), SYSTEMD_LOG_COLOR="0")
    return subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=60)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(install_tree, tmp_path, unit):
    text = (install_tree / "usr/lib/systemd/system" / unit).read_text()
    proc = verify(tmp_path, install_tree, unit, text)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_verify_catches_a_broken_unit(install_tree, tmp_path):
    """The check above can fail: a typo in a key and a missing binary are both reported."""
    text = (install_tree / "usr/lib/systemd/system/ovmd.service").read_text()
    proc = verify(tmp_path, install_tree, "ovmd.service",
                  text.replace("Restart=", "Restrat=").replace("/usr/bin/ovmd ", "/usr/bin/ovmd-missing "))
    assert "Unknown key" in proc.stderr and "ovmd-missing" in proc.stderr


def test_units_run_what_the_packages_install(install_tree):
    ovmd = (install_tree / "usr/lib/systemd/system/ovmd.service").read_text()
    assert "ExecStart=/usr/bin/ovmd --foreground $OVMD_OPTIONS" in ovmd and "Type=notify" in ovmd
    # the options come from the sysconfig file, which may be absent ("-")
    assert "EnvironmentFile=-/etc/sysconfig/ovmd" in ovmd
    assert "Documentation=man:ovmd(8)" in ovmd
    initial = (install_tree / "usr/lib/systemd/system/ovm-template-initial-config.service").read_text()
    assert "ExecStart=/usr/bin/ovm-template-config " in initial
    assert "EnvironmentFile=-/etc/sysconfig/ovm-template-initial-config" in initial


def test_sysv_script_parses():
    sh = require_tool("sh")
    proc = subprocess.run([sh, "-n", str(SYSV)], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_sysv_script_unknown_action_is_usage_error():
    proc = subprocess.run(["sh", str(SYSV), "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("Usage:") and "enable-initial-config" in proc.stderr
    assert proc.stdout == ""


def test_sysv_script_starts_the_daemon_with_ovmd_options(tmp_path):
    """The SysV script sources /etc/sysconfig/ovmd and starts ovmd with OVMD_OPTIONS
    (its paths aimed into a sandbox; ovmd a stub that records its arguments)."""
    stub = tmp_path / "ovmd"
    stub.write_text('#!/bin/sh\nprintf "%%s\\n" "$@" > %s/args\n' % tmp_path)
    stub.chmod(0o755)
    (tmp_path / "sysconfig").write_text("INITIAL_CONFIG=no\nQUIET_PERIOD=0.1\n"
                                       'OVMD_OPTIONS="-d 1 --quiet-period 2"\n')
    script = tmp_path / "ovmd.init"
    script.write_text(SYSV.read_text()
                      .replace("/usr/bin/ovmd", str(stub))
                      .replace("/etc/sysconfig/ovm-template-initial-config",
                               str(tmp_path / "none"))
                      .replace("/etc/sysconfig/ovmd", str(tmp_path / "sysconfig"))
                      .replace("/var/run/ovmd/ovmd.pid", str(tmp_path / "ovmd.pid")))
    proc = subprocess.run(["sh", str(script), "start"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "args").read_text().split("\n")[:-1] == [
        "-f", str(tmp_path / "ovmd.pid"), "-d", "1", "--quiet-period", "2"]


def test_sysv_script_has_chkconfig_and_lsb_headers():
    text = SYSV.read_text()
    assert "# chkconfig: 2345" in text
    assert "### BEGIN INIT INFO" in text and "# Provides: ovmd" in text


def test_legacy_actions_call_ovmd(install_tree):
    """`service ovmd enable-initial-config` on systemd guests runs these."""
    directory = install_tree / "usr/libexec/initscripts/legacy-actions/ovmd"
    for action in ("enable-initial-config", "disable-initial-config"):
        script = directory / action
        assert os.access(script, os.X_OK)
        assert "exec /usr/bin/ovmd --%s" % action in script.read_text()
        assert subprocess.run(["sh", "-n", str(script)]).returncode == 0


def test_ovmd_service_gives_the_shutdown_target_its_time(install_tree):
    """The daemon may take SHUTDOWN_TIMEOUT (default), then its grace and its wait for the
    runner, to stop at a guest shutdown: TimeoutStopSec covers it (a larger setting asks
    systemd for more with EXTEND_TIMEOUT_USEC)."""
    from ovmd.daemon.lifecycle import DEFAULT_SHUTDOWN_TIMEOUT, SHUTDOWN_GRACE, STOP_WAIT

    unit = (install_tree / "usr/lib/systemd/system/ovmd.service").read_text()
    seconds = [int(line.split("=", 1)[1].rstrip("s")) for line in unit.splitlines()
               if line.startswith("TimeoutStopSec=")]
    assert seconds and seconds[0] > DEFAULT_SHUTDOWN_TIMEOUT + SHUTDOWN_GRACE + STOP_WAIT
