"""A password never shapes the log: secrets are never passed to a logger, and the redaction
filter (a last resort) masks only whole values of at least 8 characters.

A first boot runs once per root password, on the same root path and the same host, with
modules that talk about the keys, the root user and Oracle's names on their stderr; the
second fails, so that the runner, the daemon and the status sent to the host quote it.
With a short dictionary password (``oracle``, ``linux``, ``root``) the daemon's log, the
runner's log and the status are identical, but for timestamps, pids and durations, to
those of a run with a long random password; and no password ever appears in them.
"""
from __future__ import annotations

import re
import secrets
import shutil

import pytest
from daemon_helpers import CHANNEL, GUEST, files_containing, make_guest

from ovmd.firstboot.contract import STATUS_KEY
from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreError

ROOT_PASSWORD = "com.oracle.linux.root-password"
# Talks on stderr (which the runner relays and the daemon logs) about what it configures.
CHATTY = """\
input=$(cat)
echo "configuring com.oracle.linux.root-password for user root on oracle linux" >&2
echo "first-boot configuration: the linux root password is set" >&2
printf '%s\\n' "$input"
"""
# The same, then it fails: the runner and the daemon report its stderr.
FAILING = CHATTY.replace("printf", "exit 1; printf")
NORMALIZE = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d{4})?"), "<time>"),
    (re.compile(r"ovmd\[\d+\]"), "ovmd[<pid>]"),
    (re.compile(r"\[\d+\]"), "[<pid>]"),
    (re.compile(r"\(pid \d+\)"), "(pid <pid>)"),
    (re.compile(r"\b\d+(\.\d+)? ?s\b"), "<duration>"),
    # the test's own systemd notification socket, a fresh temporary name per start
    (re.compile(r"/tmp/ntf-[^/]+/n"), "<notify socket>"),
]


def normalized(text: str) -> str:
    for pattern, replacement in NORMALIZE:
        text = pattern.sub(replacement, text)
    return text


def first_boot(root, xenstored, dom0, ovmd_factory, password):
    """One first boot with ``password`` on a fresh ``root`` (same path every time); the
    daemon's log and the runner's log, normalized."""
    for child in list(root.iterdir()):
        shutil.rmtree(str(child)) if child.is_dir() and not child.is_symlink() else child.unlink()
    try:
        dom0.rm(CHANNEL)
    except XenStoreError:
        pass
    make_guest(root, [(10, "chatty", CHATTY), (20, "oracle", FAILING)])
    daemon = ovmd_factory(["--quiet-period", "0.1"], start=False)
    daemon.log_path.write_bytes(b"")  # this run's log only
    daemon.start()
    host = HostChannel(dom0, GUEST)
    host.send([("com.oracle.linux.network.hostname", "linux-root-01"),
               ("com.oracle.linux.user.name.0", "oracle"), (ROOT_PASSWORD, password)])
    status = host.wait_for(STATUS_KEY, 60, new_only=False)
    assert status.startswith("failed: ")
    assert daemon.cli("--status", "--wait").returncode == 1
    assert daemon.terminate() == 0
    return "\n".join([daemon.log_text(), "--- runner log ---",
                      (root / "var/log/ovm-template-config.log").read_text(),
                      "--- status sent to the host ---", status])


@pytest.fixture
def runs(root, xenstored, dom0, ovmd_factory):
    def run(password):
        logs = first_boot(root, xenstored, dom0, ovmd_factory, password)
        if len(password) >= 8:  # nor in a file but the secret cache in /run
            assert files_containing(root, password) == ["run/ovmd/secrets.json"]
        return logs
    return run


def test_a_short_password_leaves_the_log_as_a_long_random_one_does(runs):
    random_password = secrets.token_urlsafe(24)
    reference = runs(random_password)
    assert random_password not in reference
    assert "com.oracle.linux.root-password" in reference and "root" in reference  # not masked
    for password in ("oracle", "linux", "root"):
        assert normalized(runs(password)) == normalized(reference), password
