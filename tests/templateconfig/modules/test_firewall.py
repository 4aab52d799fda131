"""The firewall module: the guest's own firewall switched on or off.

Real processes on copies of the fixture roots. On systemd guests the persistent change is
made with the host's real ``systemctl --root`` (links under /etc/systemd/system);
start/stop and SysV ``chkconfig``/``service`` are recorded, not run, under a sandbox root.
"""
from __future__ import annotations

from module_helpers import Case, GoldenSuite, enumerate_module, run_module, tree

F = "com.oracle.linux.network.firewall"

# ol7's firewalld is disabled in the fixture, ol8's and ol9's enabled; Ubuntu's ufw is off.
CASES = [Case("firewall-ol6-off", "ol6", [("firewall", {F: "False"})]),
         Case("firewall-ol6-on", "ol6", [("firewall", {F: "True"})]),
         Case("firewall-ol7-on", "ol7", [("firewall", {F: "True"})]),
         Case("firewall-ol8-off", "ol8", [("firewall", {F: "False"})]),
         Case("firewall-ol9-on", "ol9", [("firewall", {F: "yes"})]),
         Case("firewall-debian12-on", "debian12", [("firewall", {F: "True"})]),
         Case("firewall-ubuntu2204-on", "ubuntu2204", [("firewall", {F: "True"})]),
         Case("firewall-ubuntu2204-off", "ubuntu2204", [("firewall", {F: "False"})])]

INVALID = [Case("firewall-invalid-%s" % value, root, [("firewall", {F: value})],
                message="%s: value %r" % (F, value))
           for value, root in (("maybe", "ol9"), ("", "ol6"), ("enable", "ubuntu2204"))]


class TestFirewallCases(GoldenSuite):
    CASES = CASES
    INVALID = INVALID

def test_second_run_makes_no_persistent_change(fixture_root):
    root = fixture_root("ol7")
    run_module("firewall", "configure", {F: "True"}, root)
    rc, _, _, records = run_module("firewall", "configure", {F: "True"}, root)
    assert rc == 0
    assert [r["argv"] for r in records] == [["systemctl", "--no-block", "start", "firewalld"]]


def test_guest_without_firewall_is_a_noop_with_a_message(fixture_root):
    root = fixture_root("debian12")
    (root / "usr/lib/systemd/system/nftables.service").unlink()
    before = tree(root)
    rc, _, err, records = run_module("firewall", "configure", {F: "True"}, root)
    assert rc == 0 and records == []
    assert "no firewall" in err and F in err
    assert tree(root) == before


def test_enumerate_is_exact():
    assert enumerate_module("firewall", "configure") == [
        {"key": F, "description": "Enable the firewall: True or False.", "hidden": True}]
