"""The ``ovmd`` command line and the daemon's life cycle, with the real daemon."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from daemon_helpers import wait_consumed
from testlib import bin_path, start_xenstored

from ovmd.control import ControlClient, ControlError
from ovmd.paths import Paths


def run_ovmd(root, *args, env=None):
    return subprocess.run([bin_path("ovmd"), "--root", str(root)] + list(args),
                          capture_output=True, text=True, timeout=60, env=env)


class TestWithoutDaemon:
    @pytest.mark.parametrize("args", [["-g", "k"], ["-l"], ["-p", "k=v"], ["-x"], ["-r", "k"]])
    def test_a_clear_one_line_error(self, root, args):
        result = run_ovmd(root, *args)
        assert result.returncode == 3
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert "not running" in result.stderr

    def test_status_without_daemon(self, root):
        """The files' status, and exit 3: first boot is not done, nothing will do it."""
        result = run_ovmd(root, "--status", "--json")
        assert result.returncode == 3
        status = json.loads(result.stdout)
        assert status["status"] == "not-started" and status["daemon_running"] is False
        assert result.stderr.startswith("ovmd: the ovmd daemon is not running")
        assert run_ovmd(root, "--status", "--wait").returncode == 3

    @pytest.mark.parametrize("state, code", [("done", 0), ("failed", 1)])
    def test_status_without_daemon_once_first_boot_is_over(self, root, state, code):
        """Done or failed: the files say all there is, the exit status is the status's."""
        from ovmd.runreport import RunStatus

        report = Paths(str(root)).report_file
        os.makedirs(os.path.dirname(report))
        with open(report, "w") as handle:
            json.dump({"target": "configure", "status": getattr(RunStatus, state.upper()),
                       "modules": []}, handle)
        (root / "etc/sysconfig").mkdir()
        (root / "etc/sysconfig/ovmd").write_text(
            "INITIAL_CONFIG=%s\n" % ("no" if state == "done" else "yes"))
        result = run_ovmd(root, "--status")
        assert (result.returncode, result.stderr) == (code, "")
        assert result.stdout.startswith("status: %s\n" % state)

    def test_help_documents_exit_codes_and_every_flag(self, root):
        result = run_ovmd(root, "--help")
        assert result.returncode == 0
        for flag in ("--set-param", "--get-param", "--delete-param", "--delete-params",
                     "--list-params", "--event", "--script", "--debug", "--pid-file",
                     "--time-period", "--version", "--foreground", "--root", "--xenstore",
                     "--enable-initial-config", "--disable-initial-config", "--status",
                     "--quiet-period", "exit codes"):
            assert flag in result.stdout

    def test_version(self, root):
        result = run_ovmd(root, "-v")
        assert result.returncode == 0 and result.stdout.startswith("ovmd ")

    def test_set_param_without_an_argument_is_a_usage_error(self, root):
        assert run_ovmd(root, "-p").returncode == 2

    def test_initial_config_flags_preserve_other_lines(self, root):
        sysconfig = root / "etc/sysconfig/ovmd"
        sysconfig.parent.mkdir(parents=True)
        sysconfig.write_text("# comment\nOTHER=1\nINITIAL_CONFIG=no\nMORE=x\n")
        assert run_ovmd(root, "--enable-initial-config").returncode == 0
        assert sysconfig.read_text() == "# comment\nOTHER=1\nINITIAL_CONFIG=yes\nMORE=x\n"
        assert run_ovmd(root, "--disable-initial-config").returncode == 0
        assert sysconfig.read_text() == "# comment\nOTHER=1\nINITIAL_CONFIG=no\nMORE=x\n"


class TestClientFlags:
    def test_set_param_reads_the_value_from_stdin_when_given_a_key_alone(self, ovmd, host):
        """-p KEY keeps a secret off the command line (and so out of /proc/*/cmdline)."""
        result = ovmd.cli("-p", "com.example.db-password", input="s3cret value\n")
        assert result.returncode == 0, result.stderr
        assert ovmd.cli("-g", "com.example.db-password").stdout == "s3cret value\n"
        assert host.received()["com.example.db-password"] == "s3cret value"

    def test_set_param_on_a_terminal_asks_and_reads_without_echo(self, ovmd, host):
        """-p KEY typed at a terminal: a prompt, then the value read with echo off (a real
        pty as the controlling terminal), never shown on the screen."""
        from runner_helpers import ConsoleOnPty

        key = "com.example.db-password"
        console = ConsoleOnPty(["--root", str(ovmd.root), "-p", key], command=bin_path("ovmd"))
        try:
            console.expect("value for %s (not shown): " % key)
            assert not console.echo_on()
            console.type("typed s3cret")
            assert console.finish() == 0, console.transcript
            assert console.echo_on()  # the terminal is given back as it was
        finally:
            console.close()
        assert "typed s3cret" not in console.transcript
        assert ovmd.cli("-g", key).stdout == "typed s3cret\n"
        assert host.received()[key] == "typed s3cret"

    def test_set_get_delete_list_clear(self, ovmd, host):
        assert ovmd.cli("-p", "com.b=2").returncode == 0
        assert ovmd.cli("--set-param", "com.a=1=one").returncode == 0
        assert ovmd.cli("-g", "com.a").stdout == "1=one\n"
        assert ovmd.cli("--get-param=com.b").stdout == "2\n"
        assert ovmd.cli("-l").stdout == '{"com.a": "1=one"}\n{"com.b": "2"}\n'
        assert host.received() == {"com.a": "1=one", "com.b": "2"}
        assert ovmd.cli("-r", "com.a").returncode == 0
        missing = ovmd.cli("-g", "com.a")
        assert missing.returncode == 1 and "com.a" in missing.stderr and missing.stdout == ""
        assert ovmd.cli("-x").returncode == 0
        assert ovmd.cli("-l").stdout == ""

    def test_cache_survives_a_restart(self, ovmd_factory, host, dom0):
        daemon = ovmd_factory()
        wait_consumed(dom0, host.send([("com.kept", "yes")]))
        assert daemon.terminate() == 0
        again = ovmd_factory()
        assert again.cli("-g", "com.kept").stdout == "yes\n"
        cache = again.paths.cache_file
        assert stat.S_IMODE(os.stat(os.path.dirname(cache)).st_mode) == 0o700
        for name in os.listdir(os.path.dirname(cache)):
            assert stat.S_IMODE(os.stat(os.path.join(os.path.dirname(cache), name)).st_mode) \
                == 0o600

    def test_event_is_sent_to_the_host(self, ovmd, host):
        assert ovmd.cli("-e", "shutdown").returncode == 0
        assert host.received()["VMAPIEvent"] == "4"
        bad = ovmd.cli("-e", "bogus")
        assert bad.returncode == 2 and "unknown event" in bad.stderr

    def test_time_period_is_accepted(self, ovmd_factory):
        daemon = ovmd_factory(["-t", "30"])
        assert daemon.cli("-l").returncode == 0

    def test_list_pipes_into_the_runner(self, ovmd, host, dom0):
        wait_consumed(dom0, host.send([("com.example.a", "1"), ("com.example.b", "two")]))
        listed = ovmd.cli("-l").stdout
        runner = subprocess.run(
            [bin_path("ovm-template-config"), "--root", str(ovmd.root), "--stdin",
             "--json", "configure"], input=listed, capture_output=True, text=True, timeout=60)
        assert runner.returncode == 0, runner.stderr

    def test_runner_reads_params_from_the_daemon(self, ovmd):
        client = ControlClient(ovmd.paths.control_socket)
        ovmd.cli("-p", "com.example.z=9", check=True)
        assert client.list_params() == [("com.example.z", "9")]
        assert client.call("-l")[0] == 0


class TestBadLocalInput:
    """Every bad input from the command line: a one-line error naming the real limit, and
    the daemon's cache unchanged (``-l`` still works)."""

    @pytest.mark.parametrize("args, stdin, error", [
        (["-p", "com.example.big"], "x" * (2 << 20),  # 2 MiB (argv cannot hold that much)
         "ovmd: the value of 'com.example.big' is 2097152 bytes long; the limit is 8192 "
         "bytes"),
        (["-p", "com.example.big=" + "x" * 100000], None,
         "ovmd: the value of 'com.example.big' is 100000 bytes long; the limit is 8192 bytes"),
        (["-p", "com.example.big"], "y" * 9000 + "\n",
         "ovmd: the value of 'com.example.big' is 9000 bytes long; the limit is 8192 bytes"),
        (["-p", "com.example.k=" + "\u00e9" * 4097], None,
         "ovmd: the value of 'com.example.k' is 8194 bytes long; the limit is 8192 bytes"),
        (["-p", b"com.example.\xff=v".decode("utf-8", "surrogateescape")], None,
         "ovmd: key 'com.example.\\udcff' is not valid UTF-8"),
        (["-p", "com.example.k"], b"caf\xe9\n", "ovmd: the value of 'com.example.k' is not "
         "valid UTF-8"),
        (["-p", "k" * 257 + "=v"], None, "is 257 bytes long; the limit is 256 bytes"),
        (["-p", "VMAPIEvent=8"], None, "ovmd: VMAPIEvent is reserved: use -e EVENT"),
    ])
    def test_a_clear_error_and_nothing_stored(self, ovmd, args, stdin, error):
        self.refused(ovmd, args, stdin, error, code=1)

    @pytest.mark.parametrize("args, error", [
        (["-e", "\u00b2"], "ovmd: unknown event '\u00b2'"),
        (["-e", "9" * 5000], "ovmd: unknown event"),
        (["-e", "0xZZ"], "ovmd: unknown event '0xZZ'"),
        (["-e", "4294967296"], "or a number 0..4294967295"),
    ])
    def test_a_bad_event_is_bad_usage_and_nothing_stored(self, ovmd, args, error):
        self.refused(ovmd, args, None, error, code=2)

    @staticmethod
    def refused(ovmd, args, stdin, error, code):
        ovmd.cli("-p", "com.example.before=1", check=True)
        argv = [bin_path("ovmd"), "--root", str(ovmd.root)] + args
        result = subprocess.run(argv, input=stdin.encode() if isinstance(stdin, str) else stdin,
                                capture_output=True, timeout=60)
        stderr = result.stderr.decode("utf-8", "replace")
        assert result.returncode == code, stderr
        assert len(stderr.strip().splitlines()) == 1 and error in stderr
        assert "Traceback" not in stderr and "refused the connection" not in stderr
        listed = ovmd.cli("-l")
        assert listed.returncode == 0 and listed.stdout == '{"com.example.before": "1"}\n'
        assert ovmd.process.poll() is None


class TestControlSocketPermissions:
    def test_socket_is_root_only(self, ovmd):
        path = ovmd.paths.control_socket
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700

    @pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch uid")
    def test_another_uid_is_refused_even_if_the_file_modes_are_opened(self, ovmd):
        path = ovmd.paths.control_socket
        # open the file-system gate on purpose: SO_PEERCRED must still refuse
        directory = os.path.dirname(path)
        while len(directory) >= len(str(ovmd.root.parent)):
            os.chmod(directory, 0o755)
            directory = os.path.dirname(directory)
        os.chmod(path, 0o777)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: become nobody, then try
            os.close(read_fd)
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    ControlClient(path).call("get", "x")
                    answer = b"answered"
                except ControlError as err:
                    answer = ("refused %d" % err.code).encode()
                os.write(write_fd, answer)
            finally:
                os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read()
        os.waitpid(pid, 0)
        assert answer == b"refused 4"
        assert "refused a control connection from uid 65534" in ovmd.log_text()
        assert ovmd.cli("-l").returncode == 0  # root still served

    @pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch uid")
    def test_another_uid_cannot_reach_the_socket_directory(self, ovmd):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setuid(65534)
                try:
                    ControlClient(ovmd.paths.control_socket).call("list")
                except ControlError as err:
                    code = 0 if err.code == 4 else 2
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0


class TestLifeCycle:
    def test_sigterm_stops_cleanly(self, ovmd):
        assert ovmd.terminate() == 0
        assert not os.path.exists(ovmd.paths.control_socket)
        assert not os.path.exists(ovmd.paths.pid_file)
        assert "ovmd stopping" in ovmd.log_text()

    def test_sighup_reopens_logs_and_keeps_running(self, ovmd):
        ovmd.process.send_signal(signal.SIGHUP)
        assert ovmd.cli("-l").returncode == 0
        assert ovmd.process.poll() is None

    def test_a_second_instance_fails_clearly(self, ovmd, ovmd_factory):
        second = ovmd_factory(start=False)
        second.start(wait_ready=False)
        assert second.process.wait(20) == 1
        assert "already running (pid %d" % ovmd.process.pid in second.log_text()
        assert ovmd.cli("-l").returncode == 0

    def test_pid_file_is_not_stale_after_sigkill(self, ovmd, ovmd_factory):
        pid_file = ovmd.paths.pid_file
        assert open(pid_file).read().strip() == str(ovmd.process.pid)
        ovmd.kill()
        assert os.path.exists(pid_file)  # left behind, but not locked
        again = ovmd_factory()
        assert open(pid_file).read().strip() == str(again.process.pid)

    def test_daemonizes_by_default(self, root, xenstored):
        paths = Paths(str(root))
        notify_dir = tempfile.mkdtemp(prefix="ntf-", dir="/tmp")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(notify_dir, "n"))
        notify.settimeout(30)
        env = dict(os.environ, NOTIFY_SOCKET=os.path.join(notify_dir, "n"))
        argv = [bin_path("ovmd"), "--root", str(root), "--xenstore",
                xenstored.guest_socket(1), "-d", "0"]
        pid = None
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=30, env=env)
            assert result.returncode == 0, result.stderr
            assert b"READY=1" in notify.recv(4096)  # sent by the detached daemon
            pid = int(open(paths.pid_file).read())
            assert pid != os.getpid()
            assert ControlClient(paths.control_socket).call("ping")[0] == 0
            second = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert second.returncode == 1
            assert "already running (pid %d" % pid in second.stderr
        finally:
            notify.close()
            shutil.rmtree(notify_dir, ignore_errors=True)
            if pid:
                os.kill(pid, signal.SIGTERM)


class TestWhereXenStoreIs:
    """A XenStore path the operator named that cannot be one stops the daemon at start;
    one that does not answer yet is waited for, said once, and connected to when it
    answers (the real server started on it afterwards)."""

    def test_a_named_path_that_is_not_there_is_fatal_at_start(self, root):
        result = run_ovmd(root, "--foreground", "-d", "1", "--xenstore", str(root / "nope"))
        assert result.returncode == 1
        assert result.stderr == (
            "ovmd: --xenstore %s: no such file or directory; give xenstored's socket "
            "(/var/run/xenstored/socket) or the guest's device (/dev/xen/xenbus), or leave "
            "it out to use those\n" % (root / "nope"))
        assert not os.path.exists(Paths(str(root)).run_dir)

    def test_a_socket_that_does_not_answer_yet_is_waited_for_and_said_once(self, root):
        socket_dir = tempfile.mkdtemp(prefix="xsw-", dir="/tmp")
        guest_socket = os.path.join(socket_dir, "domain", "1")
        os.makedirs(os.path.dirname(guest_socket))
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        silent.bind(guest_socket)  # bound, not listening: connections are refused
        daemon = subprocess.Popen([bin_path("ovmd"), "--foreground", "-d", "1", "--verbose",
                                   "--root", str(root), "--xenstore", guest_socket],
                                  stderr=subprocess.PIPE, text=True)
        server = None
        try:
            lines = []
            retries = 0
            while retries < 3:  # the backoff's first retries: 0.1, 0.2, 0.4 s
                line = daemon.stderr.readline()
                assert line, "ovmd ended: %s" % "".join(lines)
                lines.append(line)
                retries += "still cannot connect to XenStore" in line
            warnings = [line for line in lines if " WARNING " in line]
            assert len(warnings) == 1, lines
            assert ("cannot connect to XenStore: cannot connect to xenstored at %s: connection "
                    "refused (xenstored does not answer there yet); retrying every 10 s at "
                    "most, host messages wait in XenStore until then" % guest_socket) \
                in warnings[0]
            ready = next(line for line in lines if " ready (root " in line)
            assert "not connected to XenStore yet" in ready
            silent.close()
            os.unlink(guest_socket)
            server = start_xenstored(Path(socket_dir), {1: "guest1"})
            while "connected to XenStore again" not in line:
                line = daemon.stderr.readline()
                assert line, "ovmd ended"
            assert ControlClient(Paths(str(root)).control_socket).call("ping")[0] == 0
        finally:
            daemon.terminate()
            daemon.wait(10)
            if server is not None:
                server.stop()
            silent.close()
            shutil.rmtree(socket_dir, ignore_errors=True)
