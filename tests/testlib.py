"""Helpers shared by the whole suite, importable from any test folder as ``testlib``.

(``conftest`` is not importable reliably: every test folder may have its own.)
"""
from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def bin_path(name: str) -> str:
    """Path of one of the project's console scripts in the test virtualenv."""
    path = BIN / name
    if not path.exists():
        pytest.fail("console script %s is not installed in %s (run `make test`)" % (name, BIN))
    return str(path)


def require_tool(name: str) -> str:
    """Path of an external tool; skips without it, and fails under CI=true."""
    path = shutil.which(name)
    if path is None:
        message = "%s is not installed (make test installs it via scripts/install-debian-deps)" % name
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def require_root(why: str) -> None:
    """Skip (fail under CI=true) unless running as uid 0; ``why`` says what needs it."""
    if os.geteuid() != 0:
        message = "this test needs root: %s" % why
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


class DevXenStore:
    """A running ``ovmd-xenstored``: its socket directory and how to reach it."""

    def __init__(self, socket_dir: Path, domains: dict, process: subprocess.Popen) -> None:
        self.socket_dir = socket_dir
        self.domains = domains  # domid -> name
        self.process = process

    @property
    def dom0_socket(self) -> str:
        return str(self.socket_dir / "socket")

    def guest_socket(self, domid: int) -> str:
        return str(self.socket_dir / "domain" / str(domid))

    @property
    def env(self) -> dict:
        """Environment for Debian's xenstore-* tools, aimed at the privileged socket."""
        env = dict(os.environ)
        env["XENSTORED_PATH"] = self.dom0_socket
        return env

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_xenstored(socket_dir: Path, domains=None, extra_args=()) -> DevXenStore:
    """Start ``ovmd-xenstored`` and wait for its ``ready`` line."""
    domains = domains if domains is not None else {1: "guest1", 2: "guest2"}
    argv = [bin_path("ovmd-xenstored"), "--socket-dir", str(socket_dir)]
    for domid, name in domains.items():
        argv += ["--domain", "%d:%s" % (domid, name)]
    argv += list(extra_args)
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        _, err = process.communicate(timeout=5)
        raise RuntimeError("ovmd-xenstored did not become ready: %r %s" % (line, err))
    return DevXenStore(socket_dir, domains, process)



# --- the commands' options ------------------------------------------------------------------

#: An option name: ``-p`` or ``--set-param``, not a part of a longer word.
OPTION_NAME = r"(?<![\w-])(-[a-zA-Z]|--[a-z][a-z0-9-]*)(?![\w-])"


def help_options(command: str) -> list:
    """Every option (short and long) on the option lines of ``command --help``, in every
    section (argparse's groups included), sorted."""
    import re

    proc = subprocess.run([bin_path(command), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    options = set()
    for line in proc.stdout.splitlines():
        # argparse's option lines: "  -p KEY=VALUE, --set-param KEY=VALUE   help text"
        if re.match(r"\s+-", line):
            names = re.split(r"\s{2,}", line.strip())[0]
            options.update(re.findall(OPTION_NAME, names))
    return sorted(options)


# --- the fixture roots of the module tests ---------------------------------------------------

def load_script(name: str):
    """The module ``scripts/NAME.py`` (scripts/ is no package), loaded once."""
    if name not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / (name + ".py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sandbox_root = load_script("sandbox_root")
FIXTURE_ROOTS = sandbox_root.FIXTURE_ROOTS
STANDARD_MODULES = sandbox_root.STANDARD_MODULES


#: A fresh copy of a fixture root, with the modes (and owners) a real guest of its
#: distribution has: ``fixture_root(name, dest)``.
fixture_root = sandbox_root.fixture_root


def install_modules(root: Path, names=STANDARD_MODULES) -> None:
    """Register standard modules in ``root`` as the packages do (``ovm-chkconfig --add``)."""
    scripts = root / "etc" / "template.d" / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(REPO / "template.d" / "scripts" / name, scripts / name)
        subprocess.run([bin_path("ovm-chkconfig"), "--root", str(root), "--add", name],
                       check=True, capture_output=True)


# --- password verification without the crypt module (gone in Python 3.13) ----------------

def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches the crypt hash ``hashed``.

    Uses ``crypt`` where the interpreter still has it, else ``openssl passwd`` (MD5,
    SHA-256, SHA-512 hashes; password on stdin) or ``mkpasswd`` (any method libxcrypt
    knows, yescrypt included; password on stdin). Fails the test clearly when none can.
    """
    method = hashed.split("$")[1] if hashed.startswith("$") else ""
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # noqa: F401  (tests only; removed in Python 3.13)
        return crypt.crypt(password, hashed) == hashed
    except ImportError:
        pass
    openssl = shutil.which("openssl")
    if openssl and method in ("1", "5", "6"):
        salt = hashed.split("$")[2]
        if salt.startswith("rounds="):
            salt = hashed.split("$")[3]
        out = subprocess.run([openssl, "passwd", "-%s" % method, "-salt", salt, "-stdin"],
                             input=password + "\n", capture_output=True, text=True, check=True)
        return out.stdout.strip() == hashed
    mkpasswd = shutil.which("mkpasswd")
    if mkpasswd:
        out = subprocess.run([mkpasswd, "--stdin", "-S", hashed.rsplit("$", 1)[0], "-m", "auto"],
                             input=password, capture_output=True, text=True)
        if out.returncode == 0:
            return out.stdout.strip() == hashed
    pytest.fail("cannot verify a %r password hash: no crypt module, openssl cannot do it and "
                "mkpasswd (package whois) is not installed" % method)


# --- a real Debian root ---------------------------------------------------------------------

#: Where the debootstrapped Debian root is cached between runs on one machine.
CACHE_DIR = Path(os.environ.get("OVMD_TEST_CACHE", "/var/cache/ovmd-tests"))
DEBIAN_MIRROR = os.environ.get("OVMD_TEST_MIRROR", "http://deb.debian.org/debian")
#: What the tests need inside it: python3 (RPM scriptlets run ovm-chkconfig in the root)
#: and openssh (the identity modules' real-tools test uses the root's own ssh-keygen).
DEBIAN_ROOT_PACKAGES = ("python3", "openssh-client", "openssh-server")
#: A root that boots under systemd-nspawn as a Debian 12 guest would: systemd, the
#: services the standard modules configure (ssh, chrony, ifupdown with a DHCP client),
#: and what the project's .deb packages depend on, so dpkg installs them offline.
DEBIAN_BOOT_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "openssh-client",
                        "chrony", "ifupdown", "isc-dhcp-client", "iproute2", "python3",
                        "python3-daemon", "python3-pyudev", "python3-simplejson",
                        "python3-pycdlib")


def debian_root_tarball_path(packages=DEBIAN_ROOT_PACKAGES) -> Path:
    """Where the tarball of a root with ``packages`` is cached (keyed by the list)."""
    return CACHE_DIR / ("bookworm-minbase-%s.tar" % "-".join(packages))


DEBIAN_ROOT_TARBALL = debian_root_tarball_path()


def debian_root_tarball(packages=DEBIAN_ROOT_PACKAGES) -> Path:
    """The cached tarball of ``debootstrap --variant=minbase --include=PACKAGES bookworm``.

    Built once per machine and package list (about a minute; needs root and the mirror)
    under a lock, so parallel test runs wait for one build; written under a temporary
    name and renamed. A failure raises RuntimeError; callers turn it into a skip, which
    fails under CI=true.
    """
    tarball = debian_root_tarball_path(packages)
    if tarball.exists():
        return tarball
    require_tool("debootstrap")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        staging = Path(tempfile.mkdtemp(prefix="bookworm-", dir=str(CACHE_DIR)))
        try:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(packages),
                 "bookworm", str(staging / "root"), DEBIAN_MIRROR],
                capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError("debootstrap failed (%d): %s" % (
                    proc.returncode, (proc.stdout + proc.stderr)[-2000:]))
            partial = staging / "root.tar.partial"
            with tarfile.open(partial, "w") as archive:
                archive.add(str(staging / "root"), arcname=".")
            os.rename(partial, tarball)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tarball


def extract_debian_root(dest: Path, packages=DEBIAN_ROOT_PACKAGES) -> Path:
    """A fresh copy of the cached Debian root with ``packages`` at ``dest``."""
    tarball = debian_root_tarball(packages)
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-xpf", str(tarball), "-C", str(dest), "--numeric-owner"], check=True)
    return dest


# --- sealing: a configured guest root, and what of the host a seal must leave alone ------

#: The host paths a seal of another root would change if it leaked out of that root (and
#: the run log and its rotations, ``/var/log/ovm-template-config.log*``).
SEAL_WATCHED_HOST_PATHS = ("/etc/sysconfig", "/etc/template.d", "/etc/ssh", "/etc/machine-id",
                           "/var/lib/ovmd", "/var/lib/ovm-template-config", "/run/ovmd")


def host_state(paths=SEAL_WATCHED_HOST_PATHS) -> dict:
    """Every file, directory and link under ``paths`` on this machine: its type, mode,
    size, modification time and (for a file) content digest."""
    import hashlib

    state = {}

    def note(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        digest = None
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as handle:
                digest = hashlib.sha256(handle.read()).hexdigest()
        state[path] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)

    import glob

    for top in list(paths) + sorted(glob.glob("/var/log/ovm-template-config.log*")):
        note(top)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                note(os.path.join(dirpath, name))
    return state


def configured_guest_root(dest: Path, name: str = "debian12") -> Path:
    """A fixture root with the standard modules, configured once by the real runner, as
    a VM that has lived is: host keys, a machine-id, the run report, log and state."""
    fixture_root(name, dest)
    install_modules(dest)
    params = {"com.oracle.linux.network.hostname": "vm1.example.com",
              "com.oracle.linux.root-password": "Seal-test-pw-1"}
    import json

    proc = subprocess.run([bin_path("ovm-template-config"), "--root", str(dest), "--stdin",
                           "configure"], input=json.dumps(params), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dest


#: A secret a lived guest caches (:func:`with_ovmd_state`); a seal leaves it nowhere.
SEALED_SECRET = "Sealed-away-secret-42"


def with_ovmd_state(root: Path) -> Path:
    """What a VM that has lived holds besides what configure left: ovmd's cache (its
    snapshot, journal and a set-aside copy), a cached secret, the VM's identity, a
    rotated run log; its first boot done (INITIAL_CONFIG=no, as the package ships it)."""
    from ovmd.cache import ParamCache
    from ovmd.paths import Paths

    paths = Paths(str(root))
    (root / "etc/sysconfig").mkdir(parents=True, exist_ok=True)
    (root / "etc/sysconfig/ovmd").write_text("# ovmd settings\nINITIAL_CONFIG=no\n")
    cache = ParamCache(paths)
    cache.update([("com.example.app", "1"), ("com.oracle.linux.root-password", SEALED_SECRET)])
    cache.clear()  # writes the snapshot
    cache.update([("com.example.app", "2"), ("com.example.user.password.0", SEALED_SECRET)])
    cache.close()
    Path(paths.cache_file + ".corrupt-20240101T000000Z").write_text("{not json")
    os.makedirs(os.path.dirname(paths.log_file), exist_ok=True)
    Path(paths.identity_file).write_text('{"configured": {"vm": "/vm/1234"}}\n')
    Path(paths.log_file + ".1.gz").write_bytes(b"\x1f\x8b old log")
    return root


# --- a real tmpfs ----------------------------------------------------------------------------

class Tmpfs:
    """A real tmpfs mounted at ``path`` (``mount -t tmpfs``; needs root): a small disk that
    fills up for real. Resize it with :meth:`resize`; always unmount with :meth:`unmount`
    (``mounted_tmpfs`` does, even when the test fails)."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        require_root("it mounts a tmpfs")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size,
                        "ovmd-test-tmpfs", str(path)], check=True, capture_output=True)

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", "remount,size=%s" % size, str(self.path)], check=True,
                       capture_output=True)

    def free_bytes(self) -> int:
        st = os.statvfs(str(self.path))
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0) -> Path:
        """Take all free space but ``leave`` bytes (rounded to pages) with a ballast file."""
        ballast = self.path / ".ballast"
        with open(ballast, "ab") as handle:
            while self.free_bytes() > leave:
                try:
                    handle.write(b"\0" * min(1 << 20, max(4096, self.free_bytes() - leave)))
                    handle.flush()
                except OSError:
                    break
        return ballast

    def unmount(self) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


class mounted_tmpfs:
    """``with mounted_tmpfs(path, "1m") as disk:`` -- a :class:`Tmpfs`, unmounted on exit."""

    def __init__(self, path: Path, size: str) -> None:
        self.path, self.size = path, size
        self.disk: "Tmpfs | None" = None

    def __enter__(self) -> Tmpfs:
        self.disk = Tmpfs(self.path, self.size)
        return self.disk

    def __exit__(self, *exc_info) -> None:
        if self.disk is not None:
            self.disk.unmount()
