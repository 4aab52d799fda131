"""Helpers for the daemon tests: the real ``ovmd`` as a process (:class:`Ovmd`; the
fixtures that make one are in conftest.py), and waiting on XenStore watches.

Nothing here waits with fixed sleeps: readiness comes from ``NOTIFY_SOCKET`` (as under
systemd), consumption from XenStore watches on the message nodes, process ends from
``wait()``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from testlib import bin_path

from ovmd.firstboot.contract import STATUS_KEY
from ovmd.paths import Paths
from ovmd.xenstore import XenStoreClient

GUEST = 1
CHANNEL = "/local/domain/%d/control/oracle-vmapi" % GUEST


class Ovmd:
    """The real daemon: ``ovmd --foreground --root ROOT --xenstore SOCKET -d 1``, run
    through ``prefix`` (e.g. ``ip netns exec NS``, which execs: the pid stays ovmd's)."""

    def __init__(self, root: Path, xs_socket: str, extra: List[str] = (),
                 env: Optional[Dict[str, str]] = None, prefix: List[str] = ()) -> None:
        self.root = root
        self.prefix = list(prefix)
        self.paths = Paths(str(root))
        self.xs_socket = xs_socket
        self.extra = list(extra)
        self.env = env
        self.log_path = root.parent / "ovmd.log"  # beside the root, not in it
        self.process: Optional[subprocess.Popen] = None
        self._lines: List[str] = []
        self._heard = threading.Condition()

    def start(self, wait_ready: bool = True, timeout: float = 20) -> "Ovmd":
        notify_dir = tempfile.mkdtemp(prefix="ntf-", dir="/tmp")
        notify_path = os.path.join(notify_dir, "n")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        env = dict(os.environ if self.env is None else self.env)
        env["NOTIFY_SOCKET"] = notify_path
        argv = self.prefix + [bin_path("ovmd"), "--foreground", "--root", str(self.root),
                "--xenstore", self.xs_socket, "-d", "1"] + self.extra
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env=env)
        self._copier = threading.Thread(target=self._copy_log, args=(self.process, self.log),
                                        daemon=True)
        self._copier.start()
        try:
            if wait_ready:
                sock.settimeout(timeout)
                while True:
                    try:
                        data = sock.recv(4096)
                    except socket.timeout:
                        raise AssertionError("ovmd did not send READY=1 within %ss; log:\n%s"
                                             % (timeout, self.log_text())) from None
                    if b"READY=1" in data.split(b"\n"):
                        break
        finally:
            sock.close()
            shutil.rmtree(notify_dir, ignore_errors=True)
        return self

    def _copy_log(self, process: subprocess.Popen, log) -> None:
        """Copy the daemon's output to its log file, line by line, and tell waiters."""
        assert process.stdout is not None
        for raw in process.stdout:
            try:
                log.write(raw)
                log.flush()
            except ValueError:  # closed: a child of the daemon still writes after it died
                pass
            with self._heard:
                self._lines.append(raw.decode("utf-8", "replace"))
                self._heard.notify_all()
        with self._heard:
            self._lines.append("")  # end of output
            self._heard.notify_all()

    def wait_log(self, pattern: str, timeout: float = 60, since: int = 0) -> int:
        """Block until a log line (from line ``since`` on) matches ``pattern``; returns the
        number of lines seen so far (pass it as ``since`` to wait for a later line)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._heard:
            index = since
            while True:
                while index < len(self._lines):
                    if regex.search(self._lines[index]):
                        return index + 1
                    index += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self._lines and self._lines[-1] == ""):
                    raise AssertionError("no log line matching %r within %ss; log:\n%s"
                                         % (pattern, timeout, self.log_text()[-3000:]))
                self._heard.wait(remaining)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def terminate(self, timeout: float = 10) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close_log()
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        self._copier.join(5)  # what the daemon wrote last is in the file
        self.log.close()

    def cli(self, *args: str, input: Optional[str] = None,
            check: bool = False) -> subprocess.CompletedProcess:
        result = subprocess.run([bin_path("ovmd"), "--root", str(self.root)] + list(args),
                                input=input, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError("ovmd %s -> %d: %s" % (args, result.returncode, result.stderr))
        return result


def wait_consumed(client: XenStoreClient, number: int, timeout: float = 60,
                   counter: bool = True) -> None:
    """Block (on a watch) until the host has written message <number> and the guest
    has deleted it (it deletes only after storing durably)."""
    box = "%s/to-guest" % CHANNEL
    path = "%s/%d" % (box, number)
    token = "consumed-%d" % number
    client.watch(box, token)
    deadline = time.monotonic() + timeout

    def written() -> bool:
        if not counter:  # the message is written already; its counter may be garbage
            return True
        try:
            return int(client.read(box + "/last-write")) >= number
        except (OSError, ValueError):
            return False

    try:
        while not written() or client.exists(path):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("to-guest/%d was not consumed within %ss" % (number, timeout))
            client.wait_event(remaining)
    finally:
        client.unwatch(box, token)
        client.pending_events()


def to_guest_numbers(client: XenStoreClient) -> List[int]:
    names = client.directory("%s/to-guest" % CHANNEL)
    return sorted(int(n) for n in names if n.isdigit())


def files_containing(root: Path, needle: str) -> List[str]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    hits = []
    raw = needle.encode("utf-8")
    for dirpath, _, names in os.walk(str(root)):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as handle:
                    if raw in handle.read():
                        hits.append(os.path.relpath(path, str(root)))
            except OSError:
                continue
    return hits


# --- first-boot guests: a sandbox root with small shell modules -------------------------

ROOT_PASSWORD = "com.oracle.linux.root-password"
PASSWORD = "S3cret-Passw0rd-xyzzy"

HEADER = """\
#!/bin/sh
### BEGIN PLUGIN INFO
# name: {name}
# configure: {priority}
# description: test module {name}
### END PLUGIN INFO
if [ "$1" = "--enumerate" ]; then echo '{descriptors}'; exit 0; fi
"""

# Records which com.example keys it saw (names only: stdin holds the root password).
RECORD = """\
input=$(cat)
printf '%s\\n' "$input" | grep -o '"com\\.example\\.[a-z0-9.-]*"' | sort \\
    > "$OVM_TEMPLATE_CONFIG_ROOT/seen-keys"
echo run >> "$OVM_TEMPLATE_CONFIG_ROOT/record-runs"
printf '%s\\n' "$input"
"""
# Fails while the file fail-now exists.
FAIL = """\
if [ -e "$OVM_TEMPLATE_CONFIG_ROOT/fail-now" ]; then echo "disk on fire" >&2; exit 1; fi
cat
"""
# Adds a key (a module-generated value, sent back to the host).
CHANGE = """\
sed 's/}[[:space:]]*$/, "com.example.generated": "made-by-module"}/'
"""
# Blocks on two FIFOs so a test can crash the daemon while it runs. Only shell builtins
# touch the FIFOs: a `cat` forked after the test listed the processes to kill would
# survive the crash and swallow the release meant for the next run.
GATE = """\
echo started > "$OVM_TEMPLATE_CONFIG_ROOT/gate-started"
read _ < "$OVM_TEMPLATE_CONFIG_ROOT/gate-release"
cat
"""


def make_guest(root: Path, modules, initial_config="yes", sysconfig_extra=""):
    """``modules``: (priority, name, body) or (priority, name, body, keys it declares)."""
    (root / "etc/sysconfig").mkdir(parents=True, exist_ok=True)
    (root / "etc/sysconfig/ovmd").write_text(
        "# ovmd settings\n%sINITIAL_CONFIG=%s\n" % (sysconfig_extra, initial_config))
    scripts = root / "etc/template.d/scripts"
    configure = root / "etc/template.d/configure.d"
    scripts.mkdir(parents=True, exist_ok=True)
    configure.mkdir(parents=True, exist_ok=True)
    for priority, name, body, *keys in modules:
        descriptors = json.dumps([{"key": key} for key in (keys[0] if keys else [])])
        script = scripts / name
        script.write_text(HEADER.format(name=name, priority=priority, descriptors=descriptors)
                          + body)
        script.chmod(0o755)
        os.symlink("../scripts/%s" % name, str(configure / ("%02d%s" % (priority, name))))


def sysconfig(root: Path) -> str:
    return (root / "etc/sysconfig/ovmd").read_text()


def wait_status(host, timeout=60, new=False):
    """The status the guest sends back, waited for on a XenStore watch."""
    value = host.wait_for(STATUS_KEY, timeout, new_only=new)
    assert value is not None, "no %s from the guest within %ss" % (STATUS_KEY, timeout)
    return value


def assert_no_secret_left(root: Path, log: str):
    assert files_containing(root, PASSWORD) == []
    assert PASSWORD not in log


def open_gate(root: Path) -> None:
    with open(str(root / "gate-started")) as started:
        started.read()
    with open(str(root / "gate-release"), "w") as release:
        release.write("go\n")


def descendants(pid: int) -> List[int]:
    """Every process below ``pid`` (children, their children...), from /proc."""
    found: List[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (current, current)) as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            children = []
        found.extend(children)
        todo.extend(children)
    return found


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --- modules of any target, and a guest that shuts down --------------------------------

TARGET_HEADER = """\
#!/bin/sh
### BEGIN PLUGIN INFO
# name: {name}
{targets}# description: test module {name}
### END PLUGIN INFO
if [ "$1" = "--enumerate" ]; then echo '[]'; exit 0; fi
"""
# Records the target it runs ("$1") and, if the FIFO lifecycle-fifo exists, says so there
# (a test waits on it: no sleeps).
PROBE = """\
echo "$1" >> "$OVM_TEMPLATE_CONFIG_ROOT/ran"
if [ -p "$OVM_TEMPLATE_CONFIG_ROOT/lifecycle-fifo" ]; then
    echo "$1" > "$OVM_TEMPLATE_CONFIG_ROOT/lifecycle-fifo"
fi
cat
"""
# Never ends by itself (it records its pid, and says it started as PROBE does): a
# shutdown module that hangs.
HANG = """\
echo $$ > "$OVM_TEMPLATE_CONFIG_ROOT/hang-pid"
if [ -p "$OVM_TEMPLATE_CONFIG_ROOT/lifecycle-fifo" ]; then
    echo hang > "$OVM_TEMPLATE_CONFIG_ROOT/lifecycle-fifo"
fi
exec sleep 100000
"""


def add_module(root: Path, name: str, body: str, **targets: int) -> None:
    """A shell module ``name`` enabled for ``targets`` (target=priority), as
    ``ovm-chkconfig --add`` links it."""
    scripts = root / "etc/template.d/scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    header = "".join("# %s: %d\n" % item for item in sorted(targets.items()))
    script = scripts / name
    script.write_text(TARGET_HEADER.format(name=name, targets=header) + body)
    script.chmod(0o755)
    for target, priority in targets.items():
        directory = root / "etc/template.d" / ("%s.d" % target)
        directory.mkdir(parents=True, exist_ok=True)
        os.symlink("../scripts/%s" % name, str(directory / ("%02d%s" % (priority, name))))


def ran(root: Path) -> List[str]:
    """The targets the probe module ran, in order."""
    try:
        return (root / "ran").read_text().split()
    except FileNotFoundError:
        return []


def shutting_down_env(bin_dir: Path) -> Dict[str, str]:
    """An environment in which the daemon finds the guest shutting down: ``runlevel``
    says 0 and ``systemctl is-system-running`` says ``stopping``, first on PATH. A guest
    shutdown cannot happen on the test machine; tests/packaging/test_booted_guest.py
    shows the real one, under systemd."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in (("runlevel", "#!/bin/sh\necho '3 0'\n"),
                       ("systemctl", '#!/bin/sh\n[ "$1" = is-system-running ] && '
                                     '{ echo stopping; exit 1; }\nexec /usr/bin/systemctl "$@"\n')):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = "%s:%s" % (bin_dir, env.get("PATH", "/usr/bin:/bin"))
    return env


class Fifo:
    """A FIFO in the root that modules write a line to; :meth:`line` waits for one."""

    def __init__(self, root: Path, name: str = "lifecycle-fifo") -> None:
        self.path = root / name
        os.mkfifo(str(self.path))
        # opened for reading without blocking, and for writing by ourselves so that it
        # never reports end of file while no module has it open
        self.fd = os.open(str(self.path), os.O_RDONLY | os.O_NONBLOCK)
        self.keep = os.open(str(self.path), os.O_WRONLY)
        self.buffer = b""

    def line(self, timeout: float = 60) -> str:
        import select

        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise AssertionError("no module wrote to %s within %ss" % (self.path, timeout))
            self.buffer += os.read(self.fd, 4096)
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def close(self) -> None:
        os.unlink(str(self.path))  # (a module writing after this must not block on it)
        os.close(self.fd)
        os.close(self.keep)
