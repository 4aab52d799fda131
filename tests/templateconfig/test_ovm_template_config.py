"""``ovm-template-config`` end to end: the installed command on a sandbox root.

Params in (``--stdin`` both formats, ``--input/--output`` FDs from a parent process, OVF
file, console through a pty), enumeration, reports, logs, secrets, dry run, resume after
SIGKILL, exit statuses.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time

import pytest
from runner_helpers import (
    OVM_TEMPLATE_CONFIG,
    add_python_module,
    add_shell_module,
    all_text_under,
    guest,
    guest_tree,
    run_cli,
    standard_guest,
    tree_hashes,
    wait_readable,
)
from testlib import FIXTURE_ROOTS

FIXTURES = sorted(p.name for p in FIXTURE_ROOTS.iterdir())
PASSWORD = "Tr0ub4dor&3-hunter2"
SECRET_KEY = "com.example.admin-password"  # a password by its name and its descriptor


def secret_module(paths):
    """A module that takes a password key and echoes it on stderr (badly written)."""
    add_python_module(paths, "auth", 90, '''\
        sys.stderr.write("setting password %s\\n" % params["com.example.admin-password"])
        params["auth.done"] = "yes"
        ''', descriptors=[{"key": SECRET_KEY, "password": True, "required": True}])


def failing_secret_module(paths):
    add_python_module(paths, "leaky", 95, '''\
        raise RuntimeError("cannot use password %s" % params["com.example.admin-password"])
        ''')


class TestParamsInput:
    def test_stdin_one_object(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "echo", 10, 'params["seen"] = ",".join(sorted(params))')
        proc = run_cli(["--root", paths.root, "--stdin", "--json", "configure"],
                       json.dumps({"a": "1", "b": "2"}))
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["status"] == "done" and report["changed_keys"] == ["seen"]

    def test_stdin_one_object_per_line_like_ovmd_l(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "echo", 10, 'params["seen"] = ",".join(sorted(params))')
        out_r, out_w = os.pipe()
        lines = '{"a": "1"}\n{"b": "2"}\n\n{"a": "3"}\n'  # later lines win
        proc = run_cli(["--root", paths.root, "--stdin", "--output", str(out_w), "configure"],
                       lines, pass_fds=(out_w,))
        os.close(out_w)
        with os.fdopen(out_r) as handle:
            result = json.loads(handle.read())
        assert proc.returncode == 0, proc.stderr
        assert result == {"a": "3", "b": "2", "seen": "a,b"}

    def test_bad_stdin_is_a_usage_error(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "echo", 10, "")
        proc = run_cli(["--root", paths.root, "--stdin", "configure"], '{"a": "1"}\nnot json\n')
        assert proc.returncode == 2
        assert "line 2: not valid JSON" in proc.stderr

    def test_numbers_and_booleans_are_taken_as_their_text(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "types", 10,
                          'params["types"] = ",".join("%s=%s:%s" % (k, type(v).__name__, v) '
                          'for k, v in sorted(params.items()))')
        out_r, out_w = os.pipe()
        proc = run_cli(["--root", paths.root, "--stdin", "--output", str(out_w), "configure"],
                       '{"mtu": 1500, "ratio": 0.5, "on": true, "off": false, "s": "x"}',
                       pass_fds=(out_w,))
        os.close(out_w)
        with os.fdopen(out_r) as handle:
            result = json.loads(handle.read())
        assert proc.returncode == 0, proc.stderr
        assert result["types"] == "mtu=str:1500,off=str:False,on=str:True,ratio=str:0.5,s=str:x"

    @pytest.mark.parametrize("value, kind", [("null", "null"), ('["a"]', "array"),
                                             ('{"a": "b"}', "object")])
    def test_a_value_that_is_not_a_scalar_is_refused(self, tmp_path, value, kind):
        paths = guest(tmp_path)
        add_python_module(paths, "echo", 10, "")
        proc = run_cli(["--root", paths.root, "--stdin", "configure"], '{"k": %s}' % value)
        assert proc.returncode == 2
        assert proc.stderr == ("ovm-template-config: standard input: the value of k must be "
                               "a string, not a JSON %s\n" % kind)

    def test_input_and_output_fds_from_a_parent_process(self, tmp_path):
        """How ovmd runs us: params on one pipe, results on another, nothing on argv."""
        paths = guest(tmp_path)
        secret_module(paths)
        add_python_module(paths, "host", 10, 'params["com.example.hostname"] = "new"')
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        argv = [OVM_TEMPLATE_CONFIG, "--root", paths.root, "--input", str(in_r),
                "--output", str(out_w), "configure"]
        process = subprocess.Popen(argv, pass_fds=(in_r, out_w), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        os.close(in_r)
        os.close(out_w)
        with os.fdopen(in_w, "w") as pipe:
            pipe.write(json.dumps({SECRET_KEY: PASSWORD, "com.example.hostname": "old"}))
        with os.fdopen(out_r) as pipe:
            output = json.loads(pipe.read())
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert output == {SECRET_KEY: PASSWORD, "com.example.hostname": "new",
                          "auth.done": "yes"}
        assert PASSWORD not in " ".join(argv) + stdout + stderr

    def test_no_input_option_and_no_daemon_exits_3(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "echo", 10, "")
        proc = run_cli(["--root", paths.root, "configure"])
        assert proc.returncode == 3
        assert "not running" in proc.stderr and "\n" == proc.stderr[-1]

    def test_ovf_environment_file(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "echo", 10,
                          'params["got"] = params.get("com.oracle.linux.network.hostname", "")')
        ovf = tmp_path / "ovf-env.xml"
        ovf.write_text('''<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
             xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">
  <PropertySection>
    <Property oe:key="com.oracle.linux.network.hostname" oe:value="ovfhost"/>
  </PropertySection>
</Environment>
''')
        proc = run_cli(["--root", paths.root, "--ovf-transport-iso", str(ovf), "--json",
                        "configure"])
        if proc.returncode == 2 and "ovf" in proc.stderr.lower():
            pytest.fail("OVF reader refused the document: %s" % proc.stderr)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["changed_keys"] == ["got"]
        assert "ovfhost" not in proc.stdout  # the report has keys, not values


class TestEnumerate:
    DESCRIPTORS = [{"key": "com.example.mode", "description": "Mode.", "required": True,
                    "choices": ["on", "off"]}]

    def build(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "second", 60, "", descriptors=self.DESCRIPTORS)
        add_python_module(paths, "first", 20, "", descriptors=[])
        return paths

    def test_json_shape_is_oracles(self, tmp_path):
        paths = self.build(tmp_path)
        proc = run_cli(["--root", paths.root, "-e", "configure"])
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == [[20, "first", []], [60, "second", self.DESCRIPTORS]]
        proc = run_cli(["--root", paths.root, "-e", "-s", "second", "configure"])
        assert json.loads(proc.stdout) == [[60, "second", self.DESCRIPTORS]]

    def test_human_readable(self, tmp_path):
        paths = self.build(tmp_path)
        proc = run_cli(["--root", paths.root, "--enumerate", "--human-readable", "configure"])
        assert proc.returncode == 0, proc.stderr
        assert "second (priority 60)" in proc.stdout
        assert "com.example.mode" in proc.stdout and "choices: on, off" in proc.stdout

    def test_a_module_whose_enumeration_fails_is_named_once_with_why(self, tmp_path):
        paths = self.build(tmp_path)
        broken = os.path.join(paths.scripts_dir, "broken")
        with open(broken, "w") as handle:
            handle.write("#!/usr/bin/env python3\n### BEGIN PLUGIN INFO\n# name: broken\n"
                         "# configure: 30\n### END PLUGIN INFO\ndef do_enumerate(target)\n")
        os.chmod(broken, 0o755)
        os.symlink("../scripts/broken", os.path.join(paths.target_dir("configure"), "30broken"))
        why = "enumeration failed: SyntaxError: expected ':' (%s, line 6)" % broken
        proc = run_cli(["--root", paths.root, "--enumerate", "--human-readable", "configure"])
        assert proc.returncode == 1
        assert proc.stderr == ""
        assert "broken (priority 30)\n====================\n  %s\n" % why in proc.stdout
        assert "second (priority 60)" in proc.stdout
        proc = run_cli(["--root", paths.root, "--enumerate", "configure"])
        assert proc.returncode == 1
        assert proc.stderr == "ovm-template-config: broken: %s\n" % why
        assert [30, "broken", []] in json.loads(proc.stdout)

    def test_enumerate_touches_nothing(self, tmp_path):
        paths = self.build(tmp_path)
        before = tree_hashes(paths.root)
        run_cli(["--root", paths.root, "-e", "configure"])
        assert tree_hashes(paths.root) == before


class TestExitStatus:
    def test_module_failure_exits_1_and_the_others_run(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "bad", 10, "sys.exit(5)")
        add_python_module(paths, "good", 20, 'params["good"] = "yes"')
        proc = run_cli(["--root", paths.root, "--stdin", "configure"], "{}")
        assert proc.returncode == 1
        assert proc.stderr == ("ovm-template-config: bad failed: exited with status 5 (no error "
                               "output)\n")
        assert "ok      20 good" in proc.stdout

    def test_invalid_params_exit_2_and_nothing_runs(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "writer", 10, 'open("/tmp/never", "a")')
        add_python_module(paths, "checker", 20, "", descriptors=TestEnumerate.DESCRIPTORS)
        before = guest_tree(paths.root)
        proc = run_cli(["--root", paths.root, "--stdin", "configure"],
                       '{"com.example.mode": "maybe"}')
        assert proc.returncode == 2
        assert proc.stderr == (
            "ovm-template-config: checker: com.example.mode: value 'maybe' is not one of: on, off\n"
            "ovm-template-config: invalid parameters (1 problem): nothing was changed\n")
        assert proc.stdout == ""
        assert guest_tree(paths.root) == before

    def test_usage_errors_exit_2(self, tmp_path):
        paths = guest(tmp_path)
        assert run_cli(["--root", paths.root, "--stdin", "nosuchtarget"], "{}").returncode == 2
        assert run_cli(["--root", paths.root]).returncode == 2
        assert run_cli(["--stdin", "--input", "0", "configure"]).returncode == 2

    def test_version_and_help(self):
        proc = run_cli(["--version"])
        assert proc.returncode == 0 and proc.stdout.startswith("ovm-template-config ")
        proc = run_cli(["--help"])
        assert proc.returncode == 0
        for option in ("--enumerate", "--human-readable", "--script", "--stdin",
                       "--console-input", "--input", "--output", "--ovf-transport-iso",
                       "--root", "--dry-run", "--json", "--timeout", "exit status",
                       "--initial-config", "--lock-timeout", "--new-module", "--dest"):
            assert option in proc.stdout, option
        assert "  4  --initial-config: INITIAL_CONFIG is not yes" in proc.stdout
        assert "  5  another run of the same root held the run lock" in proc.stdout

    def test_cli_defaults_match_the_framework(self):
        from templateconfig import ovm_template_config
        from templateconfig.run import lock as runlock
        from templateconfig.run import runner
        assert ovm_template_config.DEFAULT_TIMEOUT == runner.DEFAULT_TIMEOUT
        assert ovm_template_config.DEFAULT_LOCK_TIMEOUT == runlock.DEFAULT_LOCK_TIMEOUT


class TestNewModule:
    def test_new_module_creates_the_skeleton_in_dest(self, tmp_path):
        proc = run_cli(["--new-module", "myapp", "--dest", str(tmp_path)])
        assert proc.returncode == 0, proc.stderr
        package = tmp_path / "ovm-template-config-myapp"
        expected = {"myapp", "ovm-template-config-myapp.spec", "Makefile", "README.md"}
        assert {p.name for p in package.iterdir()} == expected
        assert sorted(proc.stdout.split()) == sorted(str(package / name) for name in expected)
        script = package / "myapp"
        assert os.access(str(script), os.X_OK)
        assert "### BEGIN PLUGIN INFO\n# name: myapp\n" in script.read_text()

    def test_the_created_module_runs_under_the_runner(self, tmp_path):
        from runner_helpers import add_script
        proc = run_cli(["--dest", str(tmp_path), "--new-module=myapp"])
        assert proc.returncode == 0, proc.stderr
        paths = guest(tmp_path)
        add_script(paths, "myapp", (tmp_path / "ovm-template-config-myapp" / "myapp").read_text())
        proc = run_cli(["--root", paths.root, "--stdin", "configure"],
                       json.dumps({"com.example.myapp.message": "hello"}))
        assert proc.returncode == 0, proc.stderr
        with open(os.path.join(paths.root, "etc", "myapp.conf")) as handle:
            assert handle.read() == "message=hello\n"

    def test_new_module_errors_are_reported(self, tmp_path):
        proc = run_cli(["--new-module", "Bad Name", "--dest", str(tmp_path)])
        assert proc.returncode == 2
        assert "invalid module name" in proc.stderr
        assert list(tmp_path.iterdir()) == []


class TestReportAndLog:
    def test_report_and_log_record_the_run_without_secrets(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "first", 10, 'params["first"] = "1"')
        secret_module(paths)
        failing_secret_module(paths)
        proc = run_cli(["--root", paths.root, "--stdin", "--json", "configure"],
                       json.dumps({SECRET_KEY: PASSWORD}))
        assert proc.returncode == 1
        report = json.loads(open(paths.report_file).read())
        assert report == json.loads(proc.stdout)
        assert report["target"] == "configure" and report["status"] == "failed"
        assert report["started"] and report["finished"]
        assert [(m["name"], m["priority"], m["status"]) for m in report["modules"]] == [
            ("first", 10, "ok"), ("auth", 90, "ok"), ("leaky", 95, "failed")]
        assert all(isinstance(m["seconds"], float) for m in report["modules"])
        assert "RuntimeError: cannot use password ********" in report["modules"][2]["error"]
        assert report["changed_keys"] == ["auth.done", "first"]
        for path in (paths.report_file, paths.log_file):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        log = open(paths.log_file).read()
        assert "configure: first ok" in log and "configure: leaky failed" in log
        assert "cannot use password ********" in log
        # the password is nowhere: not in the tree, the output, or a leftover file
        assert PASSWORD not in all_text_under(paths.root)
        assert PASSWORD not in proc.stdout + proc.stderr
        assert not os.path.exists(paths.run_state_file)


COMMON_MODULE = '''\
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: hosts
# configure: 50
# description: writes /etc/hosts with templateconfig.common
### END PLUGIN INFO
import json
from templateconfig import common
from templateconfig.cli import main


def do_enumerate(target):
    return "[]"


def do_configure(param):
    params = json.loads(param)
    common.write_file("/etc/hosts", "127.0.0.1 localhost\\n10.0.0.5 %s\\n"
                      % params["com.example.hostname"])
    common.write_file("/etc/secret.key", params["com.example.admin-password"], mode=0o600,
                      secret=True)
    common.remove_file("/etc/obsolete")
    common.run_cmd(["systemctl", "restart", "network"])
    # its own state, in a place of its own: marked, not recognised by its path
    common.write_file("/var/lib/example/hosts.state", "applied\\n", bookkeeping=True)
    params["hosts.done"] = "yes"
    return json.dumps(params)


if __name__ == "__main__":
    main(do_enumerate, {"configure": do_configure})
'''


class TestDryRun:
    def build(self, tmp_path):
        paths = guest(tmp_path)
        from runner_helpers import add_script
        add_script(paths, "hosts", COMMON_MODULE)
        add_python_module(paths, "thirdparty", 60,
                          'open(os.environ["OVM_TEMPLATE_CONFIG_ROOT"] + "/etc/touched", "w")')
        add_shell_module(paths, "shell", 70, "touch \"$OVM_TEMPLATE_CONFIG_ROOT/etc/shell\"; cat\n")
        etc = os.path.join(paths.root, "etc")
        with open(os.path.join(etc, "hosts"), "w") as handle:
            handle.write("127.0.0.1 localhost\n10.0.0.5 oldname\n")
        with open(os.path.join(etc, "obsolete"), "w") as handle:
            handle.write("old\n")
        return paths

    def test_dry_run_leaves_the_tree_identical_and_prints_the_plan(self, tmp_path):
        paths = self.build(tmp_path)
        before = tree_hashes(paths.root)
        proc = run_cli(["--root", paths.root, "--stdin", "--dry-run", "configure"],
                       json.dumps({"com.example.hostname": "newname", SECRET_KEY: PASSWORD}))
        assert proc.returncode == 0, proc.stderr
        assert tree_hashes(paths.root) == before
        out = proc.stdout
        assert "--- a/etc/hosts\n+++ b/etc/hosts\n" in out
        assert "-10.0.0.5 oldname\n+10.0.0.5 newname\n" in out
        assert "/etc/secret.key: secret content, not shown" in out
        assert "would remove /etc/obsolete" in out and "-old\n" in out
        assert "=== commands that would run ===\nhosts: systemctl restart network\n" in out
        # the module's bookkeeping is named once, not shown as a change to the guest
        assert "its own state (not shown): /var/lib/example/hosts.state\n" in out
        assert out.count("hosts.state") == 1 and "+applied" not in out
        assert "thirdparty: does not use templateconfig.common" in out
        assert "shell: does not use templateconfig.common" in out
        assert PASSWORD not in out + proc.stderr

    def test_a_module_that_fails_in_the_dry_run_is_told_once(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "picky", 10, 'from templateconfig import common\n'
                          'raise common.TemplateConfigError("no /etc/os-release here")')
        proc = run_cli(["--root", paths.root, "--stdin", "--dry-run", "configure"], "{}")
        assert proc.returncode == 1
        assert "picky: failed (the error is on stderr)\n" in proc.stdout
        assert proc.stderr == "ovm-template-config: picky failed: no /etc/os-release here\n"
        assert "no /etc/os-release here" not in proc.stdout

    def test_dry_run_json(self, tmp_path):
        paths = self.build(tmp_path)
        proc = run_cli(["--root", paths.root, "--stdin", "--dry-run", "--json", "configure"],
                       json.dumps({"com.example.hostname": "newname", SECRET_KEY: PASSWORD}))
        report = json.loads(proc.stdout)
        actions = report["plan"]["modules"][0]["actions"]
        assert [a["op"] for a in actions] == ["write", "write", "remove", "command"]
        assert all(a["applied"] is False for a in actions)
        bookkeeping = report["plan"]["modules"][0]["bookkeeping"]
        assert [(a["op"], a["path"], a["bookkeeping"]) for a in bookkeeping] == [
            ("write", "/var/lib/example/hosts.state", True)]
        assert {s["name"] for s in report["plan"]["skipped"]} == {"thirdparty", "shell"}
        assert PASSWORD not in proc.stdout

    @pytest.mark.parametrize("fixture", FIXTURES)
    def test_standard_modules_plan_their_guest_changes_not_their_state(self, tmp_path,
                                                                         fixture):
        paths = standard_guest(tmp_path / "root", fixture)
        params = json.dumps({"com.oracle.linux.network.hostname": "web01.example.com",
                             "com.oracle.linux.datetime.timezone": "Europe/Paris",
                             "com.oracle.linux.datetime.ntp": "True",
                             "com.oracle.linux.datetime.ntp-servers": "0.pool.ntp.org",
                             "com.oracle.linux.root-password": PASSWORD})
        text = run_cli(["--root", paths.root, "--stdin", "--dry-run", "configure"], params)
        assert text.returncode == 0, text.stderr
        state_dir = "/var/lib/ovm-template-config/"
        shown = [line for line in text.stdout.splitlines() if state_dir in line]
        assert shown and all(line.startswith("its own state (not shown): ") for line in shown), \
            text.stdout
        assert "+++ b/etc/hostname" in text.stdout or "HOSTNAME=web01" in text.stdout
        as_json = run_cli(["--root", paths.root, "--stdin", "--dry-run", "--json", "configure"],
                          params)
        plan = json.loads(as_json.stdout)["plan"]
        actions = [a for m in plan["modules"] for a in m["actions"]]
        bookkeeping = [a for m in plan["modules"] for a in m["bookkeeping"]]
        assert not [a for a in actions if a.get("path", "").startswith(state_dir)]
        assert bookkeeping and all(a["bookkeeping"] is True and a["path"].startswith(state_dir)
                                   for a in bookkeeping)
        assert {m["name"] for m in plan["modules"] if m["bookkeeping"]} >= {
            "datetime", "network", "system"}

    def test_real_run_applies_what_the_plan_said(self, tmp_path):
        paths = self.build(tmp_path)
        os.makedirs(tmp_path / "bin")
        fake = tmp_path / "bin" / "systemctl"
        fake.write_text("#!/bin/sh\nexit 0\n")
        fake.chmod(0o755)
        proc = run_cli(["--root", paths.root, "--stdin", "--json", "configure"],
                       json.dumps({"com.example.hostname": "newname", SECRET_KEY: PASSWORD}),
                       env={"PATH": "%s:%s" % (tmp_path / "bin", os.environ["PATH"])})
        assert proc.returncode == 0, proc.stderr
        with open(os.path.join(paths.root, "etc", "hosts")) as handle:
            assert "newname" in handle.read()
        report = json.loads(proc.stdout)
        assert report["modules"][0]["actions"] == [
            "write file /etc/hosts", "write secret file /etc/secret.key (mode 0600)",
            "remove /etc/obsolete", "run: systemctl restart network"]


class TestResume:
    def build(self, tmp_path):
        paths = guest(tmp_path)
        runs = tmp_path / "runs"
        for name, priority in (("one", 10), ("two", 20), ("three", 30), ("four", 40)):
            body = 'open(%r, "a").write("%s\\n")\nparams["%s"] = "done"\n' % (
                str(runs), name, name)
            if name == "three":
                # first time: note its pid, announce itself on the FIFO and hang, so the
                # runner can be killed
                body += ('if not os.path.exists(%r):\n'
                         '    open(%r, "w").write(str(os.getpid()))\n'
                         '    open(%r, "w").write("hung\\n")\n'
                         '    import time; time.sleep(60)\n'
                         % (str(tmp_path / "hung"), str(tmp_path / "hung"),
                            str(tmp_path / "hung-fifo")))
            add_python_module(paths, name, priority, body)
        return paths, runs

    def start(self, paths, params):
        process = subprocess.Popen(
            [OVM_TEMPLATE_CONFIG, "--root", paths.root, "--stdin", "configure"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        process.stdin.write(json.dumps(params))
        process.stdin.close()
        return process

    def kill_mid_run(self, tmp_path, paths, params):
        fifo = tmp_path / "hung-fifo"
        os.mkfifo(fifo)
        announced = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            process = self.start(paths, params)
            assert wait_readable(announced), "module three did not start"
            assert os.read(announced, 100) == b"hung\n"
        finally:
            os.close(announced)
        hung = tmp_path / "hung"
        process.send_signal(signal.SIGKILL)
        process.wait()
        os.kill(int(hung.read_text()), signal.SIGKILL)  # the orphaned module
        process.stdout.close()
        process.stderr.close()

    def test_resume_after_sigkill_skips_completed_modules(self, tmp_path):
        paths, runs = self.build(tmp_path)
        params = {"com.example.hostname": "h", SECRET_KEY: PASSWORD}
        self.kill_mid_run(tmp_path, paths, params)
        state_text = open(paths.run_state_file).read()
        assert stat.S_IMODE(os.stat(paths.run_state_file).st_mode) == 0o600
        assert PASSWORD not in state_text
        header, *completed = [json.loads(line) for line in state_text.splitlines()]
        assert header["target"] == "configure" and len(header["fingerprint"]) == 64
        assert [entry["name"] for entry in completed] == ["one", "two"]
        assert completed[0]["changes"] == {"one": "done"}
        assert runs.read_text() == "one\ntwo\nthree\n"

        proc = run_cli(["--root", paths.root, "--stdin", "--json", "configure"],
                       json.dumps(params))
        assert proc.returncode == 0, proc.stderr
        assert runs.read_text() == "one\ntwo\nthree\nthree\nfour\n"  # one, two not redone
        report = json.loads(proc.stdout)
        assert [m.get("resumed", False) for m in report["modules"]] == [True, True, False, False]
        assert report["changed_keys"] == ["four", "one", "three", "two"]
        assert not os.path.exists(paths.run_state_file)

    def test_other_params_start_over(self, tmp_path):
        paths, runs = self.build(tmp_path)
        self.kill_mid_run(tmp_path, paths, {SECRET_KEY: PASSWORD})
        proc = run_cli(["--root", paths.root, "--stdin", "configure"],
                       json.dumps({SECRET_KEY: PASSWORD + "-changed"}))
        assert proc.returncode == 0, proc.stderr
        assert runs.read_text() == "one\ntwo\nthree\none\ntwo\nthree\nfour\n"
        assert not os.path.exists(paths.run_state_file)


class TestConsoleInput:
    def test_console_input_through_a_pty(self, tmp_path):
        import pty
        import select

        paths = guest(tmp_path)
        add_python_module(paths, "asker", 10, 'params["got"] = params["com.example.name"]',
                          descriptors=[{"key": "com.example.name", "description": "A name.",
                                        "required": True}])
        pid, fd = pty.fork()
        if pid == 0:  # the child: its controlling terminal is the pty
            os.execv(OVM_TEMPLATE_CONFIG, [OVM_TEMPLATE_CONFIG, "--root", paths.root,
                                           "--console-input", "--json", "configure"])
        output = b""
        answered = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
            if not answered and b"com.example.name" in output:
                os.write(fd, b"console-value\n")
                answered = True
        _, status = os.waitpid(pid, 0)
        os.close(fd)
        text = output.decode("utf-8", "replace")
        assert os.waitstatus_to_exitcode(status) == 0, text
        report = json.loads(text[text.index("{"):text.rindex("}") + 1])
        assert report["changed_keys"] == ["got"]
