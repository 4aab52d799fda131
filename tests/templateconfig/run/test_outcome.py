"""What the runner reads in a module's stderr: one line saying what failed, and the
warnings (templateconfig.run.outcome; the rules are docs/module-contract.md's). The
end-to-end cases, with real module processes, are in test_runner.py and
test_runner_environment.py."""
from __future__ import annotations

import pytest

from templateconfig.run.launcher import ProcessResult
from templateconfig.run.outcome import failure_reason, module_output, read_stderr

TRACEBACK = """\
Traceback (most recent call last):
  File "/etc/template.d/scripts/datetime", line 10, in <module>
    SPEC.main()
  File "/usr/lib/python3/templateconfig/common.py", line 240, in _run
    raise CommandError(argv, proc.returncode, proc.stderr)
templateconfig.common.CommandError: command hwclock --systohc --utc failed with exit code 1: \
hwclock: Cannot access the Hardware Clock via any known method.
datetime: error: command hwclock --systohc --utc failed with exit code 1: hwclock: Cannot \
access the Hardware Clock via any known method.
"""


@pytest.mark.parametrize("stderr, reason, explicit", [
    (TRACEBACK, "command hwclock --systohc --utc failed with exit code 1: hwclock: Cannot "
                "access the Hardware Clock via any known method.", True),
    # a traceback without the error line (a module not written with templateconfig.cli)
    ("Traceback (most recent call last):\n  File \"x\", line 1, in <module>\n    1/0\n"
     "ZeroDivisionError: division by zero\n", "ZeroDivisionError: division by zero", True),
    # a SyntaxError has no traceback header; its place is added
    ('  File "/etc/template.d/scripts/broken", line 6\n    def broken(:\n               ^\n'
     "SyntaxError: invalid syntax\n",
     "SyntaxError: invalid syntax (/etc/template.d/scripts/broken, line 6)", True),
    # a usage error: its error line, not the usage after it
    ("mod: error: unknown option --frob\nusage: mod --enumerate TARGET\n",
     "unknown option --frob", True),
    ("doing things\ndisk on fire\n", "disk on fire", False),
    ("disk on fire\nwarning: and a note\n", "disk on fire", False),
    ("", None, False),
])
def test_the_reason(stderr, reason, explicit):
    said = read_stderr(stderr, "mod")
    assert (said.reason, said.explicit) == (reason, explicit)


def test_warnings_in_order_without_repeats_or_the_module_s_name():
    said = read_stderr(
        "warning: firewall: no firewall is installed: network.firewall=True ignored\n"
        "firewall: warning: something else\n"
        "progress line\n"
        "datetime: ntp is False: ntp-servers ignored\n"
        "warning: firewall: no firewall is installed: network.firewall=True ignored\n"
        "Exception ignored in: <function foo>\n"
        "Traceback (most recent call last):\n  File \"x\", line 2, in <module>\n"
        "    raise ValueError('value ignored')\nValueError: value ignored\n", "firewall")
    assert said.warnings == ["no firewall is installed: network.firewall=True ignored",
                             "something else", "datetime: ntp is False: ntp-servers ignored"]


def result(code, stdout=b"", stderr=b"", timed_out=False):
    return ProcessResult(code, stdout, stderr, 0.1, timed_out)


@pytest.mark.parametrize("process, reason", [
    (result(3, stderr=b"giving up on y\n"), "exited with status 3: giving up on y"),
    (result(3), "exited with status 3 (no error output)"),
    (result(1, stderr=TRACEBACK.encode()), "command hwclock --systohc --utc failed with "
     "exit code 1: hwclock: Cannot access the Hardware Clock via any known method."),
    (result(-11), "killed by SIGSEGV"),
    (result(-9, timed_out=True), "timed out after 300 s and was killed"),
    (result(0), None),
])
def test_failure_reason_is_one_line(process, reason):
    said = read_stderr(process.stderr.decode(), "mod")
    assert failure_reason(process, 300.0, said) == reason


def test_a_module_that_printed_something_else_than_params():
    answer = module_output(result(0, stdout=b"not\njson\n", stderr=b"warning: w\n"), 300.0, "m")
    assert answer.params is None and "\n" not in answer.error
    assert answer.error.startswith("printed invalid JSON on stdout")
    assert answer.warnings == ["w"] and answer.stderr == "warning: w"


def test_the_stderr_kept_is_its_end():
    answer = module_output(result(1, stderr=b"x" * 10000 + b"\nthe end\n"), 300.0, "m")
    assert answer.stderr.endswith("the end") and len(answer.stderr) <= 4010
    assert answer.error == "exited with status 1: the end"
