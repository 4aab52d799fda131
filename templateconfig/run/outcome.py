"""What a module process said: the params it printed, or one line saying why it failed;
the warnings on its stderr; its stderr, kept for the run report.

The rules (docs/module-contract.md, "Reasons and warnings"), for any module in any
language:

reason
    the last stderr line ``NAME: error: REASON`` (or ``error: REASON``): what
    :func:`templateconfig.cli.main` prints after a module's traceback, and what a usage
    error prints; else the exception line of the last Python traceback (a
    ``SyntaxError`` with its file and line); else ``exited with status N: LINE``, LINE
    the last stderr line that is not a warning. A timeout or a signal says so instead.
    Always one line, never a traceback.
warnings
    every stderr line ``warning: TEXT`` (or ``NAME: warning: TEXT``), and every line
    ending in ``ignored`` (the notes modules print when they leave a setting alone), in
    order, without repeats; the module's own name in front of TEXT is dropped.
"""
from __future__ import annotations

import json
import re
import signal
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from templateconfig.run.launcher import ProcessResult

#: How much of a module's stderr the run report keeps (its end).
STDERR_LIMIT = 4000
#: At most this many warnings per module, each at most this long.
MAX_WARNINGS = 20
MAX_WARNING = 300
#: A reason is one line of at most this many characters.
MAX_REASON = 500

_ERROR = re.compile(r"^(?:[\w.@+-]+: )?error: (?P<text>.+)$")
_WARNING = re.compile(r"^(?:(?P<who>[\w.@+-]+): )?warning: (?P<text>.+)$", re.IGNORECASE)
_IGNORED = re.compile(r"\bignored[.)]*$")
_TRACEBACK = "Traceback (most recent call last):"
_FILE_LINE = re.compile(r'^\s+File "(?P<file>[^"]+)", line (?P<line>\d+)')


class Stderr(NamedTuple):
    """A module's stderr, read: its warnings, the reason it gives for failing, if any
    (``explicit``: from an error line or a traceback, not just its last line)."""

    warnings: List[str]
    reason: Optional[str]
    explicit: bool


def decode(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def tail(text: str, limit: int = STDERR_LIMIT) -> str:
    """The end of ``text`` (at most ``limit`` characters), stripped."""
    text = text.strip()
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


def one_line(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _warning_text(line: str, name: str) -> Optional[str]:
    match = _WARNING.match(line)
    if match:
        text = match.group("text").strip()
    elif _IGNORED.search(line) and not line.startswith("Exception ignored"):
        text = line
    else:
        return None
    if text.startswith(name + ": "):
        text = text[len(name) + 2:]
    return one_line(text, MAX_WARNING) or None


def read_stderr(text: str, name: str) -> Stderr:
    """The warnings and the reason in a module's stderr (see the module docstring)."""
    warnings: List[str] = []
    error: Optional[str] = None
    exception: Optional[str] = None
    last: Optional[str] = None
    in_traceback = False
    location: Optional[Tuple[str, str]] = None
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line.strip():
            continue
        if line == _TRACEBACK:
            in_traceback, location = True, None
            continue
        if not in_traceback and _FILE_LINE.match(line):
            in_traceback, location = True, None  # a SyntaxError has no traceback header
        if in_traceback:
            found = _FILE_LINE.match(line)
            if found:
                location = (found.group("file"), found.group("line"))
            if line[:1].isspace():
                continue
            in_traceback = False
            exception = line.strip()
            if location and exception.split(":", 1)[0] in ("SyntaxError", "IndentationError",
                                                            "TabError"):
                exception += " (%s, line %s)" % location
            continue
        match = _ERROR.match(line.strip())
        if match:
            error = match.group("text")
            continue
        warning = _warning_text(line.strip(), name)
        if warning is not None:
            if warning not in warnings and len(warnings) < MAX_WARNINGS:
                warnings.append(warning)
            continue
        last = line.strip()
    reason = error or exception
    return Stderr(warnings, one_line(reason or last or "") or None, reason is not None)


def failure_reason(result: ProcessResult, timeout: float, said: Stderr) -> Optional[str]:
    """Why a module process failed, on one line, or None if it exited 0."""
    if result.timed_out:
        return "timed out after %g s and was killed" % timeout
    if result.returncode < 0:
        try:
            name = signal.Signals(-result.returncode).name
        except ValueError:
            name = "signal %d" % -result.returncode
        return "killed by %s" % name
    if result.returncode == 0:
        return None
    if said.explicit and said.reason:
        return said.reason
    if said.reason:
        return one_line("exited with status %d: %s" % (result.returncode, said.reason))
    return "exited with status %d (no error output)" % result.returncode


class Output(NamedTuple):
    """A module's answer: the params it printed (None if it failed), why it failed,
    its warnings and its stderr (the kept end of it)."""

    params: Optional[Dict[str, Any]]
    error: Optional[str]
    warnings: List[str]
    stderr: str


def module_output(result: ProcessResult, timeout: float, name: str) -> Output:
    """What module ``name``'s process answered (see :class:`Output`)."""
    stderr = decode(result.stderr)
    said = read_stderr(stderr, name)
    kept = tail(stderr)
    error = failure_reason(result, timeout, said)
    if error is not None:
        return Output(None, error, said.warnings, kept)
    try:
        return Output(parse_output(result), None, said.warnings, kept)
    except ValueError as exc:
        return Output(None, one_line(str(exc)), said.warnings, kept)


def parse_output(result: ProcessResult) -> Dict[str, Any]:
    """The JSON object a module printed; ValueError saying what is wrong otherwise."""
    text = decode(result.stdout).strip()
    if not text:
        raise ValueError("printed nothing on stdout (expected the params as a JSON object)")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError("printed invalid JSON on stdout (%s): %s" % (exc, text[:200]))
    if not isinstance(value, dict):
        raise ValueError("printed a JSON %s on stdout, expected an object of key -> value"
                         % type(value).__name__)
    return value


def parse_descriptors(result: ProcessResult, timeout: float,
                      name: str) -> Tuple[List[dict], Optional[str]]:
    """(descriptors, None) from a module's ``--enumerate`` process, or ([], why not)."""
    error = failure_reason(result, timeout, read_stderr(decode(result.stderr), name))
    if error is not None:
        return [], error
    try:
        value = json.loads(decode(result.stdout) or "[]")
    except ValueError as exc:
        return [], "printed an invalid descriptor list: %s" % exc
    if not isinstance(value, list):
        return [], ("printed an invalid descriptor list: expected a JSON list, got a JSON %s"
                    % type(value).__name__)
    return value, None
