"""``ovmd --status``: the state table of :func:`compute_status`, the exit codes, the text.

The inputs are real files under a sandbox root: the INITIAL_CONFIG flag in the sysconfig
files, the run report ``last-run.json`` (docs/formats.md), plus what a running daemon
knows (None when no daemon answered). A report that says ``running`` names its runner's
pid: a real process, alive and named ``ovm-template-config``, or one that is gone.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from ovmd.paths import Paths
from ovmd.status import BootStatus, compute_status, exit_code, format_status

REPORTS = {
    "none": None,
    "configure-running": {"target": "configure", "status": "running",
                          "modules": [{"name": "a", "status": "running"}]},
    # its runner lives (the pid of a process named ovm-template-config)
    "configure-running-runner-alive": {"target": "configure", "status": "running",
                                       "pid": "runner",
                                       "modules": [{"name": "a", "status": "running"}]},
    # its runner was killed: the pid is gone, or it is no ovm-template-config any more
    "configure-running-runner-died": {"target": "configure", "status": "running",
                                      "pid": "gone",
                                      "modules": [{"name": "a", "status": "running"}]},
    "configure-running-pid-reused": {"target": "configure", "status": "running",
                                     "pid": "other",
                                     "modules": [{"name": "a", "status": "running"}]},
    "configure-done": {"target": "configure", "status": "done",
                       "modules": [{"name": "a", "status": "ok"}]},
    "configure-done-module-failed": {"target": "configure", "status": "done",
                                     "modules": [{"name": "a", "status": "failed"}]},
    "configure-failed": {"target": "configure", "status": "failed",
                         "modules": [{"name": "a", "status": "failed"}]},
    "configure-done-warnings": {"target": "configure", "status": "done", "warnings": 1,
                                "modules": [{"name": "a", "status": "ok",
                                             "warnings": ["firewalld missing: ignored"]}]},
    "configure-refused": {"target": "configure", "status": "failed",
                          "problems": ["a: k: value 'x' is not one of: y"],
                          "modules": [{"name": "a", "status": "pending"}]},
    "cleanup-done": {"target": "cleanup", "status": "done", "modules": []},
    "cleanup-failed": {"target": "cleanup", "status": "failed",
                       "modules": [{"name": "a", "status": "failed"}]},
    "unreadable": "{not json",
}


def daemon(running_target=None, last_result=None, armed=False):
    """What Daemon.status() hands over."""
    return {"running_target": running_target, "armed": armed, "last_result": last_result,
            "events": []}


DAEMONS = {
    "none": None,
    "idle": daemon(),
    "runs-configure": daemon("configure"),
    "runs-cleanup": daemon("cleanup"),
    "last-failed": daemon(last_result="failed"),
    "last-done": daemon(last_result="done"),
    "armed": daemon(last_result="failed", armed=True),  # a configure run is about to start
}

# rows: INITIAL_CONFIG and the run report; columns: the daemon. "+" marks degraded.
STATE_TABLE = """
                                     none         idle         runs-configure runs-cleanup last-failed  last-done    armed
yes configure-running                running      waiting      running      waiting      failed       waiting      waiting
yes configure-running-runner-alive   running      waiting      running      waiting      failed       waiting      waiting
yes configure-running-runner-died    failed       failed       running      failed       failed       failed       waiting
yes configure-running-pid-reused     failed       failed       running      failed       failed       failed       waiting
yes none                             not-started  waiting      running      waiting      failed       waiting      waiting
yes configure-done                   not-started  waiting      running      waiting      failed       waiting      waiting
yes configure-done-module-failed     not-started  waiting      running      waiting      failed       waiting      waiting
yes configure-failed                 failed       failed       running      failed       failed       failed       waiting
yes configure-done-warnings          not-started  waiting      running      waiting      failed       waiting      waiting
yes configure-refused                failed       failed       running      failed       failed       failed       waiting
yes cleanup-done                     not-started  waiting      running      waiting      failed       waiting      waiting
yes cleanup-failed                   not-started  waiting      running      waiting      failed       waiting      waiting
yes unreadable                       not-started  waiting      running      waiting      failed       waiting      waiting
no  none                             not-started  not-started  running      not-started  not-started  done         running
no  configure-running                not-started  not-started  running      not-started  not-started  done         running
no  configure-running-runner-alive   not-started  not-started  running      not-started  not-started  done         running
no  configure-running-runner-died    failed       failed       running      failed       failed       failed       running
no  configure-done                   done         done         running      done         done         done         running
no  configure-done-module-failed     done+        done+        running      done+        done+        done+        running
no  configure-failed                 failed       failed       running      failed       failed       failed       running
no  configure-done-warnings          done+        done+        running      done+        done+        done+        running
no  configure-refused                failed       failed       running      failed       failed       failed       running
no  cleanup-done                     not-started  not-started  running      not-started  not-started  done         running
no  cleanup-failed                   not-started  not-started  running      not-started  not-started  done         running
no  unreadable                       not-started  not-started  running      not-started  not-started  done         running
"""


@pytest.fixture(scope="module")
def pids():
    """Real pids for the reports: a live process named ``ovm-template-config``, one that
    is gone, and a live process that is something else (a reused pid)."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    runner = subprocess.Popen(["bash", "-c", "exec -a ovm-template-config sleep 600"])
    other = subprocess.Popen(["sleep", "600"])
    try:
        yield {"runner": runner.pid, "gone": gone.pid, "other": other.pid}
    finally:
        for process in (runner, other):
            process.kill()
            process.wait()


def _cases():
    lines = [line.split() for line in STATE_TABLE.strip().splitlines()]
    columns = lines[0]
    for flag, report, *cells in lines[1:]:
        for column, cell in zip(columns, cells):
            state = "waiting-for-params" if cell == "waiting" else cell.rstrip("+")
            yield pytest.param(flag, report, column, state, cell.endswith("+"),
                               id="%s-%s-daemon-%s" % (flag, report, column))


def guest(tmp_path, flag, report=None, pids=None):
    """A sandbox root with INITIAL_CONFIG=``flag`` in /etc/sysconfig/ovmd and ``report``
    (its ``pid``, if any, named as in :func:`pids`)."""
    paths = Paths(str(tmp_path))
    os.makedirs(os.path.dirname(paths.sysconfig_ovmd))
    with open(paths.sysconfig_ovmd, "w") as handle:
        handle.write("# first boot\nINITIAL_CONFIG=%s\n" % flag)
    if isinstance(report, dict) and "pid" in report:
        report = dict(report, pid=pids[report["pid"]])
    if report is not None:
        os.makedirs(paths.report_dir, exist_ok=True)
        with open(paths.report_file, "w") as handle:
            handle.write(report if isinstance(report, str) else json.dumps(report))
    return paths


@pytest.mark.parametrize("flag, report, column, state, degraded", list(_cases()))
def test_state_table(tmp_path, pids, flag, report, column, state, degraded):
    paths = guest(tmp_path, flag, REPORTS[report], pids)
    status = compute_status(paths, DAEMONS[column])
    assert (status["status"], status["degraded"]) == (state, degraded)
    assert exit_code(status) == (1 if state == "failed" else 2 if degraded else 0)


@pytest.mark.parametrize("report, run_status, error", [
    ("configure-running-runner-died", "failed", "interrupted: the runner died"),
    ("configure-running-pid-reused", "failed", "interrupted: the runner died"),
    ("configure-running-runner-alive", "running", None),
    ("configure-running", "running", None),  # no pid: an older runner's report
])
def test_a_killed_runners_report_reads_as_interrupted(tmp_path, pids, report, run_status,
                                                       error):
    paths = guest(tmp_path, "no", REPORTS[report], pids)
    last = compute_status(paths, None)["last_run"]
    assert last["status"] == run_status and last.get("error") == error
    assert last["modules"][0] == ({"name": "a", "status": "failed", "error": error} if error
                                  else {"name": "a", "status": "running"})
    assert ("error: interrupted: the runner died" in format_status(
        compute_status(paths, None))) is bool(error)


@pytest.mark.parametrize("files, enabled", [
    ({"ovmd": "INITIAL_CONFIG=yes\n"}, True),
    ({"ovmd": "INITIAL_CONFIG=YES\n"}, True),
    ({"ovmd": 'INITIAL_CONFIG="yes"\n'}, True),
    ({"ovmd": "INITIAL_CONFIG='true'\n"}, True),
    ({"ovmd": "INITIAL_CONFIG=1\n"}, True),
    ({"ovmd": "export INITIAL_CONFIG=yes\n"}, True),
    ({"ovmd": "  INITIAL_CONFIG = yes  \n"}, True),
    ({"ovmd": "INITIAL_CONFIG=no\n"}, False),
    ({"ovmd": "INITIAL_CONFIG=maybe\n"}, False),
    ({"ovmd": "INITIAL_CONFIG=yes\nINITIAL_CONFIG=no\n"}, False),  # the last line wins
    ({"ovmd": "# INITIAL_CONFIG=yes\n"}, False),
    ({"ovmd": "OTHER=1\n"}, False),
    ({}, False),                                                   # no file at all
    # OL7+'s file wins where both set the flag; a file without the flag does not count
    ({"ovmd": "INITIAL_CONFIG=yes\n", "initial": "INITIAL_CONFIG=no\n"}, False),
    ({"ovmd": "INITIAL_CONFIG=no\n", "initial": "INITIAL_CONFIG=yes\n"}, True),
    ({"ovmd": "INITIAL_CONFIG=yes\n", "initial": "OTHER=1\n"}, True),
    ({"initial": "INITIAL_CONFIG=yes\n"}, True),
])
def test_where_initial_config_comes_from(tmp_path, files, enabled):
    paths = Paths(str(tmp_path))
    names = {"ovmd": paths.sysconfig_ovmd, "initial": paths.sysconfig_initial_config}
    for name, content in files.items():
        os.makedirs(os.path.dirname(names[name]), exist_ok=True)
        with open(names[name], "w") as handle:
            handle.write(content)
    status = compute_status(paths, daemon())
    assert status["initial_config"] is enabled
    assert status["status"] == ("waiting-for-params" if enabled else "not-started")


@pytest.mark.parametrize("running, report, field, expected", [
    (None, None, "daemon_running", False),
    (daemon(), None, "daemon_running", True),
    (dict(daemon(), events=[{"event": "4", "names": ["shutdown"]}]), None, "events",
     [{"event": "4", "names": ["shutdown"]}]),
    (None, None, "events", []),
    (None, "cleanup-failed", "last_run", REPORTS["cleanup-failed"]),  # any target's report
    (None, "unreadable", "last_run", None),
    (None, None, "last_run", None),
])
def test_the_other_fields(tmp_path, running, report, field, expected):
    paths = guest(tmp_path, "no", REPORTS[report] if report else None)
    assert compute_status(paths, running)[field] == expected


@pytest.mark.parametrize("status, code", [
    ({"status": "failed", "degraded": False}, 1),
    ({"status": "failed", "degraded": True}, 1),   # failed wins
    ({"status": "done", "degraded": True}, 2),
    ({"status": "done", "degraded": False}, 0),
    ({"status": "running", "degraded": False}, 0),
    ({"status": "waiting-for-params", "degraded": False}, 0),
    ({"status": "not-started"}, 0),
])
def test_exit_codes(status, code):
    assert exit_code(status) == code


BASE = {"status": "done", "degraded": False, "initial_config": False, "daemon_running": True,
        "last_run": None, "events": []}
RUN = {"target": "configure", "status": "done", "started": "2024-05-01T10:00:00+0000",
       "finished": "2024-05-01T10:00:02+0000"}


@pytest.mark.parametrize("changes, expected", [
    ({}, "status: done\ninitial config: no\ndaemon: running\n"),
    ({"degraded": True, "initial_config": True, "daemon_running": False},
     "status: done (degraded)\ninitial config: yes\ndaemon: not running\n"),
    ({"last_run": dict(RUN, modules=[])},
     "status: done\ninitial config: no\ndaemon: running\n"
     "last run: configure done (started 2024-05-01T10:00:00+0000, "
     "finished 2024-05-01T10:00:02+0000)\n"),
    ({"last_run": dict(RUN, modules=[
        {"name": "network", "priority": 50, "status": "ok", "seconds": 0.1234},
        {"name": "ssh", "priority": 70, "status": "failed", "seconds": 2,
         "error": "sshd -t failed\nsecond line"},
        {"name": "authentication", "priority": 90, "status": "pending", "seconds": None},
        {"name": "x", "status": "skipped", "error": "  e" * 100}])},
     "status: done\ninitial config: no\ndaemon: running\n"
     "last run: configure done (started 2024-05-01T10:00:00+0000, "
     "finished 2024-05-01T10:00:02+0000)\n"
     "  network            50  ok       0.12s\n"
     "  ssh                70  failed   2.00s  error: sshd -t failed\n"
     "  authentication     90  pending\n"
     "  x                      skipped    error: " + " ".join(["e"] * 100) + "\n"),
])
def test_format_status(changes, expected):
    assert format_status(dict(BASE, **changes)) == expected


MODULE = {"name": "datetime", "priority": 50, "status": "ok", "seconds": 0.5, "error": None,
          "warnings": ["hwclock --systohc --utc: no hardware clock; ignored"],
          "stderr": "warning: hwclock --systohc --utc: no hardware clock; ignored\nmore"}


@pytest.mark.parametrize("report, long, lines", [
    (dict(RUN, warnings=1, modules=[MODULE]), False,
     ["last run: configure done with 1 warning (started 2024-05-01T10:00:00+0000, "
      "finished 2024-05-01T10:00:02+0000)",
      "  datetime           50  ok       0.50s",
      "      warning: hwclock --systohc --utc: no hardware clock; ignored"]),
    (dict(RUN, warnings=1, modules=[MODULE]), True,
     ["last run: configure done with 1 warning (started 2024-05-01T10:00:00+0000, "
      "finished 2024-05-01T10:00:02+0000)",
      "  datetime           50  ok       0.50s",
      "      warning: hwclock --systohc --utc: no hardware clock; ignored",
      "      stderr:",
      "        warning: hwclock --systohc --utc: no hardware clock; ignored",
      "        more"]),
    (dict(RUN, status="failed", problems=["network: k: bad", "datetime: z: worse"],
          modules=[dict(MODULE, status="pending")]), True,
     ["last run: configure failed (started 2024-05-01T10:00:00+0000, "
      "finished 2024-05-01T10:00:02+0000)",
      "  nothing was run: invalid parameters:",
      "    network: k: bad",
      "    datetime: z: worse"]),
])
def test_format_status_reasons_warnings_and_long(report, long, lines):
    text = format_status(dict(BASE, last_run=report), long=long)
    assert text.splitlines()[3:] == lines


def test_a_run_of_another_target_keeps_the_configure_report_for_the_status(tmp_path):
    """The shutdown target runs at every power-off: after it, --status still says how
    configure went (the runner set the configure report aside), and the report of the
    last run is the shutdown run's."""
    import subprocess

    from testlib import bin_path

    root = tmp_path / "root"
    for target in ("configure", "shutdown"):
        directory = root / "etc/template.d" / ("%s.d" % target)
        directory.mkdir(parents=True)
    scripts = root / "etc/template.d/scripts"
    scripts.mkdir()
    module = scripts / "noop"
    module.write_text("#!/bin/sh\n### BEGIN PLUGIN INFO\n# name: noop\n# configure: 10\n"
                      "# shutdown: 10\n### END PLUGIN INFO\n"
                      "[ \"$1\" = --enumerate ] && { echo '[]'; exit 0; }\ncat\n")
    module.chmod(0o755)
    for target in ("configure", "shutdown"):
        os.symlink("../scripts/noop", str(root / "etc/template.d" / ("%s.d" % target) / "10noop"))
    (root / "etc/sysconfig").mkdir(parents=True)
    (root / "etc/sysconfig/ovmd").write_text("INITIAL_CONFIG=no\n")
    paths = Paths(str(root))
    for target in ("configure", "shutdown", "shutdown"):
        proc = subprocess.run([bin_path("ovm-template-config"), "--root", str(root), "--stdin",
                               target], input="{}", capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    status = compute_status(paths, None)
    assert status["status"] == BootStatus.DONE
    assert status["last_run"]["target"] == "shutdown"
    proc = subprocess.run([bin_path("ovm-template-config"), "--root", str(root), "--stdin",
                           "configure"], input="{}", capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert not os.path.exists(paths.configure_report_file)  # the report is configure's again
    assert compute_status(paths, None)["last_run"]["target"] == "configure"
