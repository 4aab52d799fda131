"""First boot: the run lock, ``--initial-config``, and the console dialog racing the message path.

Everything runs the installed ``ovm-template-config`` in real processes on a sandbox root;
the console dialog runs on a real pseudo-terminal that is its controlling terminal, as on
the system console under ``ovm-template-initial-config.service``. Waiting is on events
(FIFOs, pipes, the pty's output, process exit), never on fixed sleeps.
"""
from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import termios
import time

import pytest

from runner_helpers import OVM_TEMPLATE_CONFIG, add_python_module, guest, run_cli
from templateconfig.run.lock import RunLock, lock_path

TIMEOUT = 30.0
PASSWORD_KEY = "com.example.admin-password"
SECRET = "Sw0rdfish-console-9"


def set_flag(paths, ovmd=None, initial=None):
    """Write INITIAL_CONFIG into the two sysconfig files (None: no such file)."""
    os.makedirs(os.path.dirname(paths.sysconfig_ovmd), exist_ok=True)
    for path, value in ((paths.sysconfig_ovmd, ovmd), (paths.sysconfig_initial_config, initial)):
        if value is None:
            if os.path.exists(path):
                os.unlink(path)
        else:
            with open(path, "w") as handle:
                handle.write("# first boot\nINITIAL_CONFIG=%s\nOTHER=kept\n" % value)


def read(path):
    with open(path) as handle:
        return handle.read()


def ran(tmp_path):
    path = tmp_path / "ran"
    return path.read_text().splitlines() if path.exists() else []


def recording_module(paths, tmp_path, name="recorder", priority=50, descriptors=None):
    """A module that appends ``NAME run=<params["run"]>`` to tmp_path/ran."""
    add_python_module(paths, name, priority, '''\
        with open(%r, "a") as handle:
            handle.write("%s run=%%s\\n" %% params.get("run", "?"))
        params["%s.done"] = "yes"
        ''' % (str(tmp_path / "ran"), name, name), descriptors=descriptors)


def wait_readable(fd, timeout=TIMEOUT):
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


# --- the run lock ------------------------------------------------------------------------

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
            started = time.monotonic()
            proc = run_cli(["--root", paths.root, "--stdin", "--lock-timeout", "0.5",
                            "configure"], "{}")
            waited = time.monotonic() - started
        assert proc.returncode == 5, proc.stderr
        assert "still holds" in proc.stderr and "pid %d" % os.getpid() in proc.stderr
        assert waited >= 0.5
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
            assert run_cli(["--root", paths.root, "-e", "--lock-timeout", "0",
                            "configure"]).returncode == 0
            proc = run_cli(["--root", paths.root, "--stdin", "--dry-run", "--lock-timeout", "0",
                            "configure"], "{}")
            assert proc.returncode == 0, proc.stderr


# --- --initial-config (the message path) ----------------------------------------------------

class TestInitialConfig:
    def test_not_yes_exits_4_and_runs_nothing(self, tmp_path):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        set_flag(paths, ovmd="no", initial="no")
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"], "{}")
        assert proc.returncode == 4, proc.stderr
        assert "already configured; nothing done" in proc.stderr
        assert ran(tmp_path) == []
        assert not os.path.exists(paths.report_file)

    def test_the_initial_config_file_wins_over_sysconfig_ovmd(self, tmp_path):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        set_flag(paths, ovmd="yes", initial="no")
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"], "{}")
        assert proc.returncode == 4
        assert ran(tmp_path) == []

    def test_success_sets_no_in_both_files_keeping_the_other_lines(self, tmp_path):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        set_flag(paths, ovmd="yes", initial="yes")
        os.chmod(paths.sysconfig_initial_config, 0o640)
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"],
                       '{"run": "host"}')
        assert proc.returncode == 0, proc.stderr
        assert ran(tmp_path) == ["recorder run=host"]
        for path in (paths.sysconfig_ovmd, paths.sysconfig_initial_config):
            assert read(path) == "# first boot\nINITIAL_CONFIG=no\nOTHER=kept\n"
        assert os.stat(paths.sysconfig_initial_config).st_mode & 0o777 == 0o640
        # and the next one stands down
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"], "{}")
        assert proc.returncode == 4
        assert ran(tmp_path) == ["recorder run=host"]

    def test_only_existing_files_are_written(self, tmp_path):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        set_flag(paths, initial="yes")
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"], "{}")
        assert proc.returncode == 0, proc.stderr
        assert "INITIAL_CONFIG=no" in read(paths.sysconfig_initial_config)
        assert not os.path.exists(paths.sysconfig_ovmd)

    def test_a_failed_run_leaves_the_flag_yes(self, tmp_path):
        paths = guest(tmp_path)
        add_python_module(paths, "broken", 10, "sys.exit(3)")
        set_flag(paths, ovmd="yes", initial="yes")
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"], "{}")
        assert proc.returncode == 1
        assert "INITIAL_CONFIG=yes" in read(paths.sysconfig_initial_config)
        assert "INITIAL_CONFIG=yes" in read(paths.sysconfig_ovmd)


# --- the console dialog -----------------------------------------------------------------------

class ConsoleOnPty:
    """``ovm-template-config`` on a pty that is its controlling terminal (as the system
    console is for the unit); the test plays the user on the master side and keeps the
    slave open, to read the terminal's settings after the process is gone."""

    def __init__(self, argv, env=None):
        import pty

        self.master, self.slave = pty.openpty()
        full_env = dict(os.environ)
        full_env.pop("OVM_TEMPLATE_CONFIG_NO_FORK", None)
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [OVM_TEMPLATE_CONFIG] + list(argv), stdin=self.slave, stdout=self.slave,
            stderr=self.slave, start_new_session=True, env=full_env,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        self.transcript = ""
        self._mark = 0

    def _read_some(self, deadline):
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        self.transcript += os.read(self.master, 4096).decode("utf-8", "replace").replace("\r\n", "\n")
        return True

    def expect(self, text):
        deadline = time.monotonic() + TIMEOUT
        while text not in self.transcript[self._mark:]:
            if not self._read_some(deadline) and time.monotonic() >= deadline:
                raise AssertionError("did not see %r; transcript:\n%s" % (text, self.transcript))
        self._mark = self.transcript.index(text, self._mark) + len(text)

    def type(self, line):
        os.write(self.master, line.encode() + b"\r")

    def echo_on(self):
        return bool(termios.tcgetattr(self.slave)[3] & termios.ECHO)

    def finish(self):
        try:
            code = self.process.wait(TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        while self._read_some(time.monotonic() + 0.2):
            pass
        return code

    def close(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def console():
    consoles = []

    def start(argv, env=None):
        dialog = ConsoleOnPty(argv, env)
        consoles.append(dialog)
        return dialog

    yield start
    for dialog in consoles:
        dialog.close()


DESCRIPTORS = [{"key": "com.example.name", "description": "A name.", "required": True},
               {"key": PASSWORD_KEY, "description": "The admin password.", "required": True,
                "password": True}]


def console_guest(tmp_path):
    paths = guest(tmp_path)
    add_python_module(paths, "recorder", 50, '''\
        with open(%r, "a") as handle:
            handle.write("recorder name=%%s\\n" %% params["com.example.name"])
        ''' % str(tmp_path / "ran"), descriptors=DESCRIPTORS)
    set_flag(paths, ovmd="yes", initial="yes")
    return paths


class TestConsoleRace:
    def test_the_dialog_stands_down_when_the_message_path_configures_first(self, tmp_path,
                                                                          console):
        paths = console_guest(tmp_path)
        dialog = console(["--root", paths.root, "--console-input", "--initial-config",
                          "configure"])
        dialog.expect("com.example.name")
        dialog.expect("Value (required): ")
        dialog.type("console-host")
        dialog.expect("Password: ")
        assert not dialog.echo_on()  # echo goes off before the prompt is shown
        # the host's parameters arrive: the message path runs and sets INITIAL_CONFIG=no
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"],
                       json.dumps({"com.example.name": "from-host", PASSWORD_KEY: SECRET}))
        assert proc.returncode == 0, proc.stderr
        dialog.expect("configured by the host; console dialog stopped")
        assert dialog.finish() == 0, dialog.transcript
        assert dialog.echo_on()  # the terminal was restored
        assert ran(tmp_path) == ["recorder name=from-host"]  # the console ran nothing
        assert "INITIAL_CONFIG=no" in read(paths.sysconfig_initial_config)

    def test_a_change_that_keeps_the_flag_yes_does_not_stop_the_dialog(self, tmp_path,
                                                                       console):
        paths = console_guest(tmp_path)
        dialog = console(["--root", paths.root, "--console-input", "--initial-config",
                          "configure"])
        dialog.expect("Value (required): ")
        # another file in /etc/sysconfig changes, and the flag file is rewritten as yes
        with open(os.path.join(os.path.dirname(paths.sysconfig_ovmd), "network"), "w") as handle:
            handle.write("NETWORKING=yes\n")
        set_flag(paths, ovmd="yes", initial="yes")
        dialog.type("console-host")
        dialog.expect("Password: ")
        dialog.type(SECRET)
        dialog.expect("Password again: ")
        dialog.type(SECRET)
        assert dialog.finish() == 0, dialog.transcript
        assert ran(tmp_path) == ["recorder name=console-host"]
        assert SECRET not in dialog.transcript

    def test_the_dialog_completing_first_configures_and_the_message_path_stands_down(
            self, tmp_path, console):
        paths = console_guest(tmp_path)
        dialog = console(["--root", paths.root, "--console-input", "--initial-config",
                          "configure"])
        dialog.expect("Value (required): ")
        dialog.type("console-host")
        dialog.expect("Password: ")
        dialog.type(SECRET)
        dialog.expect("Password again: ")
        dialog.type(SECRET)
        dialog.expect("recorder")  # the run's progress line
        assert dialog.finish() == 0, dialog.transcript
        assert ran(tmp_path) == ["recorder name=console-host"]
        for path in (paths.sysconfig_ovmd, paths.sysconfig_initial_config):
            assert "INITIAL_CONFIG=no" in read(path) and "OTHER=kept" in read(path)
        proc = run_cli(["--root", paths.root, "--initial-config", "--stdin", "configure"],
                       json.dumps({"com.example.name": "from-host", PASSWORD_KEY: SECRET}))
        assert proc.returncode == 4
        assert ran(tmp_path) == ["recorder name=console-host"]
        assert SECRET not in dialog.transcript

    def test_already_configured_exits_0_without_a_question(self, tmp_path, console):
        paths = console_guest(tmp_path)
        set_flag(paths, ovmd="no", initial="no")
        dialog = console(["--root", paths.root, "--console-input", "--initial-config",
                          "configure"])
        assert dialog.finish() == 0
        assert "already configured; nothing to do" in dialog.transcript
        assert "com.example.name" not in dialog.transcript
        assert ran(tmp_path) == []


class TestPrefillFromOvmd:
    def test_keys_in_ovmds_cache_are_not_asked_again(self, console):
        """With the real daemon running, the dialog starts from its cache."""
        import shutil
        import socket
        import tempfile
        from pathlib import Path

        from ovmd.paths import Paths
        from testlib import bin_path, start_xenstored

        base = Path(tempfile.mkdtemp(prefix="ovr-", dir="/tmp"))  # short: socket paths
        xenstored = daemon = None
        try:
            (base / "root").mkdir()
            paths = Paths(str(base / "root"))
            os.makedirs(paths.scripts_dir)
            add_python_module(paths, "recorder", 50, '''\
                with open(%r, "a") as handle:
                    handle.write("recorder name=%%s\\n" %% params["com.example.name"])
                ''' % str(base / "ran"), descriptors=DESCRIPTORS)
            set_flag(paths, ovmd="yes", initial="yes")
            xenstored = start_xenstored(base / "xs", {1: "guest1"})
            notify_path = str(base / "notify")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(notify_path)
            notify.settimeout(TIMEOUT)
            log = open(base / "ovmd.log", "wb")
            daemon = subprocess.Popen(
                [bin_path("ovmd"), "--foreground", "--root", paths.root, "--xenstore",
                 xenstored.guest_socket(1), "-d", "1"], stdout=log, stderr=log,
                env=dict(os.environ, NOTIFY_SOCKET=notify_path))
            try:
                while b"READY=1" not in notify.recv(4096).split(b"\n"):
                    pass
            finally:
                notify.close()
            proc = subprocess.run([bin_path("ovmd"), "--root", paths.root, "-p",
                                   "com.example.name=from-the-cache"],
                                  capture_output=True, text=True, timeout=TIMEOUT)
            assert proc.returncode == 0, proc.stderr
            dialog = console(["--root", paths.root, "--console-input", "--initial-config",
                              "configure"])
            dialog.expect("Password: ")
            dialog.type(SECRET)
            dialog.expect("Password again: ")
            dialog.type(SECRET)
            assert dialog.finish() == 0, dialog.transcript
            assert "com.example.name" not in dialog.transcript  # not asked again
            assert (base / "ran").read_text() == "recorder name=from-the-cache\n"
            assert "INITIAL_CONFIG=no" in read(paths.sysconfig_initial_config)
        finally:
            if daemon is not None:
                daemon.kill()
                daemon.wait()
                log.close()
            if xenstored is not None:
                xenstored.stop()
            shutil.rmtree(base, ignore_errors=True)
