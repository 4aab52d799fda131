"""A forked module process shows itself as the ``python SCRIPT TARGET`` it stands for.

The real runner forks each Python module from its own pre-imported process, which would
otherwise show the runner's command line. While a module hangs (it announces its pid on
a FIFO and waits on another), ``ps -o args=``, ``/proc/PID/cmdline`` and ``comm`` are
read, as an operator looking for a hung module would; then the module is let go and the
run ends normally. Both ways of setting the title are exercised: in the runner's own
argument area, and, for a title longer than the runner's command line, into its
environment area (the module's environment must come through intact).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from runner_helpers import OVM_TEMPLATE_CONFIG, add_python_module, guest, wait_readable

HANG = '''\
fifo = os.open(%(ready)r, os.O_WRONLY)
os.write(fifo, b"%%d\\n" %% os.getpid())
os.close(fifo)
import subprocess
with open(%(env)r, "wb") as handle:  # the C library's environment, as a command gets it
    handle.write(subprocess.run(["env", "-0"], capture_output=True).stdout)
with open(%(go)r) as fifo:
    fifo.read()
params["hung"] = "released"
'''


class HungModule:
    """A run of the real runner whose module ``name`` hangs until released."""

    def __init__(self, tmp_path, name, shebang="#!/usr/bin/env python"):
        tmp_path.mkdir(exist_ok=True)
        self.paths = guest(tmp_path)
        self.ready, self.go = tmp_path / "ready", tmp_path / "go"
        self.env = tmp_path / "env"
        os.mkfifo(self.ready)
        os.mkfifo(self.go)
        self.script = add_python_module(self.paths, name, 50, HANG % {
            "ready": str(self.ready), "go": str(self.go), "env": str(self.env)},
            shebang=shebang)

    def __enter__(self):
        announced = os.open(self.ready, os.O_RDONLY | os.O_NONBLOCK)
        try:
            self.runner = subprocess.Popen(
                [OVM_TEMPLATE_CONFIG, "--root", self.paths.root, "--stdin", "--json",
                 "configure"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            self.runner.stdin.write("{}")
            self.runner.stdin.close()
            self.runner.stdin = None
            assert wait_readable(announced), "the module did not start"
            self.pid = int(os.read(announced, 100))
        finally:
            os.close(announced)
        return self

    def ps(self, field):
        return subprocess.run(["ps", "-ww", "-o", field + "=", "-p", str(self.pid)],
                              capture_output=True, text=True, check=True).stdout.rstrip("\n")

    def cmdline(self):
        with open("/proc/%d/cmdline" % self.pid, "rb") as handle:
            return handle.read()

    def comm(self):
        with open("/proc/%d/comm" % self.pid) as handle:
            return handle.read().rstrip("\n")

    def runner_cmdline(self):
        with open("/proc/%d/cmdline" % self.runner.pid, "rb") as handle:
            return handle.read()

    def __exit__(self, *exc):
        with open(self.go, "w") as fifo:  # let it go
            fifo.write("go\n")
        out, err = self.runner.communicate(timeout=60)
        self.report = json.loads(out) if out.strip() else None
        assert self.runner.returncode == 0, err


def environment(path):
    return dict(entry.split(b"=", 1) for entry in path.read_bytes().split(b"\0") if entry)


def test_a_hung_module_shows_as_python_script_target(tmp_path):
    with HungModule(tmp_path, "hang") as run:
        assert run.ps("args") == "python %s configure" % run.script
        # its own arguments, as a fresh process's (the rest of the area is NUL padding)
        assert run.cmdline().rstrip(b"\0").split(b"\0") == [
            b"python", run.script.encode(), b"configure"]
        assert run.comm() == run.ps("comm") == "hang"
        assert b"ovm-template-config" in run.runner_cmdline()  # the runner is itself
        assert environment(run.env)[b"OVM_TEMPLATE_CONFIG_ROOT"] == run.paths.root.encode()
    assert run.report["modules"][0]["status"] == "ok"


def test_the_interpreter_is_shown_as_the_shebang_names_it(tmp_path):
    with HungModule(tmp_path, "absolute", shebang="#!" + sys.executable) as run:
        assert run.cmdline().rstrip(b"\0").split(b"\0") == [
            sys.executable.encode(), run.script.encode(), b"configure"]
        assert run.comm() == "absolute"


def test_a_title_longer_than_the_runners_command_line(tmp_path):
    """The script's path alone is longer than the runner's whole command line: the title
    goes on into the environment area, and the module's environment is intact."""
    name = "hang-" + "x" * (len("\0".join(_runner_argv(tmp_path))) + 20)
    with HungModule(tmp_path, name) as run:
        title = "python %s configure" % run.script
        assert len(title) > len(run.runner_cmdline())
        assert run.ps("args") == title
        assert run.cmdline().rstrip(b"\0") == title.encode()  # one string, as setproctitle's
        assert run.comm() == name[:15]
    assert run.report["modules"][0]["status"] == "ok"
    # the same environment as a module whose title fits
    with HungModule(tmp_path / "short", "short") as short:
        pass
    env, expected = environment(run.env), environment(short.env)
    assert env[b"OVM_TEMPLATE_CONFIG_ROOT"] == run.paths.root.encode()
    different = {b"OVM_TEMPLATE_CONFIG_ROOT", b"OVM_TEMPLATE_CONFIG_ACTIONS"}
    assert set(env) == set(expected)
    assert {k: v for k, v in env.items() if k not in different} == \
        {k: v for k, v in expected.items() if k not in different}


def _runner_argv(tmp_path):
    return [sys.executable, OVM_TEMPLATE_CONFIG, "--root", str(tmp_path / "root"), "--stdin",
            "--json", "configure"]


@pytest.mark.parametrize("shebang, argv, words", [
    (["/usr/bin/env", "python"], ["/s", "configure"], ["python", "/s", "configure"]),
    (["/usr/bin/env", "-S", "python3", "-u"], ["/s", "t"], ["python3", "-u", "/s", "t"]),
    (["/usr/bin/python3"], ["/s", "t"], ["/usr/bin/python3", "/s", "t"]),
    (["/usr/bin/python", "-tt", "-E"], ["/s", "t"], ["/usr/bin/python", "-tt -E", "/s", "t"]),
    (None, ["/s", "t"], ["/s", "t"]),
])
def test_the_words_are_those_a_fresh_exec_would_have(shebang, argv, words):
    from templateconfig.run.proctitle import title_words

    assert title_words(shebang, argv) == words
