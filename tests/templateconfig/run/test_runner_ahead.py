"""Modules started ahead: while a module runs, the runner forks the next Python module's
process, which sets itself up and waits; it runs the script only once it gets its input.

A module started ahead must see what a fresh interpreter sees, must not run at all when
the run stops before its turn, and must run as an exec'd program if the module before it
changed its interpreter line.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from runner_helpers import OVM_TEMPLATE_CONFIG, add_python_module, guest
from test_runner import VIEW_BODY

from templateconfig.run.runner import run_target


def _children(pid: int) -> list:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def test_a_module_started_ahead_sees_a_fresh_process(tmp_path):
    paths = guest(tmp_path)
    add_python_module(paths, "first", 5, 'params["first"] = "1"')
    add_python_module(paths, "viewer", 10, VIEW_BODY)
    forked = run_target(paths, "configure", {"k": "v"}, fork=True)
    fresh = run_target(paths, "configure", {"k": "v"}, fork=False)
    assert [o.status for o in forked.outcomes] == ["ok", "ok"]
    assert json.loads(forked.params["view"]) == json.loads(fresh.params["view"])
    assert json.loads(forked.params["view"])["fds"] == ["0", "1", "2", "3"]


def test_a_module_whose_interpreter_line_changed_meanwhile_is_execd(tmp_path):
    paths = guest(tmp_path)
    second = os.path.join(paths.scripts_dir, "second")
    add_python_module(paths, "first", 5, '''\
        text = open(%r).read().replace("#!/usr/bin/env python", "#!/bin/sh", 1)
        text = text.split("### END PLUGIN INFO")[0] + "### END PLUGIN INFO\\ncat\\n"
        open(%r, "w").write(text)
        ''' % (second, second))
    add_python_module(paths, "second", 10, 'params["second"] = "python"')
    result = run_target(paths, "configure", {"k": "v"}, fork=True)
    assert [o.status for o in result.outcomes] == ["ok", "ok"], [o.error for o in result.outcomes]
    assert result.params == {"k": "v"}  # the shell module printed its input back


def test_after_a_timeout_the_next_module_runs_and_its_time_counts_from_its_start(tmp_path):
    paths = guest(tmp_path)
    add_python_module(paths, "slow", 5, "import time\ntime.sleep(30)")
    add_python_module(paths, "next", 10, 'params["next"] = "ran"')
    result = run_target(paths, "configure", {}, fork=True, timeout=1)
    assert result.outcomes[0].status == "failed" and "timed out" in result.outcomes[0].error
    assert result.params["next"] == "ran"
    # it ran within its own timeout, although its process was started a timeout earlier,
    # and its time is its own: shorter than the slow module's, which is the timeout
    assert result.outcomes[1].status == "ok"
    assert result.outcomes[1].seconds < result.outcomes[0].seconds


def test_an_interrupted_run_leaves_no_module_started_ahead(tmp_path):
    paths = guest(tmp_path)
    started = tmp_path / "started"
    ran = tmp_path / "ran"
    add_python_module(paths, "slow", 5, "open(%r, 'w').close()\nimport time\ntime.sleep(30)"
                      % str(started))
    add_python_module(paths, "next", 10, "open(%r, 'w').close()" % str(ran))
    proc = subprocess.Popen([OVM_TEMPLATE_CONFIG, "--root", paths.root, "--stdin", "configure"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write(b"{}")
    proc.stdin.close()
    deadline = time.monotonic() + 20
    while not (started.exists() and len(_children(proc.pid)) == 2):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    children = _children(proc.pid)  # the slow module and the next one, waiting
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 130
    proc.stdout.close()
    proc.stderr.close()
    for pid in children:
        try:
            with open("/proc/%d/stat" % pid) as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        assert state == "Z", "process %d still runs" % pid
    assert not ran.exists()

