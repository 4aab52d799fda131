"""Which failures of a command for the running system are this kind of guest's, not the
command's (templateconfig.environment), and how system_cmd turns them into warnings.

The rules look at the running system: here a tree standing for it (``system_root``),
with or without an RTC, SELinux, a running systemd. The commands are real where this
machine has them (hwclock, systemctl); end to end, on a fixture root run as a guest, see
tests/templateconfig/run/test_runner_environment.py.
"""
from __future__ import annotations

import pytest

from templateconfig.environment import environment_failure, has_rtc, systemd_running


@pytest.fixture
def system(tmp_path):
    """A running system's tree: no RTC, no SELinux, no systemd until a test adds them."""
    for directory in ("dev", "sys/class", "run"):
        (tmp_path / directory).mkdir(parents=True)
    return tmp_path


def add(system, path, directory=False):
    target = system / path
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        target.mkdir()
    else:
        target.write_text("")


def test_hwclock_without_an_rtc_is_the_guest_s(system):
    assert not has_rtc(str(system))
    reason = environment_failure(["hwclock", "--systohc", "--utc"], 1,
                                 "hwclock: Cannot access the Hardware Clock via any known "
                                 "method.\n", str(system))
    assert reason == "this guest has no hardware clock (RTC; Xen PV guests and containers " \
                     "have none)"


@pytest.mark.parametrize("rtc", ["dev/rtc0", "dev/rtc"])
def test_hwclock_failing_where_there_is_an_rtc_is_a_real_failure(system, rtc):
    add(system, rtc)
    assert has_rtc(str(system))
    assert environment_failure(["/usr/sbin/hwclock", "--systohc"], 1, "hwclock: ioctl failed",
                               str(system)) is None


def test_a_clock_the_guest_sees_in_sysfs_but_has_no_node_for_is_none(system):
    add(system, "sys/class/rtc/rtc0", directory=True)  # a container sees the host's
    assert not has_rtc(str(system))


def test_a_container_not_allowed_to_set_its_clock(system, mocker):
    """os.geteuid is patched: the rule excuses this only for root (the tests may run as
    another user); the refusal text is hwclock's."""
    add(system, "dev/rtc0")
    mocker.patch("os.geteuid", return_value=0)
    assert environment_failure(["hwclock", "--systohc"], 1, "hwclock: settimeofday() failed: "
                               "Operation not permitted", str(system)) == (
        "the running system does not allow setting the hardware clock (a container without "
        "the capability)")


def test_setenforce_without_selinux(system):
    assert environment_failure(["setenforce", "1"], 1, "setenforce: SELinux is disabled\n",
                               str(system)) == "SELinux is not enabled on the running system"
    add(system, "sys/fs/selinux/enforce")
    assert environment_failure(["setenforce", "1"], 1, "setenforce: boom", str(system)) is None


@pytest.mark.parametrize("argv", [["systemctl", "start", "chronyd"],
                                  ["systemctl", "--no-block", "restart", "x"],
                                  ["systemctl", "daemon-reload"]])
def test_runtime_systemctl_without_systemd(system, argv):
    assert not systemd_running(str(system))
    assert environment_failure(argv, 1, "System has not been booted with systemd",
                               str(system)).startswith("no service manager is running")
    add(system, "run/systemd/system", directory=True)
    assert environment_failure(argv, 1, "Job failed", str(system)) is None


def test_enabling_a_service_never_counts_as_the_guest_s(system):
    """systemctl enable works without a running systemd: its failure is real."""
    assert environment_failure(["systemctl", "enable", "chronyd"], 1,
                               "Failed to enable unit", str(system)) is None


def test_service_and_invoke_rc_d(system):
    assert environment_failure(["invoke-rc.d", "chrony", "start"], 101, "", str(system)) \
        .startswith("the guest's policy-rc.d forbids")
    assert environment_failure(["service", "chronyd", "start"], 1,
                               "System has not been booted with systemd as init system",
                               str(system)).startswith("no service manager")
    assert environment_failure(["service", "chronyd", "start"], 1, "chronyd: failed",
                               str(system)) is None


def test_nmcli_only_when_networkmanager_is_not_running(system):
    assert environment_failure(["nmcli", "connection", "reload"], 8,
                               "Error: NetworkManager is not running.", str(system)) \
        .startswith("NetworkManager is not running yet")
    assert environment_failure(["nmcli", "connection", "up", "x"], 4, "Error", str(system)) \
        is None


def test_unknown_commands_fail_for_real(system):
    assert environment_failure(["ufw", "enable"], 1, "ERROR", str(system)) is None
    assert environment_failure([], 1, "", str(system)) is None

