"""First boot: ``--initial-config``, and the console dialog racing the message path.

Everything runs the installed ``ovm-template-config`` in real processes on a sandbox root;
the console dialog runs on a real pseudo-terminal that is its controlling terminal, as on
the system console under ``ovm-template-initial-config.service``. Waiting is on events
(FIFOs, pipes, the pty's output, process exit), never on fixed sleeps.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from runner_helpers import (
    TIMEOUT,
    ConsoleOnPty,
    add_python_module,
    guest,
    ran,
    recording_module,
    run_cli,
)

from ovmd.firstboot.contract import EXIT_ALREADY_CONFIGURED
from ovmd.firstboot.flag import initial_config_value
from templateconfig.run.firstboot import AlreadyConfigured, FirstBootRun, NothingToDo, StoodDown
from templateconfig.run.runner import Runner

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


class TestFirstBootRun:
    """``FirstBootRun.run`` in-process: what each state of the flag does to a run."""

    @pytest.mark.parametrize("flag, console, dry_run, expected", [
        ("yes", False, False, ("ran", "no", ["recorder run=first-boot"])),
        ("yes", True, False, ("ran", "no", ["recorder run=first-boot"])),
        # a dry run changes no flag (and skips a module that cannot plan)
        ("yes", False, True, ("ran", "yes", [])),
        ("no", False, False, (AlreadyConfigured, "no", [])),
        ("no", True, False, (StoodDown, "no", [])),
        ("no", False, True, (AlreadyConfigured, "no", [])),
        ("no", True, True, (AlreadyConfigured, "no", [])),
    ])
    def test_the_run_happens_only_while_the_guest_waits_for_it(self, tmp_path, flag, console,
                                                                dry_run, expected):
        paths = guest(tmp_path)
        recording_module(paths, tmp_path)
        set_flag(paths, initial=flag)
        first_boot = FirstBootRun(paths, console=console, dry_run=dry_run)
        runner = Runner(paths, "configure", dry_run=dry_run)
        try:
            result = first_boot.run(runner, {"run": "first-boot"})
            outcome = "ran" if result.ok else "failed"
        except (AlreadyConfigured, StoodDown) as exc:
            outcome = type(exc)
        assert (outcome, initial_config_value(paths), ran(tmp_path)) == expected

    def test_the_exit_statuses_are_the_contracts(self):
        assert AlreadyConfigured().exit_status == EXIT_ALREADY_CONFIGURED == 4
        assert StoodDown().exit_status == NothingToDo().exit_status == 0


# --- the console dialog -----------------------------------------------------------------------

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


def first_boot_dialog(console, paths):
    """The console dialog of ovm-template-initial-config.service, on a pty."""
    return console(["--root", paths.root, "--console-input", "--initial-config", "configure"])


class TestConsoleRace:
    def test_the_dialog_stands_down_when_the_message_path_configures_first(self, tmp_path,
                                                                          console):
        paths = console_guest(tmp_path)
        dialog = first_boot_dialog(console, paths)
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
        dialog = first_boot_dialog(console, paths)
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
        dialog = first_boot_dialog(console, paths)
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
        dialog = first_boot_dialog(console, paths)
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

        from testlib import bin_path, start_xenstored

        from ovmd.paths import Paths

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
