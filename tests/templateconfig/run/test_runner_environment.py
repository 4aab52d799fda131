"""Commands for the running system that cannot work on this kind of guest are warnings;
one that fails for real still fails its module, with one line saying what failed.

These run where commands for the running system really run: a fixture root as a
guest's running system (``runner_helpers.RunningGuest``: chroot, own mount and UTS
namespaces, this machine's tools). The guest has no RTC (as a Xen PV guest) and no
running systemd (as a container), so the real ``hwclock`` and ``systemctl start`` fail
there; with ``rtc=True`` it has a ``/dev/rtc0`` that is no clock, so ``hwclock`` fails
for a reason that is not the guest's kind.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from runner_helpers import RunningGuest
from testlib import bin_path

from ovmd.runreport import read_report

D = "com.oracle.linux.datetime."
RUNNER = bin_path("ovm-template-config")
NTP = {D + "utc": "True", D + "ntp": "True", D + "ntp-servers": "192.0.2.1",
       D + "timezone": "Europe/Paris"}


def configure(guest, params):
    return guest.run([RUNNER, "--stdin", "--json", "configure"], json.dumps(params))


def status(guest, *options):
    """``ovmd --status`` from outside (no daemon for this root: the files decide)."""
    return subprocess.run([bin_path("ovmd"), "--root", str(guest.root), "--status"]
                          + list(options), capture_output=True, text=True, timeout=60)


@pytest.fixture
def debian(tmp_path):
    return RunningGuest(tmp_path / "root", "debian12", ["selinux", "datetime"])


def test_no_rtc_and_no_service_manager_are_warnings_and_the_module_does_the_rest(debian):
    proc = configure(debian, dict(NTP, **{"com.oracle.linux.selinux.mode": "enforcing"}))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report == read_report(debian.paths)
    assert (report["status"], report["warnings"]) == ("done", 3)
    modules = {m["name"]: m for m in report["modules"]}
    assert modules["datetime"]["status"] == "ok" and modules["datetime"]["error"] is None
    hwclock, start = modules["datetime"]["warnings"]
    assert hwclock.startswith("hwclock --systohc --utc: this guest has no hardware clock "
                              "(RTC; Xen PV guests and containers have none); ignored "
                              "(hwclock: ")
    assert start.startswith("systemctl --no-block restart chrony: no service manager is running")
    [selinux] = modules["selinux"]["warnings"]
    assert selinux.endswith("com.oracle.linux.selinux.mode=enforcing ignored")
    # the rest was done after the hwclock warning: chrony configured, enabled, started
    root = debian.root
    assert "server 192.0.2.1" in (root / "etc/chrony/sources.d/ovm.sources").read_text()
    assert os.path.islink(root / "etc/systemd/system/multi-user.target.wants/chrony.service")
    assert os.readlink(root / "etc/localtime").endswith("Europe/Paris")
    # the command's own stderr says so, one line per warning
    assert "ovm-template-config: datetime: warning: hwclock --systohc --utc: this guest " \
           "has no hardware clock" in proc.stderr
    log = (root / "var/log/ovm-template-config.log").read_text()
    assert "configure: datetime: warning: systemctl --no-block restart chrony: no service " \
           "manager" in log

    shown = status(debian)
    assert shown.returncode == 2, shown.stdout + shown.stderr  # degraded, as cloud-init
    assert shown.stdout.startswith("status: done (degraded)\n")
    assert "last run: configure done with 3 warnings" in shown.stdout
    assert "      warning: hwclock --systohc --utc: this guest has no hardware clock" \
        in shown.stdout
    assert "stderr:" not in shown.stdout
    long = status(debian, "--long")
    assert long.returncode == 2
    assert "      stderr:\n        warning: hwclock --systohc --utc" in long.stdout
    as_json = json.loads(status(debian, "--json").stdout)
    assert (as_json["status"], as_json["degraded"]) == ("done", True)
    assert as_json["last_run"]["modules"][1]["stderr"].startswith("warning: hwclock")


def test_hwclock_failing_on_a_guest_with_an_rtc_fails_the_module_in_one_line(tmp_path):
    guest = RunningGuest(tmp_path / "root", "debian12", ["datetime"], rtc=True)
    proc = configure(guest, {D + "utc": "True"})
    assert proc.returncode == 1, proc.stderr
    [module] = json.loads(proc.stdout)["modules"]
    assert module["status"] == "failed"
    error = module["error"]
    assert error.startswith("command hwclock --systohc --utc failed with exit code 1: hwclock: ")
    assert "\n" not in error and "Traceback" not in error
    assert "Traceback (most recent call last):" in module["stderr"]  # kept for --long
    assert proc.stderr.splitlines()[-1] == "ovm-template-config: datetime failed: " + error
    shown = status(guest)
    assert shown.returncode == 1
    assert "datetime           50  failed" in shown.stdout and "error: " + error in shown.stdout
