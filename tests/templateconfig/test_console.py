"""--console-input, driven through a real pseudo-terminal.

Each test starts a small driver process in a new session whose stdin is not a terminal;
``prompt_params`` opens the pty's slave as ``tty_path`` (it becomes the driver's
controlling terminal, so Ctrl-C works as on a console). The test plays the user on the
master side and sees exactly what a user would see, including the terminal's own echo of
typed characters -- so a password missing from the transcript was really not echoed.
"""
from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import textwrap
import time

import pytest

from templateconfig.console import ConsoleAborted, ConsoleError, prompt_params

NET = "com.oracle.linux.network."
ROOT_PASSWORD = "com.oracle.linux.root-password"
SECRET = "Blue-Horse-Battery-9"

DRIVER = textwrap.dedent("""
    import json, logging, sys
    from templateconfig.console import ConsoleAborted, prompt_params
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    modules = [tuple(m) for m in json.loads(sys.argv[2])]
    try:
        result = prompt_params(modules, json.loads(sys.argv[3]), tty_path=sys.argv[1],
                               known=json.loads(sys.argv[4]))
    except ConsoleAborted as exc:
        print(json.dumps({"aborted": str(exc)}))
    else:
        print(json.dumps({"result": result}))
""")


class PtyUser:
    """The user at the terminal: waits for text, types answers, keeps the transcript."""

    def __init__(self, modules, params=None, timeout=15.0, known=()):
        self.master, self.slave = pty.openpty()
        self.slave_name = os.ttyname(self.slave)
        self.timeout = timeout
        self.transcript = ""
        self.process = subprocess.Popen(
            [sys.executable, "-c", DRIVER, self.slave_name, json.dumps(modules),
             json.dumps(params or {}), json.dumps(list(known))],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, text=True)

    # We keep our slave descriptor open until finish(): the master then never reads EIO
    # (no slave open) before the driver has opened the terminal, so every read waits for
    # the driver's next output instead of retrying.

    def _read_some(self, deadline):
        ready, _, _ = select.select([self.master], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return False
        try:
            data = os.read(self.master, 4096)
        except OSError:  # EIO: every slave descriptor is closed, so nothing more can come
            return False
        self.transcript += data.decode("utf-8", "replace").replace("\r\n", "\n")
        return bool(data)

    def expect(self, text):
        """Wait until ``text`` appears after the previous expectation."""
        deadline = time.monotonic() + self.timeout
        while text not in self.transcript[self._mark:]:
            if time.monotonic() >= deadline or not self._read_some(deadline):
                if text in self.transcript[self._mark:]:
                    break
                raise AssertionError("did not see %r; transcript so far:\n%s"
                                     % (text, self.transcript))
        self._mark = self.transcript.index(text, self._mark) + len(text)

    _mark = 0

    def type(self, line):
        os.write(self.master, line.encode() + b"\r")

    def press(self, control):
        os.write(self.master, control)

    def finish(self):
        """The driver's outcome: {"result": params} or {"aborted": message}; and stderr."""
        try:
            out, err = self.process.communicate(timeout=self.timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        # The driver has exited; once our slave is closed too, the master gives what is
        # left in the terminal and then EIO: that is the end of the transcript.
        self._close_slave()
        deadline = time.monotonic() + self.timeout  # a failure guard only
        while self._read_some(deadline):
            pass
        self.close()
        assert out, "driver printed nothing; stderr:\n%s" % err
        return json.loads(out), err

    def _close_slave(self):
        if self.slave is not None:
            os.close(self.slave)
            self.slave = None

    def close(self):
        self._close_slave()
        if self.master is not None:
            os.close(self.master)
            self.master = None


@pytest.fixture
def run():
    users = []

    def start(modules, params=None, known=()):
        user = PtyUser(modules, params, known=known)
        users.append(user)
        return user

    yield start
    for user in users:
        if user.process.poll() is None:
            user.process.kill()
            user.process.wait()
        user.close()


NETWORK = ("network", [
    {"key": NET + "hostname", "description": "Host name of the virtual machine.",
     "required": True},
    {"key": NET + "bootproto.0", "description": "Boot protocol of the first interface.",
     "choices": ["dhcp", "static"], "default": "dhcp"},
    {"key": NET + "ipaddr.0", "description": "IP address of the first interface.",
     "required": True, "requires": [NET + "bootproto.0", ["static"]]},
    {"key": NET + "host.0", "description": "An /etc/hosts line.", "hidden": True},
])
AUTHENTICATION = ("authentication", [
    {"key": ROOT_PASSWORD, "description": "The root password.", "required": True,
     "password": True},
])


def test_defaults_accepted_with_enter(run):
    user = run([NETWORK], {NET + "hostname": "web1"})
    user.expect(NET + "hostname")
    user.expect("Host name of the virtual machine.")
    user.expect("Value [web1]: ")
    user.type("")
    user.expect("Choices: dhcp, static")
    user.expect("Value [dhcp]: ")
    user.type("")
    outcome, _ = user.finish()
    assert outcome == {"result": {NET + "hostname": "web1", NET + "bootproto.0": "dhcp"}}
    # ipaddr.0 needs bootproto.0 == static; host.0 is hidden: neither was asked
    assert NET + "ipaddr.0" not in user.transcript
    assert NET + "host.0" not in user.transcript


def test_choices_enforced_with_a_reask(run):
    user = run([NETWORK], {NET + "hostname": "web1"})
    user.expect("Value [web1]: ")
    user.type("")
    user.expect("Value [dhcp]: ")
    user.type("bootp")
    user.expect("%s: value 'bootp' is not one of: dhcp, static. Please try again."
                % (NET + "bootproto.0"))
    user.expect("Value [dhcp]: ")
    user.type("DHCP")  # a choice in another case is taken in the choice's spelling
    outcome, _ = user.finish()
    assert outcome["result"][NET + "bootproto.0"] == "dhcp"


def test_required_key_cannot_be_left_empty(run):
    user = run([NETWORK])
    user.expect("Value (required): ")
    user.type("")
    user.expect("%s: required, but not given. Please try again." % (NET + "hostname"))
    user.expect("Value (required): ")
    user.type("  web2  ")
    user.expect("Value [dhcp]: ")
    user.type("")
    outcome, _ = user.finish()
    assert outcome["result"][NET + "hostname"] == "web2"


def test_an_answer_makes_a_dependent_key_applicable(run):
    user = run([NETWORK], {NET + "hostname": "web1"})
    user.expect("Value [web1]: ")
    user.type("")
    user.expect("Value [dhcp]: ")
    user.type("static")
    user.expect(NET + "ipaddr.0")
    user.expect("Value (required): ")
    user.type("192.0.2.10")
    outcome, _ = user.finish()
    assert outcome["result"] == {NET + "hostname": "web1", NET + "bootproto.0": "static",
                                 NET + "ipaddr.0": "192.0.2.10"}


def test_a_later_answer_brings_back_an_earlier_key(run):
    # "gateway" is listed before the key it depends on: it is asked after that answer
    modules = [("m", [
        {"key": "gateway", "depends": "address", "description": "Gateway."},
        {"key": "address", "description": "Address."},
    ])]
    user = run(modules)
    user.expect("Address.")
    user.type("192.0.2.10")
    user.expect("Gateway.")
    user.type("192.0.2.1")
    outcome, _ = user.finish()
    assert outcome["result"] == {"address": "192.0.2.10", "gateway": "192.0.2.1"}


def test_hidden_keys_pass_through_unasked(run):
    user = run([NETWORK], {NET + "hostname": "h", NET + "host.0": "192.0.2.5 h"})
    user.expect("Value [h]: ")
    user.type("")
    user.expect("Value [dhcp]: ")
    user.type("")
    outcome, _ = user.finish()
    assert outcome["result"][NET + "host.0"] == "192.0.2.5 h"
    assert NET + "host.0" not in user.transcript


def test_password_typed_twice_never_shown(run):
    user = run([AUTHENTICATION])
    user.expect(ROOT_PASSWORD)
    user.expect("Password: ")
    user.type(SECRET)
    user.expect("Password again: ")
    user.type(SECRET)
    outcome, err = user.finish()
    assert outcome == {"result": {ROOT_PASSWORD: SECRET}}
    assert SECRET not in user.transcript  # the terminal did not echo it
    assert SECRET not in err  # nor did any log line


def test_password_mismatch_asks_again(run):
    user = run([AUTHENTICATION])
    user.expect("Password: ")
    user.type(SECRET)
    user.expect("Password again: ")
    user.type(SECRET + "-typo")
    user.expect("The two passwords differ. Please try again.")
    user.expect("Password: ")
    user.type(SECRET)
    user.expect("Password again: ")
    user.type(SECRET)
    outcome, err = user.finish()
    assert outcome == {"result": {ROOT_PASSWORD: SECRET}}
    assert SECRET not in user.transcript and SECRET not in err


def test_required_password_cannot_be_empty(run):
    user = run([AUTHENTICATION])
    user.expect("Password: ")
    user.type("")
    user.expect("required, but not given")
    user.expect("Password: ")
    user.type(SECRET)
    user.expect("Password again: ")
    user.type(SECRET)
    outcome, _ = user.finish()
    assert outcome["result"][ROOT_PASSWORD] == SECRET


def test_existing_password_is_kept_with_enter_and_not_shown(run):
    user = run([AUTHENTICATION], {ROOT_PASSWORD: SECRET})
    user.expect("Password (Enter keeps the current one): ")
    user.type("")
    outcome, _ = user.finish()
    assert outcome["result"][ROOT_PASSWORD] == SECRET
    assert SECRET not in user.transcript


def test_echo_is_back_on_after_a_password(run):
    modules = [AUTHENTICATION, ("after", [{"key": "visible", "description": "Visible."}])]
    user = run(modules)
    user.expect("Password: ")
    user.type(SECRET)
    user.expect("Password again: ")
    user.type(SECRET)
    user.expect("Visible.")
    user.expect("Value (Enter to leave unset): ")
    user.type("plain-answer-echoed")
    outcome, _ = user.finish()
    assert outcome["result"]["visible"] == "plain-answer-echoed"
    assert "plain-answer-echoed" in user.transcript


def test_ctrl_d_aborts_cleanly(run):
    user = run([NETWORK])
    user.expect("Value (required): ")
    user.press(b"\x04")
    outcome, err = user.finish()
    assert "Ctrl-D" in outcome["aborted"]
    assert "Traceback" not in err


def test_ctrl_c_aborts_cleanly_even_during_a_password(run):
    user = run([AUTHENTICATION])
    user.expect("Password: ")
    user.press(SECRET[:5].encode())
    user.press(b"\x03")
    outcome, err = user.finish()
    assert "Ctrl-C" in outcome["aborted"]
    assert "Traceback" not in err
    assert SECRET[:5] not in user.transcript


def test_no_terminal_is_a_clear_error(tmp_path):
    with pytest.raises(ConsoleError, match="no terminal to prompt on"):
        prompt_params([NETWORK], {}, tty_path=str(tmp_path / "no-such-tty"))


def test_streams_given_by_the_caller():
    # not a terminal: lines are read as they come (nothing is echoed by a pipe anyway)
    stdin = io.StringIO("web3\nstatic\n192.0.2.3\n%s\n%s\n" % (SECRET, SECRET))
    stdout = io.StringIO()
    result = prompt_params([NETWORK, AUTHENTICATION], {}, stdin=stdin, stdout=stdout)
    assert result == {NET + "hostname": "web3", NET + "bootproto.0": "static",
                      NET + "ipaddr.0": "192.0.2.3", ROOT_PASSWORD: SECRET}
    assert SECRET not in stdout.getvalue()


def test_end_of_input_from_a_stream_aborts():
    with pytest.raises(ConsoleAborted):
        prompt_params([NETWORK], {}, stdin=io.StringIO("web3\n"), stdout=io.StringIO())


def test_ctrl_c_at_a_plain_prompt(run):
    user = run([NETWORK])
    user.expect("Value (required): ")
    user.press(b"\x03")
    outcome, err = user.finish()
    assert "Ctrl-C" in outcome["aborted"]
    assert "Traceback" not in err


def test_malformed_descriptor_fails_before_any_prompt():
    stdout = io.StringIO()
    with pytest.raises(ConsoleError, match="module broken.*key x.*'hidden'"):
        prompt_params([NETWORK, ("broken", [{"key": "x", "hidden": "maybe"}])], {},
                      stdin=io.StringIO("web1\n"), stdout=stdout)
    assert stdout.getvalue() == ""


def test_known_keys_are_not_asked_again(run):
    user = run([NETWORK], {NET + "hostname": "web1"}, known=[NET + "hostname"])
    user.expect("Value [dhcp]: ")
    user.type("")
    outcome, _ = user.finish()
    assert outcome == {"result": {NET + "hostname": "web1", NET + "bootproto.0": "dhcp"}}
    assert NET + "hostname" not in user.transcript


def test_a_known_key_without_a_valid_value_is_still_asked(run):
    # required and empty, and outside the choices: both asked
    user = run([NETWORK], {NET + "hostname": "", NET + "bootproto.0": "bootp"},
               known=[NET + "hostname", NET + "bootproto.0"])
    user.expect(NET + "hostname")
    user.expect("Value (required): ")
    user.type("web4")
    user.expect(NET + "bootproto.0")
    user.expect("Value [bootp]: ")
    user.type("dhcp")
    outcome, _ = user.finish()
    assert outcome["result"][NET + "hostname"] == "web4"


CANCEL_DRIVER = textwrap.dedent("""
    import json, os, sys, termios
    from templateconfig.console import ConsoleAborted, ConsoleCancelled, prompt_params

    class PipeWatch:
        # readable when the test writes; poll() says whether the test wrote "stop"
        def __init__(self, fd):
            self.fd = fd
        def fileno(self):
            return self.fd
        def poll(self):
            return os.read(self.fd, 100).strip().endswith(b"stop")

    modules = [tuple(m) for m in json.loads(sys.argv[2])]
    try:
        result = prompt_params(modules, {}, tty_path=sys.argv[1],
                               cancel=PipeWatch(int(sys.argv[3])))
    except ConsoleCancelled as exc:
        fd = os.open(sys.argv[1], os.O_RDWR)
        echo = bool(termios.tcgetattr(fd)[3] & termios.ECHO)
        print(json.dumps({"cancelled": str(exc), "echo": echo}))
    else:
        print(json.dumps({"result": result}))
""")


class CancellableUser(PtyUser):
    def __init__(self, modules):
        self.cancel_r, self.cancel_w = os.pipe()
        self.master, self.slave = pty.openpty()
        self.slave_name = os.ttyname(self.slave)
        self.timeout = 15.0
        self.transcript = ""
        self.process = subprocess.Popen(
            [sys.executable, "-c", CANCEL_DRIVER, self.slave_name, json.dumps(modules),
             str(self.cancel_r)], pass_fds=(self.cancel_r,),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, text=True)
        os.close(self.cancel_r)

    def signal(self, word):
        os.write(self.cancel_w, word.encode() + b"\n")


@pytest.fixture
def cancellable():
    users = []

    def start(modules):
        user = CancellableUser(modules)
        users.append(user)
        return user

    yield start
    for user in users:
        if user.process.poll() is None:
            user.process.kill()
            user.process.wait()
        user.close()
        os.close(user.cancel_w)


def test_cancel_during_a_password_restores_the_terminal(cancellable):
    user = cancellable([AUTHENTICATION])
    user.expect("Password: ")
    user.press(SECRET[:4].encode())  # half-typed, no Enter
    user.signal("stop")
    outcome, err = user.finish()
    assert outcome == {"cancelled": "the dialog was cancelled", "echo": True}
    assert SECRET[:4] not in user.transcript and "Traceback" not in err


def test_a_watch_that_says_no_keeps_the_dialog_going(cancellable):
    user = cancellable([NETWORK])
    user.expect("Value (required): ")
    user.signal("keep")
    user.type("web5")
    user.expect("Value [dhcp]: ")
    user.type("")
    outcome, _ = user.finish()
    assert outcome == {"result": {NET + "hostname": "web5", NET + "bootproto.0": "dhcp"}}
