"""The selinux module: SELINUX= in /etc/selinux/config and the running mode.

Real processes on copies of the fixture roots; the EL fixtures model a running SELinux
(``/sys/fs/selinux/enforce``, ``/selinux/enforce`` on EL6), so ``setenforce`` is recorded.
"""
from __future__ import annotations

from module_helpers import Case, GoldenSuite, enumerate_module, run_module, tree

S = "com.oracle.linux.selinux.mode"

CASES = [Case("selinux-ol6-permissive", "ol6", [("selinux", {S: "permissive"})]),
         Case("selinux-ol7-disabled", "ol7", [("selinux", {S: "disabled"})]),
         Case("selinux-ol8-enforcing", "ol8", [("selinux", {S: "enforcing"})]),
         Case("selinux-ol9-permissive", "ol9", [("selinux", {S: "permissive"})]),
         Case("selinux-debian12-noop", "debian12", [("selinux", {S: "enforcing"})])]

INVALID = [Case("selinux-invalid-%s" % value, root, [("selinux", {S: value})],
                message="%s: value %r" % (S, value))
           for value, root in (("foo", "ol9"), ("Enforcing ", "ol6"), ("", "ol8"))]


class TestSelinuxCases(GoldenSuite):
    CASES = CASES
    INVALID = INVALID

def test_disabling_says_a_reboot_is_needed(fixture_root):
    rc, _, err, _ = run_module("selinux", "configure", {S: "disabled"}, fixture_root("ol9"))
    assert rc == 0
    assert "takes effect after a reboot" in err


def test_leaving_disabled_schedules_a_relabel(fixture_root):
    root = fixture_root("ol8")
    config = root / "etc/selinux/config"
    config.write_text(config.read_text().replace("SELINUX=enforcing", "SELINUX=disabled"))
    (root / "sys/fs/selinux/enforce").unlink()
    rc, _, err, records = run_module("selinux", "configure", {S: "enforcing"}, root)
    assert rc == 0, err
    assert (root / ".autorelabel").exists()
    assert "relabelled on the next boot" in err
    assert [r for r in records if r["op"] == "command"] == []


def test_without_selinux_nothing_changes(fixture_root):
    root = fixture_root("ubuntu2204")
    before = tree(root)
    rc, _, err, records = run_module("selinux", "configure", {S: "enforcing"}, root)
    assert (rc, records) == (0, [])
    assert "SELinux is not installed" in err
    assert tree(root) == before


def test_enumerate_is_exact():
    assert enumerate_module("selinux", "configure") == [
        {"key": S, "description": "SELinux mode: enforcing, permissive or disabled.",
         "hidden": True, "choices": ["enforcing", "permissive", "disabled"]}]
