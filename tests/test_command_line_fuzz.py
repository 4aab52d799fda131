"""The five commands given odd command lines: never a traceback, and an exit status among
the documented ones.

Two ways: every option that takes a value is given each of a few nasty values (``nan``,
``inf``, ``-1``, ``""``, ...) in each of the command lines that work, all of them; and
hypothesis adds odd words and options anywhere in those command lines.

Each example runs the real command in a fresh empty working directory, with its own
options (from its ``--help``) mixed with odd values: empty strings, dashes, numbers that
are not (``nan``, ``1e999``), ``KEY=`` pairs, names that do not exist. It is kept away
from this machine's own system: every command that takes a root is given a sandbox root
first (``--root``, and ``$OVM_TEMPLATE_CONFIG_ROOT``), a guest tree with one module that
passes its params on, so that runs run; no value is an existing absolute path or ``--``
(after which that root would be a positional argument); stdin is empty and there is no
terminal. ``ovm-vmmessage`` talks to a development XenStore (guest 1); for the others
XenStore is an absent path, so the daemon refuses to start. Two may legitimately keep
running, and are stopped: ``ovmd-xenstored`` given a usable ``--socket-dir`` serves
(``ready``), and ``ovm-vmmessage --wait`` waits.
"""
from __future__ import annotations

import concurrent.futures
import os
import re
import select
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from testlib import bin_path, help_options, start_xenstored

#: command -> (the exit statuses its documentation lists, whether it takes --root)
COMMANDS = {
    "ovmd": ({0, 1, 2, 3, 4}, True),
    "ovm-template-config": ({0, 1, 2, 3, 4, 5, 130}, True),
    "ovm-chkconfig": ({0, 1, 2}, True),
    "ovm-vmmessage": ({0, 1, 2}, False),
    "ovmd-xenstored": ({0, 1, 2}, False),
}
#: Values an operator might type by mistake (no existing absolute path among them).
ODD = ["", "-", "-x", "x", "0", "1", "-1", "99", "1e999", "nan", "inf", "0x10", "a=b", "=",
       "k=", "=v", "é", " ", "\t", "..", ".", "../..", "/nonexistent", "/nonexistent/dir",
       "configure", "cleanup", "bogus", "on", "off", "on,off", "1:guest1", "0:x", "99999",
       "{}", "[", '{"a": 1}', "com.oracle.linux.root-password", "snapshot", "reconfig",
       "--root=x", "-p", "--stdin", "KEY", "☃☃"]
SAFE_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                    max_size=6).filter(lambda v: not v.startswith(("/", "~")) and v != "--")
#: The values that most often break a parser or what comes after it.
NASTY = ["", "-", "0", "-1", "nan", "inf", "1e999", "x"]
#: Command lines that work, which the examples start from (odd words are added to them).
BASES = {
    "ovmd": [[], ["-g", "k"], ["-p", "k=v"], ["-e", "reconfig"], ["--status"], ["-s", "cleanup"],
             ["--enable-initial-config"], ["--foreground", "-d", "1"]],
    "ovm-template-config": [["--stdin", "configure"], ["--enumerate", "configure"],
                            ["--stdin", "--dry-run", "configure"], ["--input", "0", "cleanup"],
                            ["--stdin", "--json", "--output", "1", "configure"],
                            ["--new-module", "myapp"]],
    "ovm-chkconfig": [["--list"], ["--add", "pass"], ["--del", "pass"],
                      ["--target", "configure", "pass", "on"]],
    "ovm-vmmessage": [["-d", "1", "-k", "com.example.k", "-V", "v"], ["-d", "guest1", "-l"],
                      ["-d", "1", "-q", "k"], ["-d", "1", "--wait", "k", "--timeout", "0.5"],
                      ["-d", "1", "--batch", "-"]],
    "ovmd-xenstored": [["--socket-dir", "xs"], ["--socket-dir", "xs", "--domain", "1:a"]],
}
#: How long a command may take; ovm-vmmessage, which may wait, before it is stopped.
TIMEOUT = 30
WAITING_TIMEOUT = 3
MODULE = """\
#!/bin/sh
### BEGIN PLUGIN INFO
# name: pass
# configure: 50
# cleanup: 50
### END PLUGIN INFO
[ "$1" = --enumerate ] && { echo '[{"key": "com.example.k", "hidden": true}]'; exit 0; }
cat
"""


@pytest.fixture(scope="module")
def sandbox():
    base = Path(tempfile.mkdtemp(prefix="fuzz-", dir="/tmp"))
    scripts = base / "root/etc/template.d/scripts"
    scripts.mkdir(parents=True)
    (scripts / "pass").write_text(MODULE)
    (scripts / "pass").chmod(0o755)
    subprocess.run([bin_path("ovm-chkconfig"), "--root", str(base / "root"), "--add", "pass"],
                   check=True)
    server = start_xenstored(base / "xs", {1: "guest1"})
    try:
        yield base, server.dom0_socket
    finally:
        server.stop()
        shutil.rmtree(str(base), ignore_errors=True)


@pytest.fixture(scope="module")
def options():
    return {command: help_options(command) for command in COMMANDS}


def run_odd(sandbox, command: str, takes_root: bool, args):
    base, xenstore = sandbox
    workdir = Path(tempfile.mkdtemp(dir=str(base)))
    root = str(base / "root")
    argv = [bin_path(command)] + (["--root", root] if takes_root else []) + list(args)
    env = dict(os.environ, OVM_TEMPLATE_CONFIG_ROOT=root, LANG="C.UTF-8",
               XENSTORED_PATH=xenstore if command == "ovm-vmmessage" else
               str(base / "no-xenstore"))
    process = subprocess.Popen(argv, cwd=str(workdir), env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    first = b""
    if command == "ovmd-xenstored":  # serving once it says ready: stop it then
        if select.select([process.stdout], [], [], TIMEOUT)[0]:
            first = process.stdout.readline()
        if first == b"ready\n":
            process.terminate()
    try:
        out, err = process.communicate(
            timeout=WAITING_TIMEOUT if command == "ovm-vmmessage" else TIMEOUT)
        still_running = first == b"ready\n"
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        still_running = True
    shutil.rmtree(str(workdir), ignore_errors=True)
    return process.returncode, (first + out).decode("utf-8", "replace"), \
        err.decode("utf-8", "replace"), still_running


def value_options(command: str) -> List[str]:
    """The options of ``command --help`` that take a value (a metavar follows them)."""
    proc = subprocess.run([bin_path(command), "--help"], capture_output=True, text=True,
                          timeout=30, check=True)
    found = set()
    for line in proc.stdout.splitlines():
        if re.match(r"\s+-", line):
            names = re.split(r"\s{2,}", line.strip())[0]
            found.update(re.findall(r"(--?[a-zA-Z][\w-]*)[ =][\[{A-Z]", names))
    return sorted(found)


def check(command: str, args, result) -> None:
    codes, _ = COMMANDS[command]
    code, out, err, still_running = result
    assert "Traceback" not in out + err, (args, err)
    if still_running:
        assert (command == "ovmd-xenstored" and out.startswith("ready\n")) or (
            command == "ovm-vmmessage" and any(arg.startswith("--w") for arg in args)), \
            (args, out, err)
    else:
        assert code in codes, (args, code, err)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_given_a_nasty_value(sandbox, command):
    takes_root = COMMANDS[command][1]
    lines = [base + [option, value] for base in BASES[command]
             for option in value_options(command) for value in NASTY]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda args: run_odd(sandbox, command, takes_root, args),
                                lines))
    for args, result in zip(lines, results):
        check(command, args, result)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_odd_command_lines_never_end_in_a_traceback(sandbox, options, command, data):
    codes, takes_root = COMMANDS[command]
    odd = st.one_of(st.sampled_from(ODD), SAFE_TEXT)
    # a word, or an option with an odd value, put anywhere in a command line that works
    piece = st.one_of(st.lists(st.one_of(st.sampled_from(options[command]), odd),
                               min_size=1, max_size=1),
                      st.tuples(st.sampled_from(options[command]), odd).map(list))
    args = list(data.draw(st.sampled_from(BASES[command]), label="base"))
    for extra in data.draw(st.lists(piece, max_size=3), label="pieces"):
        at = data.draw(st.integers(0, len(args)), label="at")
        args[at:at] = extra
    check(command, args, run_odd(sandbox, command, takes_root, args))
