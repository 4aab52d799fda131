"""The ``### BEGIN PLUGIN INFO`` header of a module script: parsed once, validated strictly.

The header is the only thing the framework reads from a module without running it: which
targets it takes part in and at what priority. A typo there means a module silently never
runs, so every defect is reported as a :class:`HeaderError` naming the file and the line::

    ### BEGIN PLUGIN INFO
    # name: network
    # configure: 50
    # cleanup: 50
    # description: Configure template network.
    #   (continuation lines are indented)
    ### END PLUGIN INFO

Rules (our documented contract):

- ``### BEGIN PLUGIN INFO`` must start a line within the first :data:`HEADER_SEARCH_LINES`
  lines; ``### END PLUGIN INFO`` must follow. Between them every line is a comment: either
  ``# key: value``, an indented continuation ``#   more text`` of the previous field, or a
  blank ``#``. Keys are case-insensitive and may appear once.
- ``name`` is required: a plain file name (no ``/``, no whitespace).
- A field named after one of the eight :data:`TARGETS` enables that target; its value is a
  priority, an integer 0-99 (it becomes the two-digit ``NN`` of ``<target>.d/NN<name>``).
- Any other field is kept in :attr:`PluginInfo.fields`, except one whose value is a bare
  integer: that has the shape of a target line, so it is reported as an unknown target
  (``confgure: 50`` must not go unnoticed).
- ``name`` differing from the script's file name is a *warning*, not an error: Oracle's
  ``ovm-chkconfig`` keys modules by file name (``scripts/NAME`` and the ``NNNAME`` links),
  and third-party modules that ran under Oracle must keep running. The registry uses the
  file name; the warning is logged and kept in :attr:`PluginInfo.warnings`. Pass
  ``strict_name=True`` to make it an error.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

from templateconfig.errors import TemplateConfigError

log = logging.getLogger(__name__)

#: The targets of the framework, in Oracle's order (also the ``ovm-chkconfig --list`` columns).
TARGETS = ("configure", "unconfigure", "reconfigure", "cleanup",
           "suspend", "resume", "migrate", "shutdown")

BEGIN_MARKER = "### BEGIN PLUGIN INFO"
END_MARKER = "### END PLUGIN INFO"
#: ``BEGIN_MARKER`` must appear within this many lines of the top of the script.
HEADER_SEARCH_LINES = 100
MIN_PRIORITY = 0
MAX_PRIORITY = 99

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_.-")


class HeaderError(TemplateConfigError):
    """A module header that cannot be used; ``str()`` reads ``path:line: message``."""

    def __init__(self, path: str, lineno: Optional[int], message: str) -> None:
        self.path = path
        self.lineno = lineno
        self.message = message
        location = "%s:%d" % (path, lineno) if lineno else str(path)
        super().__init__("%s: %s" % (location, message))


class PluginInfo:
    """What a module header declares.

    ``targets`` maps target -> priority in header order; ``fields`` holds every raw field
    (lower-case key -> value, continuations joined with a space), targets included.
    """

    __slots__ = ("name", "targets", "description", "path", "fields", "warnings")

    def __init__(self, name: str, targets: Dict[str, int], description: str, path: str,
                 fields: Dict[str, str], warnings: Optional[List[str]] = None) -> None:
        self.name = name
        self.targets = targets
        self.description = description
        self.path = path
        self.fields = fields
        self.warnings = list(warnings or [])

    def priority(self, target: str) -> Optional[int]:
        """The priority of ``target``, or None if the module does not take part in it."""
        return self.targets.get(target)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PluginInfo):
            return NotImplemented
        return all(getattr(self, slot) == getattr(other, slot) for slot in self.__slots__)

    def __repr__(self) -> str:
        return "PluginInfo(name=%r, targets=%r, path=%r)" % (self.name, self.targets, self.path)


def parse_header(path: str, strict_name: bool = False) -> PluginInfo:
    """Read and validate the plugin header of the script at ``path``.

    Raises :class:`HeaderError` (file and line in its message) on any defect listed in the
    module docstring, and when the file cannot be read.
    """
    try:
        with open(path, "rb") as stream:
            lines: List[str] = []
            begun = False
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                lines.append(line)
                # Stop after the header, or after the search window when it has not begun:
                # the rest of the script is never needed.
                begun = begun or line.rstrip() == BEGIN_MARKER
                if (begun and line.rstrip() == END_MARKER) or (
                        not begun and len(lines) >= HEADER_SEARCH_LINES):
                    break
    except OSError as exc:
        raise HeaderError(path, None, "cannot read module script: %s" % (exc.strerror or exc))
    return parse_header_lines(lines, path, strict_name=strict_name)


def parse_header_lines(lines: List[str], path: str, strict_name: bool = False) -> PluginInfo:
    """:func:`parse_header` on lines already read (``path`` names them in errors)."""
    begin = _find_begin(lines, path)
    fields, field_lines = _read_fields(lines, begin, path)
    begin_lineno = begin + 1
    name = _module_name(fields, field_lines, path, begin_lineno)
    targets: Dict[str, int] = {}
    for key, value in fields.items():
        if key in TARGETS:
            targets[key] = _priority(path, field_lines[key], key, value)
        elif _is_integer(value):
            raise HeaderError(path, field_lines[key], "unknown target %r (priority %s); the "
                              "targets are: %s" % (key, value, ", ".join(TARGETS)))
    warnings = []
    file_name = os.path.basename(path)
    if name not in (file_name, os.path.splitext(file_name)[0]):
        problem = ("header name %r differs from the file name %r; the file name is what "
                   "ovm-chkconfig and the runner use" % (name, file_name))
        if strict_name:
            raise HeaderError(path, field_lines["name"], problem)
        warnings.append("%s:%d: %s" % (path, field_lines["name"], problem))
    if not targets:
        warnings.append("%s:%d: the header enables no target (%s)"
                        % (path, begin_lineno, ", ".join(TARGETS)))
    for message in warnings:
        log.warning("%s", message)
    return PluginInfo(name=name, targets=targets, description=fields.get("description", ""),
                      path=path, fields=fields, warnings=warnings)


def _find_begin(lines: List[str], path: str) -> int:
    """The index of the ``### BEGIN PLUGIN INFO`` line."""
    for index, line in enumerate(lines[:HEADER_SEARCH_LINES]):
        if line.rstrip() == BEGIN_MARKER:
            return index
    raise HeaderError(path, None, "no '%s' line in the first %d lines: not a template "
                      "configuration module" % (BEGIN_MARKER, HEADER_SEARCH_LINES))


def _read_fields(lines: List[str], begin: int,
                 path: str) -> Tuple[Dict[str, str], Dict[str, int]]:
    """The header's fields (lower-case key -> value, continuations joined) and the line
    number of each, from the line after ``begin`` to the end marker."""
    fields: Dict[str, str] = {}
    field_lines: Dict[str, int] = {}
    last_key = None
    for index in range(begin + 1, len(lines)):
        lineno = index + 1
        line = lines[index].rstrip()
        if line == END_MARKER:
            return fields, field_lines
        if line.startswith("###"):
            raise HeaderError(path, lineno, "unexpected %r inside the plugin header (expected "
                              "'%s')" % (line, END_MARKER))
        if not line.startswith("#"):
            raise HeaderError(path, lineno, "expected '# key: value' inside the plugin header, "
                              "got %r (is '%s' missing?)" % (line, END_MARKER))
        body = line[1:]
        if not body.strip():
            continue  # a blank comment line
        if body.startswith("  ") or body.startswith("\t"):
            if last_key is None:
                raise HeaderError(path, lineno, "indented continuation line with no field "
                                  "before it: %r" % line)
            fields[last_key] = (fields[last_key] + " " + body.strip()).strip()
            continue
        key, sep, value = body.strip().partition(":")
        key = key.strip().lower()
        if not sep or not key or not set(key) <= _KEY_CHARS:
            raise HeaderError(path, lineno, "malformed header line %r: expected '# key: value' "
                              "or an indented continuation '#   text'" % line)
        if key in fields:
            raise HeaderError(path, lineno, "field %r given twice (first on line %d)"
                              % (key, field_lines[key]))
        fields[key] = value.strip()
        field_lines[key] = lineno
        last_key = key
    raise HeaderError(path, begin + 1, "'%s' has no matching '%s'" % (BEGIN_MARKER, END_MARKER))


def _module_name(fields: Dict[str, str], field_lines: Dict[str, int], path: str,
                 begin_lineno: int) -> str:
    if "name" not in fields:
        raise HeaderError(path, begin_lineno, "the plugin header has no 'name' field")
    name = fields["name"]
    if not name or "/" in name or any(ch.isspace() for ch in name) or name in (".", ".."):
        raise HeaderError(path, field_lines["name"], "invalid module name %r: it must be a "
                          "plain file name (no '/', no spaces)" % name)
    return name


def _is_integer(value: str) -> bool:
    text = value.strip()
    if text[:1] in ("+", "-"):
        text = text[1:]
    return bool(text) and all(ch in "0123456789" for ch in text)


def _priority(path: str, lineno: int, target: str, value: str) -> int:
    if not _is_integer(value):
        raise HeaderError(path, lineno, "priority of target %r must be an integer %d-%d, got %r"
                          % (target, MIN_PRIORITY, MAX_PRIORITY, value))
    priority = int(value)
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise HeaderError(path, lineno, "priority of target %r must be %d-%d, got %d"
                          % (target, MIN_PRIORITY, MAX_PRIORITY, priority))
    return priority
