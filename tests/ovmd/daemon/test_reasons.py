"""What the host, ``ovmd --status`` and ``ovmd -s`` are told, through the real daemon, the
real runner and the development XenStore: one line per reason (no traceback), the host's
status value at most 1024 bytes cut at a reason boundary, refused params that change
nothing, warnings that make a run "done (degraded)", and ``-s`` telling this run's
result with the runner's own messages and exit status."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runner_helpers import guest_tree, standard_guest

from ovmd.firstboot.contract import MAX_STATUS_VALUE, STATUS_KEY

L = "com.oracle.linux."
ROOT_PASSWORD = L + "root-password"
PASSWORD = "S3cret-Passw0rd-reasons"
#: The daemon's own files: its cache, pid file, control socket.
DAEMON_OWN = ("var/lib/ovmd", "run")

PYTHON = """\
#!/usr/bin/env python3
### BEGIN PLUGIN INFO
# name: {name}
# configure: {priority}
# description: test module {name}
### END PLUGIN INFO
import json
import sys
from templateconfig import common
from templateconfig.cli import main

DESCRIPTORS = {descriptors}


def do_configure(param):
    params = json.loads(param)
{body}
    return json.dumps(params)


main(lambda target: json.dumps(DESCRIPTORS), {{"configure": do_configure}})
"""


def sysconfig(root: Path, initial_config: str) -> None:
    (root / "etc/sysconfig").mkdir(parents=True, exist_ok=True)
    (root / "etc/sysconfig/ovmd").write_text("INITIAL_CONFIG=%s\n" % initial_config)


def add_module(root: Path, name: str, priority: int, body: str, descriptors=()) -> None:
    scripts = root / "etc/template.d/scripts"
    links = root / "etc/template.d/configure.d"
    scripts.mkdir(parents=True, exist_ok=True)
    links.mkdir(parents=True, exist_ok=True)
    script = scripts / name
    script.write_text(PYTHON.format(name=name, priority=priority,
                                    descriptors=repr(list(descriptors)),
                                    body="\n".join("    " + line for line in body.splitlines())))
    script.chmod(0o755)
    os.symlink("../scripts/" + name, str(links / ("%02d%s" % (priority, name))))


def wait_status(host, timeout=60):
    value = host.wait_for(STATUS_KEY, timeout, new_only=False)
    assert value is not None, "no %s from the guest within %ss" % (STATUS_KEY, timeout)
    return value


@pytest.fixture
def ol9(root):
    """The daemon's root: the OL9 fixture with the standard modules, INITIAL_CONFIG=yes."""
    guest = root.parent / "guest"
    standard_guest(guest, "ol9")
    sysconfig(guest, "yes")
    return guest


class TestTheHostIsToldWhy:
    def test_refused_params_change_nothing_and_the_host_gets_every_problem(self, ol9,
                                                                           ovmd_factory,
                                                                           host):
        before = guest_tree(str(ol9), DAEMON_OWN)
        daemon = ovmd_factory(["--quiet-period", "0.1"], root_dir=ol9)
        host.send([(L + "datetime.timezone", "Europe/Pariss"),
                   (L + "network.hostname", "bad_host!name"), (ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == (
            "failed: datetime: com.oracle.linux.datetime.timezone: value 'Europe/Pariss' is "
            "invalid: unknown time zone: not in the guest's zoneinfo database; network: "
            "com.oracle.linux.network.hostname: value 'bad_host!name' is invalid: each label "
            "needs 1-63 letters, digits or hyphens, not starting or ending with a hyphen")
        assert "INITIAL_CONFIG=yes" in (ol9 / "etc/sysconfig/ovmd").read_text()
        assert guest_tree(str(ol9), DAEMON_OWN) == before  # no root password set, nor the rest
        shown = daemon.cli("--status")
        assert shown.returncode == 1
        assert shown.stdout.startswith("status: failed\n")
        assert "  nothing was run: invalid parameters:\n    datetime: " \
               "com.oracle.linux.datetime.timezone: value 'Europe/Pariss' is invalid" \
            in shown.stdout
        assert PASSWORD not in daemon.log_text()

    def test_a_failed_module_is_one_line_and_its_stderr_is_kept(self, root, ovmd_factory,
                                                                 host):
        sysconfig(root, "yes")
        add_module(root, "boom", 20, 'common.run_cmd(["false"])')
        add_module(root, "fine", 30, 'params["fine"] = "yes"')
        daemon = ovmd_factory(["--quiet-period", "0.1"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        value = wait_status(host)
        assert value == "failed: boom: command false failed with exit code 1: no error output"
        assert "INITIAL_CONFIG=yes" in (root / "etc/sysconfig/ovmd").read_text()
        shown = daemon.cli("--status")
        assert shown.returncode == 1
        assert "  boom               20  failed" in shown.stdout
        assert "error: command false failed with exit code 1: no error output" in shown.stdout
        assert "Traceback" not in shown.stdout
        long = daemon.cli("--status", "--long").stdout
        assert "      stderr:\n        Traceback (most recent call last):" in long
        as_json = json.loads(daemon.cli("--status", "--json").stdout)
        boom = as_json["last_run"]["modules"][0]
        assert boom["error"] == "command false failed with exit code 1: no error output"
        assert "templateconfig.common.CommandError" in boom["stderr"]

    def test_the_status_value_is_cut_at_a_reason_boundary(self, root, ovmd_factory, host):
        sysconfig(root, "yes")
        for index in range(6):
            add_module(root, "fail%d" % index, 10 + index,
                       'raise common.TemplateConfigError("%s")' % (("reason %d " % index) * 30))
        ovmd_factory(["--quiet-period", "0.1"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        value = wait_status(host)
        assert len(value.encode("utf-8")) <= MAX_STATUS_VALUE
        reasons = value[len("failed: "):].split("; ")
        assert reasons[-1] == "... (3 more)"
        assert reasons[:-1] == ["fail%d: %s" % (i, ("reason %d " % i * 30).strip())
                                for i in range(3)]
        assert "Traceback" not in value

    def test_warnings_make_the_run_done_but_degraded(self, root, ovmd_factory, host):
        sysconfig(root, "yes")
        add_module(root, "noisy", 20, 'common.warn("the disk is almost full")\n'
                   'sys.stderr.write("noisy: frobnication ignored\\n")')
        daemon = ovmd_factory(["--quiet-period", "0.1"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == "done"
        assert "INITIAL_CONFIG=no" in (root / "etc/sysconfig/ovmd").read_text()
        shown = daemon.cli("--status")
        assert shown.returncode == 2, shown.stdout
        assert shown.stdout.startswith("status: done (degraded)\n")
        assert "      warning: the disk is almost full\n      warning: frobnication ignored\n" \
            in shown.stdout
        report = json.loads(daemon.cli("--status", "--json").stdout)["last_run"]
        assert report["warnings"] == 2 and report["status"] == "done"
        assert "noisy: warning: the disk is almost full" in daemon.log_text()


class TestScript:
    """``ovmd -s TARGET``: this run's result, the runner's messages and exit status."""

    def test_an_unknown_target_is_the_runner_s_message(self, root, ovmd_factory):
        sysconfig(root, "no")
        daemon = ovmd_factory()
        result = daemon.cli("-s", "bogus")
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == ("ovm-template-config: unknown target 'bogus'; the targets "
                                 "are: configure, unconfigure, reconfigure, cleanup, suspend, "
                                 "resume, migrate, shutdown\n")

    def test_a_missing_required_key_is_the_runner_s_message(self, root, ovmd_factory):
        sysconfig(root, "no")
        add_module(root, "needs", 20, "", descriptors=[
            {"key": "com.example.k", "required": True}])
        daemon = ovmd_factory()
        result = daemon.cli("-s", "configure")
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == (
            "ovm-template-config: needs: com.example.k: required, but not given\n"
            "ovm-template-config: invalid parameters (1 problem): nothing was changed\n")

    def test_it_prints_this_run_s_result(self, root, ovmd_factory):
        sysconfig(root, "no")
        add_module(root, "flaky", 20,
                   'if os.path.exists(common.root_path("/fail")):\n'
                   '    raise common.TemplateConfigError("the fail file is there")\n'
                   'common.warn("all is well, mostly")')
        script = root / "etc/template.d/scripts/flaky"
        script.write_text(script.read_text().replace("import json\n", "import json\nimport os\n"))
        daemon = ovmd_factory()
        first = daemon.cli("-s", "configure")
        assert first.returncode == 0, first.stderr
        lines = first.stdout.splitlines()
        assert lines[0] == "ovm-template-config configure: done with 1 warning"
        assert lines[1].split()[:3] == ["flaky", "20", "ok"]
        assert lines[2:] == ["      warning: all is well, mostly"]
        (root / "fail").write_text("")
        second = daemon.cli("-s", "configure")
        assert second.returncode == 1
        lines = second.stdout.splitlines()
        assert lines[0] == "ovm-template-config configure: failed"
        assert lines[1].split()[:3] == ["flaky", "20", "failed"]
        assert lines[1].endswith("error: the fail file is there")
        assert second.stderr == ""
