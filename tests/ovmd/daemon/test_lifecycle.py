"""The lifecycle targets end to end: the real daemon and ovm-template-config, shell modules
registered for shutdown and migrate that record they ran, and the host's events sent
through the development XenStore with ``ovm-vmmessage -k VMAPIEvent`` and with Debian's
``xenstore-write``; the guest's own shutdown is SIGTERM to the daemon (ovmd.service's
stop) while the guest says it is going down (daemon_helpers.shutting_down_env)."""
from __future__ import annotations

import os
import subprocess
import threading

import pytest
from daemon_helpers import (
    CHANNEL,
    GATE,
    GUEST,
    HANG,
    PROBE,
    Fifo,
    add_module,
    descendants,
    make_guest,
    ran,
    shutting_down_env,
    wait_consumed,
)
from testlib import REPO, bin_path, require_tool

SHUTDOWN, MIGRATE, RECONFIG = "4", "2", "8"


def send_event(xenstored, bits: str) -> None:
    """The host's ``VMAPIEvent`` as ovm-vmmessage sends it."""
    proc = subprocess.run([bin_path("ovm-vmmessage"), "--xenstore", xenstored.dom0_socket,
                           "-d", str(GUEST), "-k", "VMAPIEvent", "-V", bits],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def fifo(root):
    made = Fifo(root)
    yield made
    made.close()


def guest(root, **modules):
    """A configured guest with the probe module registered for ``modules`` targets."""
    make_guest(root, [], initial_config="no")
    if modules:
        add_module(root, "probe", PROBE, **modules)


class TestHostEvents:
    def test_shutdown_and_migrate_run_their_targets(self, root, ovmd_factory, xenstored,
                                                    fifo):
        guest(root, shutdown=50, migrate=50)
        daemon = ovmd_factory()
        daemon.cli("-p", "com.example.app=1", check=True)
        send_event(xenstored, MIGRATE)
        assert fifo.line() == "migrate"
        send_event(xenstored, SHUTDOWN)
        assert fifo.line() == "shutdown"
        send_event(xenstored, MIGRATE)  # a migration again: its target runs again
        assert fifo.line() == "migrate"
        assert ran(root) == ["migrate", "shutdown", "migrate"]
        log = daemon.log_text()
        assert "the migrate target is done" in log and "the shutdown target is done" in log
        assert "running ovm-template-config --timeout 30 shutdown" in log  # bounded

    def test_shutdown_runs_once(self, root, ovmd_factory, xenstored, dom0, fifo):
        guest(root, shutdown=50, migrate=50)
        daemon = ovmd_factory()
        send_event(xenstored, SHUTDOWN)
        assert fifo.line() == "shutdown"
        send_event(xenstored, SHUTDOWN)
        send_event(xenstored, MIGRATE)  # runs: the daemon got to the shutdown event first
        assert fifo.line() == "migrate"
        assert ran(root) == ["shutdown", "migrate"]
        assert "the host's shutdown event: the shutdown target ran already" in \
            daemon.log_text()

    def test_one_event_with_both_bits_runs_both(self, root, ovmd_factory, xenstored, fifo):
        guest(root, shutdown=50, migrate=50)
        ovmd_factory()
        send_event(xenstored, "6")
        assert [fifo.line(), fifo.line()] == ["shutdown", "migrate"]

    def test_an_event_whose_target_has_no_module_starts_no_runner(self, root, ovmd_factory,
                                                                  xenstored, dom0, fifo):
        guest(root, migrate=50)  # nothing for shutdown
        daemon = ovmd_factory()
        send_event(xenstored, SHUTDOWN)
        send_event(xenstored, MIGRATE)
        assert fifo.line() == "migrate"  # the events are handled in order
        log = daemon.log_text()
        assert "the host's shutdown event: no module is linked for the shutdown target " \
               "(%s/etc/template.d/shutdown.d): nothing to run" % root in log
        assert log.count("running ovm-template-config") == 1  # the migrate run's only
        assert ran(root) == ["migrate"]

    def test_the_events_written_with_debians_xenstore_tools(self, root, ovmd_factory,
                                                            xenstored, dom0, fifo):
        """Oracle's layout by hand: the key in to-guest/N, the value in N/0, then
        last-write (the guest may delete what it inherits from to-guest: n0,b<domid>)."""
        require_tool("xenstore-write")
        guest(root, migrate=50)
        ovmd_factory()
        box = "%s/to-guest" % CHANNEL
        subprocess.run(["xenstore-write", box + "/1/0", MIGRATE, box + "/1", "VMAPIEvent",
                        box + "/last-write", "1"], env=xenstored.env, check=True, timeout=30)
        wait_consumed(dom0, 1)
        assert fifo.line() == "migrate"

    def test_the_other_events_run_nothing(self, root, ovmd_factory, xenstored, dom0):
        guest(root, shutdown=50, migrate=50, suspend=50, resume=50)
        add_module(root, "other", PROBE, reconfigure=50, unconfigure=50)
        daemon = ovmd_factory()
        for number, bits in enumerate(("1", "16", "32", "64", "128"), start=1):
            send_event(xenstored, bits)  # snapshot, ip-address, user, new-param, system
            wait_consumed(dom0, number)
        assert daemon.cli("--status", "--json").returncode == 0  # one more loop turn
        assert ran(root) == []
        assert "running ovm-template-config" not in daemon.log_text()

    def test_an_event_during_a_run_waits_for_it(self, root, ovmd_factory, xenstored, fifo):
        guest(root, migrate=50)
        add_module(root, "gate", GATE, cleanup=50)
        os.mkfifo(str(root / "gate-started"))
        os.mkfifo(str(root / "gate-release"))
        daemon = ovmd_factory()
        script = subprocess.Popen([bin_path("ovmd"), "--root", str(root), "-s", "cleanup"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            with open(str(root / "gate-started")) as started:
                started.read()  # the cleanup run is going
            send_event(xenstored, MIGRATE)
            assert daemon.cli("--status").returncode == 0  # the daemon took the event
            assert ran(root) == []
            with open(str(root / "gate-release"), "w") as release:
                release.write("go\n")
            assert script.wait(60) == 0
            assert fifo.line() == "migrate"
        finally:
            if script.poll() is None:
                script.kill()
            script.communicate()
        assert "the host's migrate event: the migrate target runs when the run going ends" \
            in daemon.log_text()


class TestGuestShutdown:
    def test_the_guest_shutting_down_runs_the_shutdown_target(self, root, ovmd_factory,
                                                              tmp_path):
        guest(root, shutdown=50)
        daemon = ovmd_factory(env=shutting_down_env(tmp_path / "bin"))
        assert daemon.terminate(timeout=60) == 0
        assert ran(root) == ["shutdown"]
        log = daemon.log_text()
        assert "the guest is shutting down: running the shutdown target (at most 30 s per " \
               "module; SHUTDOWN_TIMEOUT=30)" in log
        assert "the shutdown target is done" in log

    def test_ovmd_alone_stopping_runs_nothing(self, root, ovmd_factory):
        guest(root, shutdown=50)
        daemon = ovmd_factory()  # the test machine is not shutting down
        assert daemon.terminate() == 0
        assert ran(root) == []
        assert "the guest is not shutting down (ovmd alone stops or restarts): the shutdown " \
               "target does not run" in daemon.log_text()

    def test_a_shutdown_with_no_module_starts_no_runner(self, root, ovmd_factory, tmp_path):
        guest(root)
        daemon = ovmd_factory(env=shutting_down_env(tmp_path / "bin"))
        assert daemon.terminate() == 0
        assert "running ovm-template-config" not in daemon.log_text()
        assert not (root / "var/log/ovm-template-config.log").exists()
        assert not (root / "run/ovmd/run.lock").exists()

    def test_the_shutdown_target_is_bounded(self, root, ovmd_factory, tmp_path):
        """A module that never ends: the runner kills it at SHUTDOWN_TIMEOUT (its
        --timeout) and the daemon exits; nothing of the module is left."""
        make_guest(root, [], initial_config="no", sysconfig_extra="SHUTDOWN_TIMEOUT=1\n")
        add_module(root, "hang", HANG, shutdown=50)
        daemon = ovmd_factory(env=shutting_down_env(tmp_path / "bin"))
        pid = daemon.process.pid
        assert daemon.terminate(timeout=60) == 0
        log = daemon.log_text()
        assert "the shutdown target failed: hang: " in log, log
        assert "timed out" in log.split("the shutdown target failed: hang: ")[1].split("\n")[0]
        hung = int((root / "hang-pid").read_text())
        assert not os.path.exists("/proc/%d" % hung) or _zombie(hung)
        assert descendants(pid) == []

    def test_a_second_signal_stops_the_shutdown_target_at_once(self, root, ovmd_factory,
                                                                tmp_path, fifo):
        make_guest(root, [], initial_config="no")  # SHUTDOWN_TIMEOUT: the default 30 s
        add_module(root, "hang", HANG, shutdown=50)
        daemon = ovmd_factory(env=shutting_down_env(tmp_path / "bin"))
        daemon.process.terminate()
        assert fifo.line() == "hang"  # the shutdown target runs
        assert daemon.terminate(timeout=30) == 0  # the second SIGTERM
        log = daemon.log_text()
        assert "received a second termination signal: stopping now" in log
        assert "stopping the shutdown target now" in log
        hung = int((root / "hang-pid").read_text())
        assert not os.path.exists("/proc/%d" % hung) or _zombie(hung)


def _zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_sysv_scripts_stop_waits_for_the_shutdown_target(root, ovmd_factory, tmp_path):
    """``/etc/rc.d/init.d/ovmd stop`` in runlevel 0 (the script's paths aimed into the
    sandbox): the daemon runs the shutdown target, and stop returns once it has exited."""
    guest(root, shutdown=50)
    daemon = ovmd_factory(env=shutting_down_env(tmp_path / "bin"))
    script = tmp_path / "ovmd.init"
    script.write_text((REPO / "packaging/sysv/ovmd").read_text()
                      .replace("/etc/sysconfig/ovm-template-initial-config", str(tmp_path / "none"))
                      .replace("/etc/sysconfig/ovmd", str(root / "etc/sysconfig/ovmd"))
                      .replace("/var/run/ovmd/ovmd.pid", daemon.paths.pid_file))
    # the daemon's parent reaps it, as init would (a zombie still answers kill -0)
    reaper = threading.Thread(target=daemon.process.wait)
    reaper.start()
    proc = subprocess.run(["sh", str(script), "stop"], capture_output=True, text=True,
                          timeout=120)
    assert (proc.returncode, proc.stdout) == (0, "Stopping ovmd: OK\n"), proc.stderr
    assert ran(root) == ["shutdown"]  # (stop returned after the target had run)
    reaper.join(30)
    assert daemon.process.returncode == 0
