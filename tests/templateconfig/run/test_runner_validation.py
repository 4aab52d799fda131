"""Validation before anything changes: the standard modules' own validators and checks run
in the runner, with every third-party module's descriptors, before any module starts; all
problems are reported at once, ``MODULE: KEY: REASON``; nothing is changed.

The standard modules are the real scripts on a copy of a fixture root, registered as their
packages do; the runner is the installed ``ovm-template-config`` in a real process. "The
root is byte-identical" compares every file's mode, owner and content
(``runner_helpers.guest_tree``), leaving out only what the runner writes about itself:
the run report, the run log and the run lock.
"""
from __future__ import annotations

import json
import os
import stat

import pytest
from runner_helpers import (
    ConsoleOnPty,
    add_python_module,
    add_script,
    add_shell_module,
    guest_tree,
    run_cli,
    standard_guest,
)

from ovmd.firstboot.flag import initial_config_value
from ovmd.runreport import read_report
from templateconfig.run.applied import applied_keys_path
from templateconfig.run.runner import Runner

L = "com.oracle.linux."
ROOT_PASSWORD = L + "root-password"
PASSWORD = "Gu3st-root-pass"
NET = L + "network."
STATIC = {NET + "device.0": "eth0", NET + "bootproto.0": "static",
          NET + "ipaddr.0": "192.0.2.10", NET + "netmask.0": "24"}
STATIC6 = {NET + "device.0": "eth0", NET + "ipv6-bootproto.0": "static",
           NET + "ipv6addr.0": "2001:db8::10/64", NET + "ipv6gateway.0": "fe80::1"}
PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA==\n-----END OPENSSH PRIVATE KEY-----\n"

# (class, module, params added to a valid set, the key refused, words of the reason)
CLASSES = [
    ("IPv4 address", "network", dict(STATIC, **{NET + "ipaddr.0": "192.0.2.300"}),
     NET + "ipaddr.0", "not an IPv4 address"),
    ("netmask", "network", dict(STATIC, **{NET + "netmask.0": "255.0.255.0"}),
     NET + "netmask.0", "not a netmask"),
    ("prefix", "network", dict(STATIC, **{NET + "netmask.0": "/33"}),
     NET + "netmask.0", "prefix length must be 0-32"),
    ("MTU", "network", {NET + "device.0": "eth0", NET + "mtu.0": "99999"},
     NET + "mtu.0", "from 68 to 65535"),
    ("hostname", "network", {NET + "hostname": "bad_host!name"}, NET + "hostname",
     "letters, digits or hyphens"),
    ("device twice", "network", {NET + "device.0": "eth0", NET + "device.1": "eth0"},
     NET + "device.1", "is also interface 0's device"),
    ("IPv6 address", "network", dict(STATIC6, **{NET + "ipv6addr.0": "192.0.2.10/24"}),
     NET + "ipv6addr.0", "an IPv4 address: IPv4 goes in ipaddr.N"),
    ("IPv6 prefix", "network", dict(STATIC6, **{NET + "ipv6addr.0": "2001:db8::10/129"}),
     NET + "ipv6addr.0", "the prefix length must be 1-128"),
    ("IPv6 gateway's zone", "network", dict(STATIC6, **{NET + "ipv6gateway.0": "fe80::1%eth1"}),
     NET + "ipv6gateway.0", "the zone is not interface 0's device eth0"),
    ("IPv6 static without address", "network", {NET + "device.0": "eth0",
                                                NET + "ipv6-bootproto.0": "static"},
     NET + "ipv6addr.0", "missing: required when %sipv6-bootproto.0 is 'static'" % NET),
    ("IPv6 gateway without static", "network", {NET + "device.0": "eth0",
                                                NET + "ipv6-bootproto.0": "auto",
                                                NET + "ipv6gateway.0": "2001:db8::1"},
     NET + "ipv6gateway.0", "only for a static IPv6 configuration"),
    ("time zone", "datetime", {L + "datetime.timezone": "Europe/Pariss"},
     L + "datetime.timezone", "unknown time zone"),
    ("datetime", "datetime", {L + "datetime.datetime": "2011-2-30-9-2-42"},
     L + "datetime.datetime", "no such date"),
    ("user", "user", {L + "user.name.0": "9"}, L + "user.name.0", "not all digits"),
    ("uid", "user", {L + "user.name.0": "carol", L + "user.uid.0": "-1"},
     L + "user.uid.0", "whole number"),
    ("group", "user", {L + "user.name.0": "carol", L + "user.group.0": "nosuchgroup"},
     L + "user.group.0", "not a group of the guest"),
    ("ssh key format", "ssh", {L + "ssh.host-rsa-key": PRIVATE_KEY,
                               L + "ssh.host-rsa-key-pub": "not a key"},
     L + "ssh.host-rsa-key-pub", "not one OpenSSH public key line"),
    ("selinux mode", "selinux", {L + "selinux.mode": "strict"}, L + "selinux.mode",
     "not one of: enforcing, permissive, disabled"),
    ("boolean", "firewall", {NET + "firewall": "maybe"}, NET + "firewall",
     "expected True or False"),
    ("boolean (datetime)", "datetime", {L + "datetime.utc": "sometimes"},
     L + "datetime.utc", "expected True or False"),
]


def configure(paths, params, *options):
    return run_cli(["--root", paths.root, "--stdin"] + list(options) + ["configure"],
                   json.dumps(params))


@pytest.fixture
def ol9(tmp_path):
    return standard_guest(tmp_path / "root", "ol9")


class TestEveryValidationClass:
    @pytest.mark.parametrize("module, extra, key, reason",
                             [pytest.param(*c[1:], id=c[0]) for c in CLASSES])
    def test_a_bad_value_changes_nothing_and_says_why(self, ol9, module, extra, key, reason):
        before = guest_tree(ol9.root)
        proc = configure(ol9, dict(extra, **{ROOT_PASSWORD: PASSWORD}))
        assert proc.returncode == 2, proc.stderr
        [problem] = [line for line in proc.stderr.splitlines() if ": %s: " % key in line]
        assert problem.startswith("ovm-template-config: %s: %s: " % (module, key))
        assert reason in problem
        assert proc.stderr.splitlines()[-1] == \
            "ovm-template-config: invalid parameters (1 problem): nothing was changed"
        assert proc.stdout == ""  # no module ran
        assert guest_tree(ol9.root) == before
        report = read_report(ol9)
        assert report["status"] == "failed"
        assert report["problems"] == [problem[len("ovm-template-config: "):]]
        assert {m["status"] for m in report["modules"]} == {"pending"}

    def test_a_password_is_never_shown(self, ol9):
        before = guest_tree(ol9.root)
        secret = "two\nlines-of-secret"
        proc = configure(ol9, {ROOT_PASSWORD: secret})
        assert proc.returncode == 2
        assert "ovm-template-config: authentication: %s: value (hidden) is invalid: the " \
               "password contains a line break" % ROOT_PASSWORD in proc.stderr
        assert guest_tree(ol9.root) == before
        for text in (proc.stderr, open(ol9.report_file).read(), open(ol9.log_file).read()):
            assert "lines-of-secret" not in text

    def test_the_valid_set_the_classes_start_from_is_accepted(self, ol9):
        assert Runner(ol9, "configure").problems_with({ROOT_PASSWORD: PASSWORD}) == []


class TestAllProblemsAtOnce:
    BAD = {NET + "device.0": "eth0", NET + "bootproto.0": "static",
           NET + "ipaddr.0": "192.0.2.300", NET + "netmask.0": "24", NET + "mtu.0": "99999",
           L + "datetime.timezone": "Europe/Pariss", NET + "hostname": "bad_host!name",
           ROOT_PASSWORD: PASSWORD}

    def test_the_issue_s_four_values_are_refused_together(self, ol9):
        before = guest_tree(ol9.root)
        proc = configure(ol9, self.BAD)
        assert proc.returncode == 2
        problems = [line.split(": ", 1)[1] for line in proc.stderr.splitlines()[:-1]]
        assert [p.split(": ")[:2] for p in problems] == [
            ["datetime", L + "datetime.timezone"], ["network", NET + "hostname"],
            ["network", NET + "ipaddr.0"], ["network", NET + "mtu.0"]]
        assert proc.stderr.splitlines()[-1].endswith("(4 problems): nothing was changed")
        # the root password was not set, the machine-id not regenerated: nothing ran
        assert guest_tree(ol9.root) == before
        assert read_report(ol9)["problems"] == problems

    def test_json_prints_the_report_of_the_refused_run(self, ol9):
        proc = configure(ol9, self.BAD, "--json")
        assert proc.returncode == 2
        assert json.loads(proc.stdout) == read_report(ol9)
        assert json.loads(proc.stdout)["pid"] > 0

    def test_standard_and_third_party_problems_together(self, ol9):
        add_shell_module(ol9, "vendor", 80, "cat\n", enumerate_output=json.dumps([
            {"key": "com.example.mode", "required": True, "choices": ["on", "off"]},
            {"key": "com.example.port", "depends": "com.example.mode", "required": True}]))
        proc = configure(ol9, {NET + "hostname": "bad_host!name", "com.example.mode": "on",
                               ROOT_PASSWORD: PASSWORD})
        assert proc.returncode == 2
        assert proc.stderr.splitlines()[:2] == [
            "ovm-template-config: network: %shostname: value 'bad_host!name' is invalid: "
            "each label needs 1-63 letters, digits or hyphens, not starting or ending with a "
            "hyphen" % NET,
            "ovm-template-config: vendor: com.example.port: required, but not given"]


class TestChecksAgainstTheGuest:
    def test_a_device_the_guest_lacks(self, ol9):
        os.environ["OVM_TEMPLATE_CONFIG_NIC_WAIT"] = "0"
        try:
            problems = Runner(ol9, "configure").problems_with(
                {NET + "device.1": "eth5", ROOT_PASSWORD: PASSWORD})
        finally:
            del os.environ["OVM_TEMPLATE_CONFIG_NIC_WAIT"]
        assert problems == ["network: %sdevice.1: value 'eth5': the guest has no network "
                            "device of this name (waited 0 s)" % NET]
        # the fixture's own devices pass
        assert Runner(ol9, "configure").problems_with(
            {NET + "device.1": "eth1", ROOT_PASSWORD: PASSWORD}) == []

    def test_a_group_or_user_the_same_run_creates_is_no_problem(self, ol9):
        params = {L + "group.name.0": "devs", L + "user.name.0": "carol",
                  L + "user.group.0": "devs", L + "ssh.user.0": "carol",
                  L + "ssh.authorized-keys.0": "ssh-ed25519 AAAAC3Nza c@d",
                  ROOT_PASSWORD: PASSWORD}
        assert Runner(ol9, "configure").problems_with(params) == []
        # without the user module in the run, nothing creates them
        only_ssh = Runner(ol9, "configure", only="ssh")
        assert only_ssh.problems_with(params) == [
            "ssh: %sssh.user.0: value 'carol': no such user on the guest, nor one the user "
            "module adds" % L]

    def test_a_user_to_modify_must_exist(self, ol9):
        assert Runner(ol9, "configure").problems_with(
            {L + "user.name.0": "nobody-here", L + "user.action.0": "mod",
             ROOT_PASSWORD: PASSWORD}) == [
            "user: %suser.name.0: value 'nobody-here': no such user on the guest to modify" % L]

    def test_ntp_without_an_ntp_client(self, tmp_path):
        paths = standard_guest(tmp_path / "root", "debian12")
        assert Runner(paths, "configure").problems_with(
            {L + "datetime.ntp": "True", ROOT_PASSWORD: PASSWORD}) == []
        (tmp_path / "root/etc/chrony/chrony.conf").unlink()  # its only NTP client
        assert Runner(paths, "configure").problems_with(
            {L + "datetime.ntp": "True", ROOT_PASSWORD: PASSWORD}) == [
            "datetime: %sdatetime.ntp: value 'True' cannot be applied: no NTP client "
            "(chrony, ntpd, systemd-timesyncd) is installed on the guest" % L]


class TestEveryEntryPoint:
    """The same refusal, whatever the params came from."""

    BAD = {NET + "hostname": "bad_host!name", ROOT_PASSWORD: PASSWORD}
    PROBLEM = ("ovm-template-config: network: %shostname: value 'bad_host!name' is invalid"
               % NET)

    def check(self, paths, before, proc):
        assert proc.returncode == 2, proc.stderr
        assert self.PROBLEM in proc.stderr
        assert guest_tree(paths.root) == before

    def test_input_fd(self, ol9):
        before = guest_tree(ol9.root)
        read, write = os.pipe()
        os.write(write, json.dumps(self.BAD).encode())
        os.close(write)
        try:
            proc = run_cli(["--root", ol9.root, "--input", str(read), "configure"],
                           pass_fds=(read,))
        finally:
            os.close(read)
        self.check(ol9, before, proc)

    def test_ovf_environment(self, ol9, tmp_path):
        before = guest_tree(ol9.root)
        env = tmp_path / "ovf-env.xml"
        env.write_text(
            '<?xml version="1.0"?><Environment xmlns="http://schemas.dmtf.org/ovf/'
            'environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">'
            '<PropertySection><Property oe:key="com.oracle.linux.network.hostname" '
            'oe:value="bad_host!name"/><Property oe:key="com.oracle.linux.root-password" '
            'oe:value="%s"/></PropertySection></Environment>' % PASSWORD)
        proc = run_cli(["--root", ol9.root, "--ovf-transport-iso", str(env), "configure"])
        self.check(ol9, before, proc)

    def test_first_boot_keeps_initial_config_yes(self, ol9):
        os.makedirs(os.path.dirname(ol9.sysconfig_ovmd), exist_ok=True)
        with open(ol9.sysconfig_ovmd, "w") as handle:
            handle.write("INITIAL_CONFIG=yes\n")
        before = guest_tree(ol9.root)
        proc = configure(ol9, self.BAD, "--initial-config")
        self.check(ol9, before, proc)
        assert initial_config_value(ol9) == "yes"

    def test_the_console_dialog_asks_again_and_refuses_a_bad_hidden_value(self, ol9):
        """An answer a module's validator refuses is asked again, with its reason; what
        no single answer shows (a device the guest lacks: a check against the guest)
        still stops the run before anything changes."""
        before = guest_tree(ol9.root)
        dialog = ConsoleOnPty(["--root", ol9.root, "--console-input", "-s", "network",
                               "configure"], env={"OVM_TEMPLATE_CONFIG_NIC_WAIT": "0"})
        try:
            dialog.expect(NET + "hostname")
            dialog.expect("Value (Enter to leave unset): ")
            dialog.type("bad_host!name")
            dialog.expect("value 'bad_host!name' is invalid: each label needs 1-63 letters")
            dialog.expect("Please try again.")
            dialog.type("good-host")
            dialog.expect(NET + "device.0")
            dialog.type("eth7")  # not on this guest: known only once the interfaces are checked
            dialog.expect(NET + "onboot.0")
            dialog.type("")
            dialog.expect(NET + "bootproto.0")
            dialog.type("")  # dhcp
            dialog.expect(NET + "ipv6-bootproto.0")
            dialog.type("")  # the template's IPv6: the last question
            code = dialog.finish()
        finally:
            dialog.close()
        assert code == 2, dialog.transcript
        assert "network: %sdevice.0: value 'eth7': the guest has no network device" % NET \
            in dialog.transcript
        assert guest_tree(ol9.root) == before


class TestCountsAsGiven:
    def test_a_reconfigure_needs_only_the_changed_keys(self, ol9):
        first = configure(ol9, {ROOT_PASSWORD: PASSWORD, NET + "hostname": "vm1"})
        assert first.returncode == 0, first.stderr
        recorded = applied_keys_path(ol9)
        assert stat.S_IMODE(os.stat(recorded).st_mode) == 0o600
        with open(recorded) as handle:
            text = handle.read()
        assert PASSWORD not in text and "vm1" not in text  # names only
        assert json.loads(text)["targets"]["configure"] == [NET + "hostname", ROOT_PASSWORD]
        shadow = open(os.path.join(ol9.root, "etc/shadow")).read()
        again = configure(ol9, {NET + "hostname": "vm2"})  # the password was wiped since
        assert again.returncode == 0, again.stderr
        assert open(os.path.join(ol9.root, "etc/hostname")).read() == "vm2\n"
        assert open(os.path.join(ol9.root, "etc/shadow")).read() == shadow  # left as it was

    def test_not_on_a_first_boot_nor_after_the_template_was_sealed(self, ol9):
        assert configure(ol9, {ROOT_PASSWORD: PASSWORD}).returncode == 0
        os.makedirs(os.path.dirname(ol9.sysconfig_ovmd), exist_ok=True)
        with open(ol9.sysconfig_ovmd, "w") as handle:
            handle.write("INITIAL_CONFIG=yes\n")
        first_boot = configure(ol9, {}, "--initial-config")
        assert first_boot.returncode == 2
        assert "authentication: %s: required, but not given" % ROOT_PASSWORD \
            in first_boot.stderr
        sealed = run_cli(["--root", ol9.root, "--stdin", "cleanup"], "{}")
        assert sealed.returncode == 0, sealed.stderr
        again = configure(ol9, {})
        assert again.returncode == 2 and "required, but not given" in again.stderr

    def test_a_failed_run_records_nothing(self, ol9):
        proc = configure(ol9, {ROOT_PASSWORD: PASSWORD, L + "user.name.0": "x",
                               L + "user.uid.0": "0", L + "user.action.0": "add"})
        assert proc.returncode == 1  # useradd refuses a second uid 0 without -o
        assert not os.path.exists(applied_keys_path(ol9))


class TestStandardModulesDeclareTheirSpec:
    def test_descriptors_from_the_spec_are_the_script_s_own(self, ol9):
        import subprocess
        import sys
        runner = Runner(ol9, "configure")
        assert sorted(runner.specs()) == sorted(
            ["selinux", "firewall", "datetime", "network", "system", "user", "ssh",
             "authentication"])
        for _priority, name, descs in runner.enumerate():
            script = os.path.join(ol9.scripts_dir, name)
            out = subprocess.run([sys.executable, script, "--enumerate", "configure"],
                                 capture_output=True, text=True, check=True).stdout
            assert descs == json.loads(out), name

    def test_a_third_party_script_is_never_imported_nor_given_our_options(self, tmp_path):
        paths = standard_guest(tmp_path / "root", "ol9", modules=["authentication"])
        calls = tmp_path / "calls"
        add_script(paths, "shelly", (
            "#!/bin/sh\n### BEGIN PLUGIN INFO\n# name: shelly\n# configure: 50\n"
            "# spec: mycompany.modules.shelly\n### END PLUGIN INFO\n"
            'echo "$@" >> %s\n'
            'if [ "$1" = "--enumerate" ]; then echo "[]"; exit 0; fi\ncat\n' % calls))
        add_python_module(paths, "claims", 60, "", raw_source=(
            "#!/usr/bin/env python\n### BEGIN PLUGIN INFO\n# name: claims\n# configure: 60\n"
            "# spec: templateconfig.modules.nosuchmodule\n### END PLUGIN INFO\n"
            "from templateconfig.cli import main\nimport json\n"
            "main(lambda t: '[]', {'configure': lambda p: p})\n"))
        proc = configure(paths, {ROOT_PASSWORD: PASSWORD})
        assert proc.returncode == 0, proc.stderr
        with open(calls) as handle:
            assert handle.read().splitlines() == ["--enumerate configure", "configure"]
        assert "shelly: spec 'mycompany.modules.shelly' is not a module of " \
               "templateconfig.modules" in proc.stderr
        assert "claims: cannot import its spec templateconfig.modules.nosuchmodule" \
            in proc.stderr
