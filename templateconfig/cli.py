"""The module contract: how ``ovm-template-config`` talks to one module script.

A module script is any executable under ``/etc/template.d/scripts/``. Python modules end
with ``templateconfig.cli.main(do_enumerate, {"configure": do_configure, ...})``; a module
in any other language obeys the same argv/stdin/stdout contract, written down here:

``SCRIPT --enumerate TARGET`` (also ``-e TARGET``, ``--enumerate=TARGET``)
    Prints ``do_enumerate(TARGET)`` on stdout: a JSON list of parameter descriptors
    (``key``, ``description``, ``hidden``, ``required``, ``password``, ``depends``,
    ``requires``, ``choices``, ``default``). Exit 0.

``SCRIPT TARGET``
    Reads one JSON object (key -> string value) from stdin (empty stdin counts as ``{}``),
    calls ``do_<target>(json_string)`` and prints the JSON object it returns (the params,
    possibly changed or extended) on stdout. Exit 0. Keys that were added or changed are
    sent back to the host by the runner.

    A target that the script does not register (Oracle modules sometimes register fewer
    targets than their header lists) prints the input back unchanged, notes it on stderr,
    and exits 0. A name that is neither registered nor one of the eight targets is a usage
    error.

Exit codes
    0 success; 1 the module failed (an exception: its traceback is on stderr, then one
    line ``PROG: error: REASON`` saying what failed, which the runner reports; a refused
    path or value of the framework's says all in that line, without a traceback);
    2 bad usage or invalid JSON on stdin (``PROG: error: MESSAGE`` and the usage on
    stderr).

Warnings
    A module that did its work but could not do all of it (a setting ignored, a command
    that cannot work on this guest) prints ``warning: TEXT`` lines on stderr; the runner
    records them (docs/module-contract.md).

``SCRIPT --prepare TARGET``
    Only for a module whose header declares ``prepare: TARGET``: work for TARGET that does
    not need the params (generating SSH host keys, say), done before the params arrive.
    It changes nothing in the guest: what it makes goes into the private directory named
    by ``OVM_TEMPLATE_CONFIG_STAGING``, where ``SCRIPT TARGET`` finds it. stdin is empty,
    stdout is ignored. Exit 0 (a module with nothing to prepare for TARGET does nothing);
    any other status only means that ``SCRIPT TARGET`` does all its work itself.

``--help`` and ``--version`` print to stdout and exit 0.

Leniency: functions may return a ``str``, ``bytes`` (UTF-8), or a ``dict``/``list`` (then
serialised here); a target function returning ``None`` means "nothing changed" and the
input is printed back. Output always ends with a newline.

Every module process imports this file, so it imports nothing but ``json`` and ``sys`` at
start-up (no ``argparse``, no ``logging``): Python start-up is a real first-boot cost.
"""
from __future__ import annotations

import json
import sys

# typing costs start-up time in every module process; mypy takes TYPE_CHECKING as true
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

#: Exit statuses of a module process (see the module docstring).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_USAGE = """\
usage: %(prog)s --enumerate TARGET     print the parameter descriptors of TARGET (JSON list)
       %(prog)s TARGET                 read params (JSON object) on stdin, run TARGET,
                                       print the resulting params (JSON object)
       %(prog)s --prepare TARGET       work for TARGET that needs no params, into
                                       $OVM_TEMPLATE_CONFIG_STAGING
       %(prog)s --help | --version

registered targets: %(targets)s

exit status: 0 success, 1 the module failed (traceback and "error: REASON" on stderr),
             2 bad usage or invalid JSON on stdin
"""


class UsageError(Exception):
    """Bad command line or stdin: reported on stderr with exit status 2."""


def _to_text(value: object, what: str) -> str:
    """A function's return value as JSON text: str as is, bytes decoded, others dumped."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8")
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError("%s returned %s, which is not JSON text nor serialisable: %s"
                        % (what, type(value).__name__, exc))


def _read_params(stdin) -> str:
    """The JSON object on stdin, checked, as the text the target function receives."""
    buffer = getattr(stdin, "buffer", None)
    raw = buffer.read() if buffer is not None else stdin.read()
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError("stdin is not UTF-8: %s" % exc)
    text = raw.strip()
    if not text:
        return "{}"
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise UsageError("stdin is not valid JSON (expected one object of key -> string "
                         "value): %s" % exc)
    if not isinstance(params, dict):
        raise UsageError("stdin must hold a JSON object of key -> string value, got a JSON %s"
                         % type(params).__name__)
    return text


def _parse_argv(argv: list) -> tuple:
    """(action, target) where action is enumerate, prepare, run, help or version."""
    if not argv:
        raise UsageError("missing TARGET")
    first = argv[0]
    if first in ("-h", "--help"):
        return "help", None
    if first in ("-V", "--version"):
        return "version", None
    if first in ("-e", "--enumerate"):
        if len(argv) != 2:
            raise UsageError("%s takes exactly one TARGET" % first)
        return "enumerate", argv[1]
    if first.startswith("--enumerate="):
        if len(argv) != 1:
            raise UsageError("unexpected arguments after %s: %s" % (first, " ".join(argv[1:])))
        return "enumerate", first[len("--enumerate="):]
    if first == "--prepare":
        if len(argv) != 2:
            raise UsageError("--prepare takes exactly one TARGET")
        return "prepare", argv[1]
    if first.startswith("-"):
        raise UsageError("unknown option %s" % first)
    if len(argv) != 1:
        raise UsageError("expected one TARGET, got: %s" % " ".join(argv))
    return "run", first


def run(do_enumerate, targets: dict, argv: Optional[list] = None, stdin=None, stdout=None,
        stderr=None, prepare: Optional[dict] = None) -> int:
    """Carry out one module invocation and return its exit status (see the docstring).

    ``argv`` excludes the program name (defaults to ``sys.argv[1:]``); the streams default
    to the process's own. ``prepare``: target -> function called (without arguments) for
    ``--prepare TARGET``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    prog = _prog_name()
    targets = dict(targets or {})
    try:
        action, target = _parse_argv(argv)
        if action == "help":
            stdout.write(_USAGE % {"prog": prog, "targets": ", ".join(targets) or "(none)"})
            return EXIT_OK
        if action == "version":
            from templateconfig import __version__
            stdout.write("%s (templateconfig module contract %s)\n" % (prog, __version__))
            return EXIT_OK
        if not target:
            raise UsageError("empty TARGET")
        if action == "enumerate":
            output = _to_text(do_enumerate(target), "do_enumerate(%r)" % target)
        elif action == "prepare":
            function = (prepare or {}).get(target)
            if function is not None:
                function()
            return EXIT_OK
        else:
            output = _run_target(targets, target, stdin, stderr, prog)
    except UsageError as exc:
        stderr.write("%s: error: %s\n" % (prog, exc))
        stderr.write(_USAGE % {"prog": prog, "targets": ", ".join(targets) or "(none)"})
        return EXIT_USAGE
    except Exception as exc:  # the module failed: its traceback, then its reason
        from templateconfig.errors import TemplateConfigError

        if not isinstance(exc, TemplateConfigError) or exc.shows_traceback:
            import traceback
            traceback.print_exc(file=stderr)
        stderr.write("%s: error: %s\n" % (prog, _reason(exc)))
        return EXIT_FAILED
    return _write_output(output, stdout, stderr, prog)


def _reason(exc: Exception) -> str:
    """What failed, on one line: the message of one of the framework's errors (which
    says what failed), else the exception's type and message."""
    from templateconfig.errors import TemplateConfigError

    text = " ".join(str(exc).split())
    if isinstance(exc, TemplateConfigError) and text:
        return text
    return "%s: %s" % (type(exc).__name__, text) if text else type(exc).__name__


def _run_target(targets: dict, target: str, stdin, stderr, prog: str) -> str:
    """The output of ``target``: its function's result, or the params passed through
    unchanged for a known target the module does not register."""
    function = targets.get(target)
    if function is None:
        from templateconfig.header import TARGETS
        if target not in TARGETS:
            raise UsageError("unknown target %r (registered: %s; known targets: %s)"
                             % (target, ", ".join(targets) or "none", ", ".join(TARGETS)))
        params = _read_params(stdin)
        stderr.write("%s: target %r is not registered by this module; params passed "
                     "through unchanged\n" % (prog, target))
        return params
    params = _read_params(stdin)
    result = function(params)
    if result is None:
        return params
    return _to_text(result, "the %r target function" % target)


def _write_output(output: str, stdout, stderr, prog: str) -> int:
    if not output.endswith("\n"):
        output += "\n"
    buffer = getattr(stdout, "buffer", None)
    try:
        if buffer is not None:  # UTF-8 whatever the locale (first boot may run with LANG=C)
            stdout.flush()
            buffer.write(output.encode("utf-8"))
            buffer.flush()
        else:
            stdout.write(output)
            stdout.flush()
    except BrokenPipeError:
        stderr.write("%s: the reader of stdout went away\n" % prog)
        return EXIT_FAILED
    return EXIT_OK


def main(do_enumerate, targets: dict, prepare: Optional[dict] = None) -> None:
    """Entry point of a module script: runs the invocation in ``sys.argv`` and exits.
    ``prepare``: target -> its ``--prepare`` function (see the module docstring)."""
    sys.exit(run(do_enumerate, targets, prepare=prepare))


def _prog_name() -> str:
    name = sys.argv[0] if sys.argv and sys.argv[0] else "module"
    return name.rsplit("/", 1)[-1]
