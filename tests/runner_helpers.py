"""Building sandbox guests with module scripts, for the runner, first-boot and command tests
(tests/templateconfig and tests/templateconfig/run).

Modules are real scripts under ``ROOT/etc/template.d/scripts`` enabled by the real
registry (``registry.add``), run by the real runner in real processes.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import select
import stat
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path
from typing import Dict, Iterable, Optional

from testlib import STANDARD_MODULES, sandbox_root

from ovmd.paths import Paths
from templateconfig import registry

BIN = Path(sys.executable).parent
OVM_TEMPLATE_CONFIG = str(BIN / "ovm-template-config")
#: How long a test waits for an event before it fails (generous: the machine may be loaded).
TIMEOUT = 30.0

PYTHON_MODULE = '''\
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: {name}
{targets}
# description: test module {name}
### END PLUGIN INFO
try:
    import json
except ImportError:
    import simplejson as json
import os
import sys
from templateconfig.cli import main

DESCRIPTORS = {descriptors}


def do_enumerate(target):
    return json.dumps(DESCRIPTORS)


def do_{target}(param):
    params = json.loads(param)
{body}
    return json.dumps(params)


if __name__ == "__main__":
    main(do_enumerate, {{"{target}": do_{target}}})
'''


def guest(tmp_path: Path) -> Paths:
    root = tmp_path / "root"
    (root / "etc" / "template.d" / "scripts").mkdir(parents=True)
    return Paths(str(root))


def header_lines(name: str, priority: int, targets: Iterable[str]) -> str:
    return "\n".join("# %s: %d" % (target, priority) for target in targets)


def add_script(paths: Paths, name: str, text: str, enable: bool = True) -> str:
    path = os.path.join(paths.scripts_dir, name)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    if enable:
        registry.add(paths, name)
    return path


def add_python_module(paths: Paths, name: str, priority: int = 50, body: str = "",
                      descriptors: Optional[list] = None, target: str = "configure",
                      shebang: Optional[str] = None, raw_source: Optional[str] = None) -> str:
    """A module written like Oracle's: ``templateconfig.cli.main`` with one target.

    ``body`` is Python code indented into ``do_<target>``, where ``params`` is the dict.
    """
    text = raw_source if raw_source is not None else PYTHON_MODULE.format(
        name=name, targets=header_lines(name, priority, [target]),
        descriptors=repr(descriptors or []), target=target,
        body=textwrap.indent(textwrap.dedent(body), "    ") or "    pass")
    if shebang is not None:
        text = shebang + "\n" + text.split("\n", 1)[1]
    return add_script(paths, name, text)


def add_shell_module(paths: Paths, name: str, priority: int, body: str,
                     enumerate_output: str = "[]", target: str = "configure",
                     shebang: str = "#!/bin/sh") -> str:
    text = textwrap.dedent('''\
        {shebang}
        ### BEGIN PLUGIN INFO
        # name: {name}
        # {target}: {priority}
        # description: shell module {name}
        ### END PLUGIN INFO
        if [ "$1" = "--enumerate" ]; then echo '{enum}'; exit 0; fi
        ''').format(shebang=shebang, name=name, target=target, priority=priority,
                    enum=enumerate_output) + textwrap.dedent(body)
    return add_script(paths, name, text)


def run_cli(args, input_text: Optional[str] = None, env: Optional[Dict[str, str]] = None,
            timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("OVM_TEMPLATE_CONFIG_NO_FORK", None)
    full_env.update(env or {})
    return subprocess.run([OVM_TEMPLATE_CONFIG] + list(args), input=input_text, text=True,
                          capture_output=True, env=full_env, timeout=timeout, **kwargs)


def tree_hashes(root: str) -> Dict[str, tuple]:
    """Every entry under ``root``: (mode, sha256 of content or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = "link:" + os.readlink(path)
            else:
                digest = None
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return out


#: What a run writes even when the validation refuses it and nothing is changed: the
#: run lock, the run report and the run log (the framework's own files, not the guest's).
RUNNER_OWN = ("run/ovmd/run.lock", "var/lib/ovm-template-config/last-run.json",
              "var/log/ovm-template-config.log")


def guest_tree(root: str, also: Iterable[str] = ()) -> Dict[str, tuple]:
    """:func:`tree_hashes` without the runner's own files (:data:`RUNNER_OWN`) and their
    directories: the guest's configuration, byte for byte. ``also``: directories to leave
    out as well, with what they hold (the daemon's own, say)."""
    own = set()
    for path in RUNNER_OWN:
        while path:
            own.add(path)
            path = os.path.dirname(path)
    dirs = tuple(directory.rstrip("/") + "/" for directory in also)
    return {path: entry for path, entry in tree_hashes(root).items()
            if path not in own and not (path + "/").startswith(dirs)}


def all_text_under(root: str) -> str:
    """The content of every regular file under ``root`` (to look for leaked secrets)."""
    chunks = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    chunks.append(handle.read().decode("utf-8", "replace"))
    return "\n".join(chunks)


def ran(tmp_path):
    """The lines :func:`recording_module` modules wrote, in order."""
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
    """True once ``fd`` is readable, False if ``timeout`` passed first."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)


# --- the standard modules on a fixture root ------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def standard_guest(dest: Path, fixture: str = "ol9",
                   modules: Iterable[str] = STANDARD_MODULES) -> Paths:
    """A copy of fixture root ``fixture`` at ``dest`` (a real guest's modes) with the
    standard modules' scripts installed and registered, as their packages do."""
    sandbox_root.fixture_root(fixture, dest)
    sandbox_root.install_modules(dest, modules)
    return Paths(str(dest))


# --- a fixture root as a running guest ----------------------------------------------------

_ENTER = """\
set -e
root=$1; shift
mount --make-rprivate /
for dir in $BINDS; do
    mount --bind "$dir" "$root$dir"
    mount -o remount,bind,ro "$root$dir"
done
mount -t tmpfs -o mode=0755 tmpfs "$root/dev"
for node in null zero random urandom; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
# an RTC that is not one (a plain file: this machine's clock is never reached)
[ -z "$RTC" ] || touch "$root/dev/$RTC"
mount -t proc proc "$root/proc"
exec chroot "$root" "$@"
"""


class RunningGuest:
    """A fixture root as the running system of a guest, for what only happens on ``/``
    (commands for the running system: ``hwclock``, ``systemctl start``): the runner runs
    ``chroot``ed into a copy of the root, in mount and UTS namespaces of its own, with
    this machine's ``/usr`` (its tools), this checkout and its Python bind-mounted
    read-only. The guest gets a ``/dev`` of its own (null, zero, random, urandom: no
    RTC, like a Xen PV guest, unless ``rtc``: then a ``/dev/rtc0`` that is not a clock
    device, so that ``hwclock`` fails for real), no ``/sys`` and no running systemd (no
    service manager, as in a container). Nothing reaches this machine but the clock,
    which is not namespaced: never send ``datetime.datetime`` here.

    Needs root and ``unshare``; skipped without them (a failure under CI=true).
    """

    def __init__(self, dest: Path, fixture: str, modules: Iterable[str], rtc: bool = False):
        from testlib import require_root, require_tool
        require_tool("unshare")
        require_tool("chroot")
        require_root("a running guest (mount namespaces, chroot)")
        self.paths = standard_guest(dest, fixture, modules)
        self.root = dest
        self.binds = [os.path.realpath(p) for p in ("/usr", str(REPO), sys.prefix, sys.base_prefix)]
        self.binds = sorted(set(self.binds), key=len)
        for top in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink("/" + top) and not os.path.lexists(dest / top):
                os.symlink(os.readlink("/" + top), dest / top)
        for directory in ["dev", "proc", "tmp", "run"] + [b.lstrip("/") for b in self.binds]:
            (dest / directory).mkdir(parents=True, exist_ok=True)
        self.rtc = rtc

    def run(self, argv, input_text: Optional[str] = None) -> subprocess.CompletedProcess:
        """``argv`` (an absolute path, or a command on the guest's PATH) in the guest."""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
               "PYTHONDONTWRITEBYTECODE": "1", "BINDS": " ".join(self.binds),
               "RTC": "rtc0" if self.rtc else ""}
        return subprocess.run(["unshare", "--mount", "--uts", "--fork", "sh", "-c", _ENTER,
                               "enter", str(self.root)] + list(argv),
                              input=input_text, text=True, capture_output=True, env=env,
                              timeout=120)


# --- the console dialog on a pty ------------------------------------------------------------

class ConsoleOnPty:
    """``ovm-template-config`` (or ``command``) on a pty that is its controlling terminal
    (as the system console is for the unit); the test plays the user on the master side
    and keeps the slave open, to read the terminal's settings after the process is gone."""

    def __init__(self, argv, env=None, command=OVM_TEMPLATE_CONFIG):
        import pty

        self.master, self.slave = pty.openpty()
        full_env = dict(os.environ)
        full_env.pop("OVM_TEMPLATE_CONFIG_NO_FORK", None)
        full_env.update(env or {})
        self.process = subprocess.Popen(
            [command] + list(argv), stdin=self.slave, stdout=self.slave,
            stderr=self.slave, start_new_session=True, env=full_env,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        self.transcript = ""
        self._mark = 0

    def _read_some(self, deadline):
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        text = os.read(self.master, 4096).decode("utf-8", "replace")
        self.transcript += text.replace("\r\n", "\n")
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


