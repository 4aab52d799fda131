"""Secrets never leave their destination: passwords and private keys (never on a command
line, in a log, or left in clear on disk after use).

The identity modules run on a fixture root with wrappers first on PATH for every tool
they call: each wrapper snapshots the argument list of every process (``/proc/*/cmdline``)
before exec'ing the real tool, and a thread keeps scanning ``/proc`` while the module
runs. Then no secret may appear in a process argument list, the module's stderr, its
journal, its stdout (other than as the value of its own key in the params it passes on,
which is the module contract's pipe to the next module), or any file under the root other
than its destination (and a password only as a hash, never in clear).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

from identity_helpers import fixture_root, run_module

TOOLS = ("useradd", "usermod", "groupadd", "groupmod", "chpasswd", "openssl", "ssh-keygen")
ROOT_PW = "Root-Secret-4711 xyz"
USER_PW = "Alice-Secret-0815 abc"


def make_wrappers(bin_dir: Path, log: Path) -> None:
    bin_dir.mkdir()
    for tool in TOOLS:
        real = shutil.which(tool)
        assert real, tool
        script = bin_dir / tool
        script.write_text(
            "#!/bin/sh\n"
            "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < \"$f\"; echo; done "
            ">> %s 2>/dev/null\n"
            "echo '== %s' >> %s\n"
            "exec %s \"$@\"\n" % (log, tool, log, real))
        script.chmod(0o755)


class ProcScanner(threading.Thread):
    """Collects every process argument list seen while running."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open("/proc/%s/cmdline" % pid, "rb") as handle:
                            self.seen.add(handle.read().replace(b"\0", b" ").decode("utf-8", "replace"))
                    except OSError:
                        pass


def secret_params(tmp_path):
    """(the secrets, all params): a user's and root's passwords, a user's private key and a
    host private key (fresh, from the real ssh-keygen), with the keys that go with them."""
    key_file = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_file)], check=True)
    user_key = key_file.read_text()
    subprocess.run(["ssh-keygen", "-q", "-t", "rsa", "-N", "", "-f", str(tmp_path / "h")], check=True)
    host_key = (tmp_path / "h").read_text()
    host_pub = (tmp_path / "h.pub").read_text()
    secrets = {
        "com.oracle.linux.user.password.0": USER_PW,
        "com.oracle.linux.root-password": ROOT_PW,
        "com.oracle.linux.ssh.private-key.0": user_key,
        "com.oracle.linux.ssh.host-rsa-key": host_key,
    }
    params = dict(secrets)
    params.update({"com.oracle.linux.user.name.0": "alice",
                   "com.oracle.linux.ssh.user.0": "alice",
                   "com.oracle.linux.ssh.host-rsa-key-pub": host_pub})
    return secrets, params


def fragments(value):
    # the whole value and the lines of a key's second half (the private part; its first
    # lines are a header every key of that type shares): a key quoted in part leaks too
    lines = [line for line in value.splitlines() if len(line) >= 16 and "-----" not in line]
    return [value] + lines[len(lines) // 2:]


def assert_only_in_destinations(root, secrets):
    """Files: passwords nowhere in clear; private keys only in their destination."""
    destinations = {
        "com.oracle.linux.ssh.private-key.0": "home/alice/.ssh/id_ed25519",
        "com.oracle.linux.ssh.host-rsa-key": "etc/ssh/ssh_host_rsa_key",
    }
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes().decode("utf-8", "replace")
        relative = str(path.relative_to(root))
        for key, value in secrets.items():
            if destinations.get(key) == relative:
                assert data == value
                continue
            for fragment in fragments(value):
                assert fragment not in data, (key, relative)


def test_no_secret_leaves_its_destination(tmp_path):
    root = fixture_root("ol8", tmp_path / "r")
    log = tmp_path / "cmdlines.log"
    make_wrappers(tmp_path / "bin", log)
    env = {"PATH": "%s:%s" % (tmp_path / "bin", os.environ.get("PATH", ""))}
    secrets, params = secret_params(tmp_path)
    scanner = ProcScanner()
    scanner.start()
    runs = []
    try:
        for module in ("system", "user", "ssh", "authentication"):
            runs.append(run_module(module, "configure", params, root, extra_env=env))
    finally:
        scanner.stop.set()
        scanner.join()

    cmdlines = log.read_text()
    for tool in ("useradd", "openssl", "ssh-keygen"):
        assert "== %s" % tool in cmdlines   # the wrappers did run
    outputs = []
    for run in runs:
        passed_on = {k: v for k, v in run.params.items() if k not in secrets}
        outputs += [run.stderr, json.dumps(passed_on), json.dumps(run.journal)]
        assert all(run.params[k] == v for k, v in secrets.items())   # contract: passed on unchanged
    for key, value in secrets.items():
        for fragment in fragments(value):
            assert fragment not in cmdlines, key
            assert not any(fragment in seen for seen in scanner.seen), key
            for text in outputs:
                assert fragment not in text, key
    assert_only_in_destinations(root, secrets)
    shadow = {line.split(":")[0]: line.split(":")[1] for line in (root / "etc/shadow").read_text().splitlines()}
    assert shadow["root"].startswith("$6$") and shadow["alice"].startswith("$6$")
