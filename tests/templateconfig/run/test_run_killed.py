"""A killed runner takes its modules with it (templateconfig/run/runnerdir.py): real
SIGKILLs of ``ovm-template-config`` at random points of a run, then a retry.

Each module leaves a child in its process group that holds the module's lock file, as a
module's helper (a service it started by hand, a ``sleep``) would. After the kill the
module process itself is gone (its parent-death signal); its child lives on until the
retry's runner kills it, before any module runs again: a second instance of a module
that found the lock held would say so. The report never says ``running`` once its runner
is dead, and after the retry no process of the run is left.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import time

from runner_helpers import OVM_TEMPLATE_CONFIG, TIMEOUT, add_shell_module, guest, run_cli
from testlib import require_tool

from ovmd.runreport import read_report

LOCKING = """\
input=$(cat)
exec 9> "$OVM_TEMPLATE_CONFIG_ROOT/{name}.lock"
flock -n 9 || echo "{name}" >> "$OVM_TEMPLATE_CONFIG_ROOT/twice"
sleep 600 &
echo "{name} $$ $!" >> "$OVM_TEMPLATE_CONFIG_ROOT/started"
sleep 0.{pause}
printf '%s\\n' "$input"
"""


def processes_of(root: str):
    """Pids of live processes whose environment names ``root`` as the guest root."""
    marker = ("OVM_TEMPLATE_CONFIG_ROOT=%s" % root).encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % name, "rb") as handle:
                environ = handle.read().split(b"\0")
            with open("/proc/%s/stat" % name, "rb") as handle:
                zombie = handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if marker in environ and not zombie:
            found.append(int(name))
    return found


def wait_gone(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        assert select.select([fd], [], [], TIMEOUT)[0], "process %d still runs" % pid
    finally:
        os.close(fd)


def test_sigkill_at_random_points_then_a_retry(tmp_path):
    require_tool("flock")
    paths = guest(tmp_path)
    for index, name in enumerate(("one", "two", "three")):
        add_shell_module(paths, name, 10 * (index + 1),
                         LOCKING.format(name=name, pause=(index + 1) * 5))
    chance = random.Random(os.getpid())
    started = os.path.join(paths.root, "started")
    for attempt in range(6):
        if os.path.exists(started):
            os.unlink(started)
        runner = subprocess.Popen([OVM_TEMPLATE_CONFIG, "--root", paths.root, "--stdin",
                                   "configure"], stdin=subprocess.PIPE,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        runner.stdin.write(json.dumps({"attempt": str(attempt)}).encode())
        runner.stdin.close()
        time.sleep(chance.uniform(0.0, 0.5))  # somewhere in the run: a random point
        runner.send_signal(signal.SIGKILL)
        runner.wait(TIMEOUT)
        # the module processes die with their runner; what they left in their process
        # groups lives until the next runner
        for line in open(started).read().splitlines() if os.path.exists(started) else []:
            wait_gone(int(line.split()[1]))
        report = read_report(paths)
        assert report is None or report["status"] in ("failed", "done"), report
        if report is not None and report["status"] == "failed" and report.get("error"):
            assert report["error"] == "interrupted: the runner died"
    retry = run_cli(["--root", paths.root, "--stdin", "configure"], "{}")
    assert retry.returncode == 0, retry.stderr
    assert not os.path.exists(os.path.join(paths.root, "twice"))  # never twice at a time
    assert read_report(paths)["status"] == "done"
    assert processes_of(paths.root) == []
    assert not os.path.exists(paths.runners_dir)


def test_a_finished_run_leaves_nothing_its_modules_started_in_their_group(tmp_path):
    paths = guest(tmp_path)
    add_shell_module(paths, "helper", 10, """\
        sleep 600 &
        echo $! > "$OVM_TEMPLATE_CONFIG_ROOT/child"
        cat
        """)
    proc = run_cli(["--root", paths.root, "--stdin", "configure"], "{}")
    assert proc.returncode == 0, proc.stderr
    wait_gone(int(open(os.path.join(paths.root, "child")).read()))
    assert processes_of(paths.root) == []


def test_a_process_group_that_is_not_ours_any_more_is_left_alone(tmp_path):
    """A recorded group whose id now belongs to another process (the pid was reused)."""
    from templateconfig.run.runnerdir import boot_id, kill_group, start_time

    other = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        record = {"pgid": other.pid, "start": start_time(other.pid) - 1, "boot": boot_id()}
        assert kill_group(record) is False and other.poll() is None
        assert kill_group(dict(record, start=record["start"] + 1, boot="another boot")) \
            is False and other.poll() is None
        assert kill_group(dict(record, start=record["start"] + 1)) is True
        assert other.wait(TIMEOUT) == -signal.SIGKILL
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
