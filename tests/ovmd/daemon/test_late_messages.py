"""Late messages are never lost, and the host hears ``done`` only once they are applied:
the client orders real Oracle VM clients use (docs/protocol.md), the host's reconfig
event, params after first boot, the quiet period from the sysconfig file, the console
dialog answering ``--status --wait``, and a runner killed mid-run.

The real daemon, the real ovm-template-config, the development XenStore (the host's side
through ``ovm-vmmessage``'s HostChannel, and Debian's ``xenstore-write`` as an independent
host), small shell modules and the standard modules on fixture roots. The tests wait on
XenStore watches, FIFOs and process descriptors; where no event exists they ask the
daemon (``ovmd --status``) until a deadline, never asserting how long anything took.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Dict, List

from daemon_helpers import (
    CHANNEL,
    GATE,
    PASSWORD,
    RECORD,
    ROOT_PASSWORD,
    assert_no_secret_left,
    make_guest,
    open_gate,
    sysconfig,
    wait_consumed,
    wait_status,
)
from testlib import (
    bin_path,
    fixture_root,
    install_modules,
    load_script,
    require_tool,
    verify_password,
)

from ovmd.channel import FROM_GUEST, read_counter, read_message
from ovmd.firstboot.contract import STATUS_KEY

LATE = "com.example.late"
# Records every run: which com.example keys it saw (names only) and the late key's value.
DECLARED = """\
input=$(cat)
keys=$(printf '%s\\n' "$input" | grep -o '"com\\.example\\.[a-z0-9.-]*"' | sort | tr '\\n' ' ')
late=$(printf '%s\\n' "$input" | sed -n 's/.*"com\\.example\\.late": *"\\([^"]*\\)".*/\\1/p')
echo "$keys| late=$late" >> "$OVM_TEMPLATE_CONFIG_ROOT/declared-runs"
printf '%s\\n' "$input"
"""


def statuses(host) -> List[str]:
    """Every status message the guest sent, in order (not only the latest)."""
    found = []
    for number in range(1, (read_counter(host.client, host.base, FROM_GUEST) or 0) + 1):
        message = read_message(host.client, host.base, FROM_GUEST, number)
        if message is not None and message.key == STATUS_KEY:
            found.append(message.value)
    return found


def gates(root: Path) -> None:
    os.mkfifo(str(root / "gate-started"))
    os.mkfifo(str(root / "gate-release"))


def wait_gate(root: Path) -> None:
    """Block until the gate module runs (it holds its run until :func:`release`)."""
    with open(str(root / "gate-started")) as started:
        assert started.read() == "started\n"


def release(root: Path) -> None:
    with open(str(root / "gate-release"), "w") as handle:
        handle.write("go\n")


def ask_until(daemon, predicate, what: str, timeout: float = 60):
    """Ask the daemon for its status until ``predicate(status)``; no event says it."""
    deadline = time.monotonic() + timeout
    while True:
        status = json.loads(daemon.cli("--status", "--json").stdout)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, "%s: not within %ss; log:\n%s" % (
            what, timeout, daemon.log_text())
        time.sleep(0.05)


def wait_gone(pid: int, timeout: float = 30) -> None:
    """Block on a process descriptor until process ``pid`` has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, "process %d still runs after %ss" % (pid, timeout)
    finally:
        os.close(fd)


def alive(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class TestClientOrders:
    def test_root_password_last_after_a_delay_runs_the_runner_that_stood_by(
            self, root, ovmd_factory, host, dom0):
        make_guest(root, [(10, "record", RECORD)])
        daemon = ovmd_factory()  # the default quiet period (0.1 s)
        number = host.send([("com.example.hostname", "vm1"), ("com.example.ip", "192.0.2.9")])
        wait_consumed(dom0, number)
        # the first-boot runner was started before the password (before READY=1 even)
        assert "started ovm-template-config configure ahead" in daemon.log_text()
        host.send([(ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == "done"
        assert (root / "seen-keys").read_text().split() == [
            '"com.example.hostname"', '"com.example.ip"']
        log = daemon.log_text()
        ahead = log.index("started ovm-template-config configure ahead (pid ")
        pid = log[ahead:].split("(pid ", 1)[1].split(")", 1)[0]
        assert "running ovm-template-config --initial-config configure (pid %s)" % pid in log
        assert statuses(host) == ["done"]
        assert_no_secret_left(root, log)

    def test_root_password_in_the_middle_of_a_burst(self, root, ovmd_factory, host):
        """Whatever the quiet period catches, the keys after the password are applied
        before ``done``: by the first run, or by a run again."""
        keys = ["com.example.a", "com.example.b", "com.example.c"]
        make_guest(root, [(10, "declared", DECLARED, keys)])
        ovmd_factory()
        host.send([("com.example.a", "1"), (ROOT_PASSWORD, PASSWORD)])
        host.send([("com.example.b", "2")])
        host.send([("com.example.c", "3")])
        assert wait_status(host) == "done"
        last = (root / "declared-runs").read_text().splitlines()[-1]
        assert last.startswith('"com.example.a" "com.example.b" "com.example.c" |')
        assert statuses(host) == ["done"]

    def test_a_second_password_during_the_run_wins(self, tmp_path, ovmd_factory, host, dom0):
        """The real authentication module on a fixture root: the password sent while the
        first run went on is the one /etc/shadow holds, and ``done`` comes after it."""
        root = fixture_root("ol8", tmp_path / "ol8")
        install_modules(root, ["authentication"])
        make_guest(root, [(10, "gate", GATE)])
        gates(root)
        daemon = ovmd_factory(["--quiet-period", "0"], root_dir=root)
        host.send([(ROOT_PASSWORD, PASSWORD)])
        wait_gate(root)  # the first run goes on, with the first password
        second = PASSWORD + "-second"
        wait_consumed(dom0, host.send([(ROOT_PASSWORD, second)]))
        release(root)
        assert wait_status(host) == "done"
        hashed = [line.split(":")[1] for line in (root / "etc/shadow").read_text().splitlines()
                  if line.startswith("root:")][0]
        assert verify_password(second, hashed) and not verify_password(PASSWORD, hashed)
        log = daemon.log_text()
        assert log.index("params changed during the run") \
            < log.index("running ovm-template-config --changed-only configure") \
            < log.index("configuration done")
        assert statuses(host) == ["done"]
        assert daemon.cli("-g", ROOT_PASSWORD).returncode == 1  # wiped once applied
        assert second not in log and PASSWORD not in log

    def test_a_key_after_the_run_started_is_applied_by_a_run_again(
            self, root, ovmd_factory, host, dom0):
        make_guest(root, [(10, "gate", GATE), (20, "declared", DECLARED, [LATE])])
        gates(root)
        daemon = ovmd_factory(["--quiet-period", "0"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        wait_gate(root)
        wait_consumed(dom0, host.send([(LATE, "after-the-password")]))
        assert STATUS_KEY not in host.received()
        release(root)
        assert wait_status(host) == "done"
        # the first run had no late key; the run again had it, and the gate (whose
        # params did not change) did not run again
        assert (root / "declared-runs").read_text().splitlines() == [
            "| late=", '"com.example.late" | late=after-the-password']
        status = json.loads(daemon.cli("--status", "--json").stdout)
        assert status["status"] == "done"
        assert [(m["name"], m["status"]) for m in status["last_run"]["modules"]] == [
            ("gate", "skipped"), ("declared", "ok")]
        assert statuses(host) == ["done"]
        assert "INITIAL_CONFIG=no" in sysconfig(root)


class TestConfiguredGuest:
    def test_params_after_first_boot_are_stored_not_applied_and_the_log_says_how(
            self, root, ovmd_factory, host, dom0):
        make_guest(root, [(10, "declared", DECLARED, [LATE])], initial_config="no")
        daemon = ovmd_factory(["--quiet-period", "0"])
        wait_consumed(dom0, host.send([(LATE, "later"), (ROOT_PASSWORD, PASSWORD)]))
        assert daemon.cli("-g", LATE).stdout == "later\n"
        assert os.path.exists(daemon.paths.secret_cache_file)  # the password is kept
        assert not (root / "declared-runs").exists()
        log = daemon.log_text()
        assert "stored 2 parameter(s) while the guest is configured (INITIAL_CONFIG=no): " \
               "not applied; to apply them the host sends VMAPIEvent reconfig (8), or run " \
               "`ovmd -s configure` here" in log
        assert STATUS_KEY not in host.received() and PASSWORD not in log

    def test_the_reconfig_event_runs_only_the_modules_whose_params_changed(
            self, root, ovmd_factory, host, dom0, xenstored):
        make_guest(root, [(10, "gate", GATE), (20, "declared", DECLARED, [LATE])],
                   initial_config="no")
        daemon = ovmd_factory(["--quiet-period", "0"])
        host.send([(LATE, "first")])
        # Debian's xenstore-write is the host here: message, then VMAPIEvent reconfig (8)
        write_event(xenstored, host, dom0, "8")
        assert wait_status(host) == "done"
        assert (root / "declared-runs").read_text().splitlines() == [
            '"com.example.late" | late=first']
        # the gate module declares no params: a reconfiguration never runs it
        assert not (root / "gate-started").exists()
        status = json.loads(daemon.cli("--status", "--json").stdout)
        assert [(m["name"], m["status"]) for m in status["last_run"]["modules"]] == [
            ("gate", "skipped"), ("declared", "ok")]
        # the same value again: nothing changed, so nothing runs
        host.send([(LATE, "first")])
        write_event(xenstored, host, dom0, "8")
        assert wait_status(host, new=True) == "done"
        assert len((root / "declared-runs").read_text().splitlines()) == 1

    def test_the_reconfig_event_applies_the_changed_keys_of_the_standard_modules(
            self, tmp_path, ovmd_factory, host, dom0):
        """First boot with the eight standard modules on the OL9 fixture root, then the
        host changes the host name: only what depends on it changes, byte for byte."""
        root = fixture_root("ol9", tmp_path / "ol9")
        install_modules(root)
        (root / "etc/sysconfig/ovmd").write_text("INITIAL_CONFIG=yes\n")
        ovmd_factory(["--quiet-period", "0"], root_dir=root)
        host.send(demo_messages())
        assert wait_status(host) == "done"
        before = guest_tree(root)
        host.send([("com.oracle.linux.network.hostname", "web02.example.com")])
        host.send([("VMAPIEvent", "8")])
        assert wait_status(host, new=True) == "done", statuses(host)
        after = guest_tree(root)
        changed = sorted(path for path in set(before) | set(after)
                         if before.get(path) != after.get(path))
        assert changed == ["etc/hostname", "var/lib/ovm-template-config/network.applied"]
        assert after["etc/hostname"].startswith(b"web02.example.com\n\0")


def demo_messages():
    """The demo's Oracle-style message set (scripts/demo.py), root password last."""
    return list(load_script("demo").MESSAGES)


#: Files of the framework's own bookkeeping, which every run rewrites.
BOOKKEEPING = ("var/lib/ovm-template-config/last-run.json",
               "var/lib/ovm-template-config/applied-params.json",
               "var/lib/ovm-template-config/enumerate-cache.json",
               "var/log/ovm-template-config.log", "run/", "var/lib/ovmd/")


def guest_tree(root: Path) -> Dict[str, bytes]:
    """Every file of the guest (content; a link's target), bookkeeping left out."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative.startswith(BOOKKEEPING) or (path.is_dir() and not path.is_symlink()):
            continue
        found[relative] = (b"-> " + os.readlink(path).encode()) if path.is_symlink() \
            else path.read_bytes() + b"\0mode %o" % (path.stat().st_mode & 0o7777)
    return found


def write_event(xenstored, host, dom0, value: str) -> None:
    """Send ``VMAPIEvent`` as an independent host does: Debian's xenstore-write, in
    Oracle's order (the value's piece, the key name, then ``last-write``)."""
    require_tool("xenstore-write")
    number = (read_counter(dom0, host.base, "to-guest") or 0) + 1
    box = "%s/to-guest" % CHANNEL
    env = xenstored.env
    for path, content in (("%s/%d/0" % (box, number), value),
                          ("%s/%d" % (box, number), "VMAPIEvent"),
                          ("%s/last-write" % box, str(number))):
        subprocess.run(["xenstore-write", path, content], env=env, check=True)
        if path != "%s/last-write" % box:
            subprocess.run(["xenstore-chmod", path, "n0", "b1"], env=env, check=True)


class TestQuietPeriod:
    def test_quiet_period_comes_from_the_sysconfig_file_and_sighup_reads_it_again(
            self, root, ovmd_factory, host, dom0):
        make_guest(root, [(10, "record", RECORD)], sysconfig_extra="QUIET_PERIOD=600\n")
        daemon = ovmd_factory()
        wait_consumed(dom0, host.send([(ROOT_PASSWORD, PASSWORD)]))
        assert "quiet period 600 s (%s)" % daemon.paths.sysconfig_ovmd in daemon.log_text()
        status = json.loads(daemon.cli("--status", "--json").stdout)
        assert status["status"] == "waiting-for-params" and not (root / "record-runs").exists()
        (root / "etc/sysconfig/ovmd").write_text("INITIAL_CONFIG=yes\nQUIET_PERIOD=0\n")
        daemon.process.send_signal(signal.SIGHUP)
        ask_until(daemon, lambda s: "quiet period 0 s" in daemon.log_text(), "SIGHUP")
        host.send([("com.example.one-more", "1")])  # restarts the quiet period: 0 s now
        assert wait_status(host) == "done"

    def test_the_flag_wins_over_the_sysconfig_file(self, root, ovmd_factory, host):
        make_guest(root, [(10, "record", RECORD)], sysconfig_extra="QUIET_PERIOD=600\n")
        daemon = ovmd_factory(["--quiet-period", "0"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == "done"
        log = daemon.log_text()
        assert "quiet period 0 s (--quiet-period)" in log and "quiet period 600" not in log

    def test_an_invalid_value_is_said_and_the_default_used(self, root, ovmd_factory, host):
        make_guest(root, [(10, "record", RECORD)], sysconfig_extra="QUIET_PERIOD=soon\n")
        daemon = ovmd_factory()
        host.send([(ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host) == "done"
        assert "%s: QUIET_PERIOD=soon is not a number of seconds (0 or more); using 0.1: " \
            "correct it, or give --quiet-period" % daemon.paths.sysconfig_ovmd \
            in daemon.log_text()


class TestConsoleDialog:
    def test_the_console_configuring_the_guest_answers_status_wait(self, root, ovmd_factory,
                                                                   host):
        """ovmd-initial-config-wait.service's ``ovmd --status --wait`` on a first boot:
        the console dialog configures the guest, and the waiter is answered."""
        make_guest(root, [(10, "record", RECORD)])
        daemon = ovmd_factory()
        waiting = subprocess.Popen([bin_path("ovmd"), "--root", str(root), "--status",
                                    "--wait", "--json"], stdout=subprocess.PIPE, text=True)
        try:
            ask_until(daemon, lambda s: s["status"] == "waiting-for-params", "waiting")
            console = subprocess.run(
                [bin_path("ovm-template-config"), "--root", str(root), "--initial-config",
                 "--stdin", "configure"], input='{"com.example.console": "1"}\n',
                capture_output=True, text=True, timeout=120)
            assert console.returncode == 0, console.stdout + console.stderr
            out, _ = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
        assert waiting.returncode == 0 and json.loads(out)["status"] == "done"
        assert "INITIAL_CONFIG turned no (the console dialog configured the guest)" \
            in daemon.log_text()
        assert STATUS_KEY not in host.received()


# A gate whose run leaves a child behind in its process group: the child holds the
# module's lock file, so a second instance of the module running meanwhile notes it.
LOCKED_GATE = """\
input=$(cat)
exec 9> "$OVM_TEMPLATE_CONFIG_ROOT/module.lock"
flock -n 9 || echo twice >> "$OVM_TEMPLATE_CONFIG_ROOT/record"
sleep 600 &
echo "$$ $!" > "$OVM_TEMPLATE_CONFIG_ROOT/pids"
echo started > "$OVM_TEMPLATE_CONFIG_ROOT/gate-started"
read _ < "$OVM_TEMPLATE_CONFIG_ROOT/gate-release"
printf '%s\\n' "$input"
"""


class TestKilledRunner:
    def test_a_killed_runner_leaves_no_module_process_and_its_run_shows_failed(
            self, root, ovmd_factory, host):
        require_tool("flock")
        make_guest(root, [(10, "gate", LOCKED_GATE)])
        gates(root)
        daemon = ovmd_factory(["--quiet-period", "0"])
        host.send([(ROOT_PASSWORD, PASSWORD)])
        wait_gate(root)
        module, child = map(int, (root / "pids").read_text().split())
        report = json.loads((root / "var/lib/ovm-template-config/last-run.json").read_text())
        assert report["status"] == "running"
        os.kill(report["pid"], signal.SIGKILL)
        wait_gone(module)  # its parent-death signal
        failed = wait_status(host)
        assert failed == "failed: gate: interrupted: the runner died"
        status = daemon.cli("--status", "--json")
        assert status.returncode == 1
        shown = json.loads(status.stdout)
        assert shown["status"] == "failed" and shown["last_run"]["status"] == "failed"
        assert shown["last_run"]["modules"][0]["error"] == "interrupted: the runner died"
        assert "interrupted: the runner died" in daemon.cli("--status").stdout
        assert alive(child)  # the module's child, in its process group, until the retry
        # the retry: the next runner kills what is left before any module runs again
        opener = threading.Thread(target=open_gate, args=(root,))
        opener.start()
        try:
            host.send([(ROOT_PASSWORD, PASSWORD + "2")])
            assert wait_status(host, new=True) == "done"
        finally:
            opener.join(60)
        assert not alive(child)
        assert not (root / "record").exists()  # never twice at the same time
        wait_gone(int((root / "pids").read_text().split()[1]))  # the retry's, at its end
        assert not (root / "run/ovmd/runners").exists()
