"""First boot end to end: a sandbox root with INITIAL_CONFIG=yes and small shell modules
obeying the module contract, the real daemon, the real ovm-template-config, and the host
sending messages through the development XenStore."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

from daemon_helpers import (
    CHANGE,
    FAIL,
    GATE,
    PASSWORD,
    RECORD,
    ROOT_PASSWORD,
    assert_no_secret_left,
    descendants,
    files_containing,
    kill_quietly,
    make_guest,
    open_gate,
    sysconfig,
    wait_consumed,
    wait_status,
)
from testlib import bin_path

from ovmd.firstboot.contract import STATUS_KEY


class TestFirstBoot:
    def test_success_configures_wipes_secrets_and_reports_back(self, root, ovmd_factory,
                                                               host, dom0):
        make_guest(root, [(10, "record", RECORD), (20, "change", CHANGE)])
        daemon = ovmd_factory(["--quiet-period", "0.2"])
        host.send([("com.example.hostname", "vm1"), (ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == "done"
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert sysconfig(root).startswith("# ovmd settings\n")
        assert (root / "seen-keys").read_text().split() == ['"com.example.hostname"']
        # the key the module added went back to the host and into the cache
        assert host.received()["com.example.generated"] == "made-by-module"
        assert daemon.cli("-g", "com.example.generated").stdout == "made-by-module\n"
        # secrets: gone from memory, from /run, and never in any file or log
        assert daemon.cli("-g", ROOT_PASSWORD).returncode == 1
        assert not os.path.exists(daemon.paths.secret_cache_file)
        assert_no_secret_left(root, daemon.log_text())
        status = json.loads(daemon.cli("--status", "--json").stdout)
        assert status["status"] == "done"
        assert [m["status"] for m in status["last_run"]["modules"]] == ["ok", "ok"]
        assert daemon.cli("--status").returncode == 0

    def test_nothing_runs_without_initial_config(self, root, ovmd_factory, host, dom0):
        make_guest(root, [(10, "record", RECORD)], initial_config="no")
        daemon = ovmd_factory(["--quiet-period", "0"])
        wait_consumed(dom0, host.send([(ROOT_PASSWORD, PASSWORD)]))
        assert daemon.cli("--status", "--json").returncode == 0
        assert json.loads(daemon.cli("--status", "--json").stdout)["status"] == "not-started"
        assert not (root / "record-runs").exists()

    def test_ovm_template_initial_config_file_is_honoured(self, root, ovmd_factory, host):
        make_guest(root, [(10, "record", RECORD)], initial_config="no")
        (root / "etc/sysconfig/ovm-template-initial-config").write_text("INITIAL_CONFIG=yes\n")
        ovmd_factory(["--quiet-period", "0"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == "done"
        assert (root / "etc/sysconfig/ovm-template-initial-config").read_text() \
            == "INITIAL_CONFIG=no\n"

    def test_quiet_period_includes_keys_of_the_same_burst(self, root, ovmd_factory, host):
        """One client sends the root password in the middle of its burst
        (docs/protocol.md)."""
        make_guest(root, [(10, "record", RECORD)])
        daemon = ovmd_factory(["--quiet-period", "1.5"])
        host.send([("com.example.a", "1"), (ROOT_PASSWORD, PASSWORD)])
        host.send([("com.example.b", "2")])          # well within the quiet period
        host.send([("com.example.c", "3")])
        assert wait_status(host) == "done"
        assert (root / "seen-keys").read_text().split() == [
            '"com.example.a"', '"com.example.b"', '"com.example.c"']
        assert (root / "record-runs").read_text() == "run\n"
        # in order: the last message was stored, then the quiet period ended and the run began
        log = daemon.log_text()
        assert log.index("com.example.c") < log.index("quiet period over") \
            < log.index("running ovm-template-config --initial-config configure")

    def test_failure_keeps_initial_config_then_a_new_password_retries(
            self, root, ovmd_factory, host):
        make_guest(root, [(10, "record", RECORD), (20, "fail", FAIL)])
        (root / "fail-now").write_text("")
        daemon = ovmd_factory(["--quiet-period", "0.1"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        failed = wait_status(host)
        assert failed.startswith("failed:") and "fail" in failed
        assert PASSWORD not in failed
        assert "INITIAL_CONFIG=yes" in sysconfig(root)
        status = daemon.cli("--status", "--json")
        assert status.returncode == 1 and json.loads(status.stdout)["status"] == "failed"
        assert os.path.exists(daemon.paths.secret_cache_file)  # kept for the retry
        assert "first-boot configuration failed" in daemon.log_text()

        (root / "fail-now").unlink()
        host.send([(ROOT_PASSWORD, PASSWORD + "2")])
        assert wait_status(host, new=True) == "done"
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert not os.path.exists(daemon.paths.secret_cache_file)
        assert_no_secret_left(root, daemon.log_text())
        assert files_containing(root, PASSWORD + "2") == []

    def test_crash_mid_run_then_restart_completes(self, root, ovmd_factory, host):
        make_guest(root, [(10, "record", RECORD), (20, "gate", GATE), (30, "change", CHANGE)])
        os.mkfifo(str(root / "gate-started"))
        os.mkfifo(str(root / "gate-release"))
        daemon = ovmd_factory(["--quiet-period", "0"])
        host.send([("com.example.a", "1"), (ROOT_PASSWORD, PASSWORD)])
        with open(str(root / "gate-started")) as started:  # blocks until the gate module runs
            assert started.read() == "started\n"
        # a crash: the daemon and what it started die at once (as systemd's cgroup kill)
        family = descendants(daemon.process.pid)
        daemon.kill()
        for pid in family:
            kill_quietly(pid)
        assert "INITIAL_CONFIG=yes" in sysconfig(root)
        assert os.path.exists(daemon.paths.secret_cache_file)  # /run survives a daemon crash

        restarted = ovmd_factory(["--quiet-period", "0"])
        release = threading.Thread(target=open_gate, args=(root,))
        release.start()
        try:
            assert wait_status(host) == "done"  # the crashed run sent no status
        finally:
            release.join(30)
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert (root / "record-runs").read_text() == "run\n"  # resumed, not redone
        status = json.loads(restarted.cli("--status", "--json").stdout)
        assert [m["status"] for m in status["last_run"]["modules"]] == ["ok", "ok", "ok"]
        # (seen failing once under a loaded make test, not reproduced: the logs say why)
        assert host.received().get("com.example.generated") == "made-by-module", \
            daemon.log_text() + "\n--- restarted ---\n" + restarted.log_text()
        assert_no_secret_left(root, daemon.log_text() + restarted.log_text())

    def test_console_dialog_won_so_the_message_path_stands_down(self, root, ovmd_factory,
                                                                host, dom0):
        """The race of ovm-template-initial-config.service: a console-side run holds the run
        lock; the daemon's first-boot run waits for it, finds INITIAL_CONFIG=no under the
        lock (exit 4), and stands down: no failure sent, secrets wiped, no retry."""
        make_guest(root, [(10, "record", RECORD), (20, "gate", GATE)])
        os.mkfifo(str(root / "gate-started"))
        os.mkfifo(str(root / "gate-release"))
        console = subprocess.Popen(
            [bin_path("ovm-template-config"), "--root", str(root), "--initial-config", "--stdin",
             "configure"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        console.stdin.write('{"com.example.console": "1"}\n')
        console.stdin.close()
        console.stdin = None  # written and closed: communicate() must not touch it
        with open(str(root / "gate-started")) as started:  # the console run holds the lock
            assert started.read() == "started\n"
        daemon = ovmd_factory(["--quiet-period", "0"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        # no event tells the test that the daemon's runner started: ask the daemon
        deadline = time.monotonic() + 30
        while json.loads(daemon.cli("--status", "--json").stdout)["status"] != "running":
            assert time.monotonic() < deadline, daemon.log_text()
            time.sleep(0.05)
        with open(str(root / "gate-release"), "w") as release:
            release.write("go\n")
        out, err = console.communicate(timeout=120)  # drains its pipes while waiting
        assert console.returncode == 0, out + err
        status = daemon.cli("--status", "--wait", "--json")
        assert json.loads(status.stdout)["status"] == "done"
        assert "standing down" in daemon.log_text()
        assert (root / "record-runs").read_text() == "run\n"  # configured once, by the console
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert STATUS_KEY not in host.received()  # no "failed: ..." sent to the host
        assert daemon.cli("-g", ROOT_PASSWORD).returncode == 1  # secrets wiped
        assert_no_secret_left(root, daemon.log_text())

    def test_status_wait_blocks_until_the_run_ends(self, root, ovmd_factory, host):
        make_guest(root, [(10, "record", RECORD)])
        daemon = ovmd_factory(["--quiet-period", "0.2"])
        waiting = subprocess.Popen([bin_path("ovmd"), "--root", str(root), "--status",
                                    "--wait", "--json"], stdout=subprocess.PIPE, text=True)
        try:
            initial = json.loads(daemon.cli("--status", "--json").stdout)
            assert initial["status"] == "waiting-for-params"
            assert waiting.poll() is None
            host.send([(ROOT_PASSWORD, PASSWORD)])
            out, _ = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
        assert waiting.returncode == 0
        assert json.loads(out)["status"] == "done"

    def test_script_runs_a_target_and_reports_modules(self, root, ovmd_factory):
        make_guest(root, [(10, "record", RECORD)], initial_config="no")
        cleanup = root / "etc/template.d/cleanup.d"
        cleanup.mkdir()
        script = root / "etc/template.d/scripts/record"
        script.write_text(script.read_text().replace("# configure: 10",
                                                     "# configure: 10\n# cleanup: 10"))
        os.symlink("../scripts/record", str(cleanup / "10record"))
        daemon = ovmd_factory()
        daemon.cli("-p", "com.example.z=1", check=True)
        result = daemon.cli("-s", "cleanup")
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[0] == "ovm-template-config cleanup: done"
        assert result.stdout.splitlines()[1].split()[:3] == ["record", "10", "ok"]
        assert (root / "seen-keys").read_text().split() == ['"com.example.z"']
