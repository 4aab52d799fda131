"""The datetime module: time zone, UTC flag, date and time, NTP per guest.

Module scripts run as real processes on copies of the fixture roots (see conftest.py);
``date``/``hwclock`` and service starts are recorded, not run, under a sandbox root.
"""
from __future__ import annotations

import os

import pytest
from module_helpers import Case, CleanupSuite, enumerate_module, run_module

D = "com.oracle.linux.datetime."

FULL = {D + "timezone": "Europe/Paris", D + "utc": "True", D + "ntp": "True",
        D + "ntp-servers": "ntp1.example.com, 192.0.2.123", D + "ntp-local-time-source": "True",
        D + "datetime": "2011-4-7-9-2-42"}
# Local hardware clock, NTP off (the fixture has chronyd enabled: it gets disabled).
NTP_OFF = {D + "timezone": "America/New_York", D + "utc": "False", D + "ntp": "False"}

CASES = [Case("datetime-%s" % root, root, [("datetime", FULL)])
         for root in ("ol6", "ol7", "ol8", "ol9", "debian12", "ubuntu2204")]
CASES += [Case("datetime-ol8-ntp-off", "ol8", [("datetime", NTP_OFF)]),
          Case("datetime-debian12-ntp-off", "debian12", [("datetime", NTP_OFF)])]


def bad(name: str, key: str, value: str, root: str = "ol9") -> Case:
    params = dict(FULL, **{D + key: value})
    return Case("datetime-invalid-" + name, root, [("datetime", params)],
                message="%s%s: value %r" % (D, key, value))


INVALID = [
    bad("unknown-timezone", "timezone", "Mars/Olympus_Mons"),
    bad("timezone-not-in-guest-db", "timezone", "Asia/Tokyo", root="debian12"),
    bad("timezone-path", "timezone", "../../etc/passwd", root="ol6"),
    bad("timezone-dir", "timezone", "Europe"),
    bad("date-30-feb", "datetime", "2011-2-30-9-2-42"),
    bad("date-format", "datetime", "2011-04-07 09:02:42", root="ubuntu2204"),
    bad("time-25h", "datetime", "2011-4-7-25-0-0", root="ol7"),
    bad("utc", "utc", "maybe"),
    bad("ntp", "ntp", "sometimes", root="ol8"),
    bad("ntp-server", "ntp-servers", "ntp1.example.com,bad_host"),
    bad("local-source", "ntp-local-time-source", "2"),
]


class TestDatetimeCases(CleanupSuite):
    CASES = CASES
    INVALID = INVALID

def test_ntp_without_a_client_fails_before_any_change(fixture_root):
    root = fixture_root("ol9")
    (root / "etc/chrony.conf").unlink()
    rc, _, err, records = run_module("datetime", "configure", FULL, root)
    assert rc != 0
    assert D + "ntp: value 'True' cannot be applied: no NTP client" in err
    assert [r for r in records if r["op"] != "command"] == []


def test_the_clock_is_not_set_again_on_a_later_boot(fixture_root):
    root = fixture_root("ol7")
    rc, _, _, records = run_module("datetime", "configure", FULL, root)
    assert ["date", "-s", "2011-04-07 09:02:42"] in [r.get("argv") for r in records]
    rc, _, _, records = run_module("datetime", "configure", FULL, root)
    assert rc == 0 and records == []


def test_enumerate_configure_is_exact():
    hidden = {"hidden": True}
    assert enumerate_module("datetime", "configure") == [
        dict(key=D + "datetime", description="Date and time to set, as "
             "year-month-day-hour-minute-second (e.g. 2011-4-7-9-2-42).", **hidden),
        dict(key=D + "timezone", description="Time zone (e.g. America/New_York).", **hidden),
        dict(key=D + "utc", description="The hardware clock keeps UTC: True or False.", **hidden),
        dict(key=D + "ntp", description="Synchronise the clock with NTP: True or False.", **hidden),
        dict(key=D + "ntp-servers", description="NTP servers, comma-separated.", **hidden),
        dict(key=D + "ntp-local-time-source", description="Use the local clock as a fallback "
             "time source: True or False.", **hidden),
    ]
    assert enumerate_module("datetime", "cleanup") == []


def test_a_guest_without_a_hardware_clock_gets_a_note_not_a_failure(fixture_root, monkeypatch,
                                                                    capsys):
    """Xen PV guests and containers have no RTC, so hwclock fails there (the booted guest
    test sees the real one, tests/templateconfig/run/test_runner_environment.py a real
    hwclock in a guest without one). Here hwclock would set this machine's clock, so the
    module runs in-process as on a running guest (``is_sandbox`` false) without an RTC
    device (``has_rtc``), and only the command runner answers as hwclock does there;
    everything else (files, the service) is the module's real work on a fixture root."""
    from templateconfig import common, environment
    from templateconfig.modules import datetime as module
    root = fixture_root("debian12")
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(root))
    monkeypatch.delenv("OVM_TEMPLATE_CONFIG_ACTIONS", raising=False)
    common.new_guest()
    ran = []

    def run(argv, success_return_code, input, env):
        ran.append(list(argv))
        if argv[0] == "hwclock":
            raise common.CommandError(argv, 1, "hwclock: Cannot access the Hardware Clock via "
                                      "any known method.\nhwclock: Use the --verbose option to "
                                      "see the details of our search for an access method.\n")
        return ""

    monkeypatch.setattr(common, "_run", run)
    monkeypatch.setattr(common, "is_sandbox", lambda: False)
    monkeypatch.setattr(environment, "has_rtc", lambda system_root="/": False)
    params = {k: v for k, v in FULL.items() if k != D + "datetime"}
    module.SPEC.run("configure", params)
    notes = [line for line in capsys.readouterr().err.splitlines() if "hardware clock" in line]
    assert notes == [
        "warning: hwclock --systohc --utc: this guest has no hardware clock (RTC; Xen PV "
        "guests and containers have none); ignored (hwclock: Cannot access the Hardware "
        "Clock via any known method.)"]
    # the rest was done: the time zone, chrony's sources, chrony (re)started
    assert os.readlink(root / "etc/localtime") == "/usr/share/zoneinfo/Europe/Paris"
    assert (root / "etc/chrony/sources.d/ovm.sources").exists()
    assert ran[-1] == ["systemctl", "--no-block", "restart", "chrony"]
    assert (root / "var/lib/ovm-template-config/datetime.applied").exists()


# --- the vendor's NTP sources give way to the requested ones ----------------------------------

def test_ntpd_uses_only_the_requested_servers_and_cleanup_gives_the_vendors_back(fixture_root):
    root = fixture_root("ol6")
    original = (root / "etc/ntp.conf").read_text()
    assert run_module("datetime", "configure", FULL, root)[0] == 0
    active = [line.split()[1] for line in (root / "etc/ntp.conf").read_text().splitlines()
              if line.split()[:1] in (["server"], ["pool"], ["peer"])]
    assert active == ["ntp1.example.com", "192.0.2.123", "127.127.1.0"]   # + the local clock
    assert run_module("datetime", "cleanup", {}, root)[0] == 0
    assert (root / "etc/ntp.conf").read_text() == original


def test_timesyncd_gets_no_vendor_fallback(fixture_root):
    root = fixture_root("ubuntu2204")
    assert run_module("datetime", "configure", FULL, root)[0] == 0
    text = (root / "etc/systemd/timesyncd.conf.d/ovm.conf").read_text()
    assert "\nNTP=ntp1.example.com 192.0.2.123\nFallbackNTP=\n" in text


@pytest.mark.parametrize("ntp, expected", [
    # servers changed: a running client restarts to read them (a queued job on systemd)
    ("True", ["systemctl", "--no-block", "restart", "chronyd"]),
    (None, ["systemctl", "--no-block", "restart", "chronyd"]),
])
def test_new_servers_restart_the_client(fixture_root, ntp, expected):
    root = fixture_root("ol8")
    params = {D + "ntp-servers": "192.0.2.5"}
    if ntp is not None:
        params[D + "ntp"] = ntp
    rc, _, err, records = run_module("datetime", "configure", params, root)
    assert rc == 0, err
    assert [r["argv"] for r in records if r["op"] == "command"][-1] == expected
