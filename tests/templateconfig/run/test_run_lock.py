"""The run lock: one run at a time per root (``templateconfig.run.lock``).

The daemon's first-boot run, the console dialog and an operator may all start a run of
the same root; the second waits for the first, bounded by ``--lock-timeout``. Everything
runs the installed ``ovm-template-config`` in real processes on a sandbox root; waiting
is on events (FIFOs, pipes, process exit), never on fixed sleeps.
"""
from __future__ import annotations

import json
import os
import subprocess

from runner_helpers import (
    OVM_TEMPLATE_CONFIG,
    TIMEOUT,
    add_python_module,
    guest,
    ran,
    recording_module,
    run_cli,
    wait_readable,
)

from templateconfig.run.lock import RunLock, lock_path


class TestRunLock:
    def test_two_runners_on_one_root_serialise(self, tmp_path):
        """The second run waits for the lock until the first finishes, then runs whole."""
        paths = guest(tmp_path)
        ready, go = tmp_path / "ready", tmp_path / "go"
        os.mkfifo(ready)
        os.mkfifo(go)
        # the blocker says it started on `ready`, then waits for a line on `go`
        add_python_module(paths, "blocker", 10, '''\
            with open(%r, "a") as handle:
                handle.write("blocker begin run=%%s\\n" %% params["run"])
            with open(%r, "w") as fifo:
                fifo.write("started %%s\\n" %% params["run"])
            with open(%r) as fifo:
                fifo.readline()
            with open(%r, "a") as handle:
                handle.write("blocker end run=%%s\\n" %% params["run"])
            ''' % (str(tmp_path / "ran"), str(ready), str(go), str(tmp_path / "ran")))
        recording_module(paths, tmp_path, "after", 20)
        # read end, plus a write end of our own so that it never reports EOF
        ready_fd = os.open(ready, os.O_RDWR | os.O_NONBLOCK)
        processes = []
        try:
            def start(run):
                process = subprocess.Popen(
                    [OVM_TEMPLATE_CONFIG, "--root", paths.root, "--stdin", "configure"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
                processes.append(process)
                process.stdin.write(json.dumps({"run": run}))
                process.stdin.close()
                return process

            def release(run):
                assert wait_readable(ready_fd), "run %s's blocker did not start" % run
                assert os.read(ready_fd, 100) == b"started %s\n" % run.encode()
                with open(go, "w") as fifo:  # opens once the blocker waits on it
                    fifo.write("go\n")

            first = start("1")
            assert wait_readable(ready_fd), "the first run's blocker did not start"
            second = start("2")
            # the second announces that it waits for the lock
            assert wait_readable(second.stderr.fileno())
            line = second.stderr.readline()
            assert "another run of this root (pid %d) is in progress; waiting" % first.pid in line
            assert second.poll() is None
            assert ran(tmp_path) == ["blocker begin run=1"]  # the second ran nothing yet

            release("1")
            assert first.wait(TIMEOUT) == 0, first.stderr.read()
            release("2")
            assert second.wait(TIMEOUT) == 0, second.stderr.read()
        finally:
            os.close(ready_fd)
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert ran(tmp_path) == ["blocker begin run=1", "blocker end run=1", "after run=1",
                                 "blocker begin run=2", "blocker end run=2", "after run=2"]
        st = os.stat(lock_path(paths))
        assert st.st_mode & 0o777 == 0o600
        assert os.stat(paths.run_dir).st_mode & 0o777 == 0o700

    def test_lock_timeout_exits_5_and_runs_nothing(self, tmp_path):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        with RunLock(paths):  # another run of this root holds the lock
            proc = run_cli(["--root", paths.root, "--stdin", "--lock-timeout", "0.5",
                            "configure"], "{}")
        assert proc.returncode == 5, proc.stderr
        assert "still holds" in proc.stderr and "pid %d" % os.getpid() in proc.stderr
        # it waited: it said so first, and gave up while the lock was still held
        waiting = proc.stderr.find("is in progress; waiting up to 0.5 s")
        assert 0 <= waiting < proc.stderr.index("still holds"), proc.stderr
        assert ran(tmp_path) == []
        assert not os.path.exists(paths.report_file)

    def test_the_lock_is_free_again_after_a_run_killed_by_sigkill(self, tmp_path):
        paths = guest(tmp_path)
        ready = tmp_path / "ready"
        os.mkfifo(ready)
        add_python_module(paths, "hang", 10, '''\
            with open(%r, "w") as fifo:
                fifo.write("hanging\\n")
            import time
            time.sleep(600)
            ''' % str(ready))
        process = subprocess.Popen([OVM_TEMPLATE_CONFIG, "--root", paths.root, "--stdin",
                                    "configure"], stdin=subprocess.PIPE,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        process.stdin.close()
        fd = os.open(ready, os.O_RDWR | os.O_NONBLOCK)
        try:
            assert wait_readable(fd)
        finally:
            os.close(fd)
        process.kill()
        process.wait()
        lock = RunLock(paths, timeout=0)
        lock.acquire()  # free at once: the kernel dropped the dead runner's flock
        lock.release()

    def test_dry_run_and_enumerate_take_no_lock(self, tmp_path):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        with RunLock(paths):
            # (--lock-timeout is refused with -e; a lock taken would wait its default 600 s,
            # past run_cli's timeout)
            assert run_cli(["--root", paths.root, "-e", "configure"], timeout=30).returncode == 0
            proc = run_cli(["--root", paths.root, "--stdin", "--dry-run", "--lock-timeout", "0",
                            "configure"], "{}")
            assert proc.returncode == 0, proc.stderr
