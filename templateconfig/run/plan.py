"""Recorded actions -> what ``ovm-template-config --dry-run`` shows.

Each module process appends its file changes and commands, one JSON object per line, to
the journal named by ``OVM_TEMPLATE_CONFIG_ACTIONS`` (``templateconfig.common`` does it;
record format in docs/formats.md). This module reads such journals and turns them into a
plan: unified diffs for files, one line for directories, links and permissions, and the
list of commands. Secret files are named but their content is never shown. Records
marked ``bookkeeping`` (a module's own state: what it applied, the originals it saved
for its cleanup) are no change to the guest: the plan names those files in one line per
module, and ``--json`` keeps their records apart (``bookkeeping``).
"""
from __future__ import annotations

import base64
import json
import shlex
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

_FILE_OPS = ("write", "remove")


def read_actions(path: str) -> List[Dict[str, Any]]:
    """The records of one journal; a missing journal is an empty one, and a line that is
    not a JSON object (a module killed mid-write) is skipped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return []
    actions = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("op"), str):
            actions.append(record)
    return actions


def is_bookkeeping(record: Dict[str, Any]) -> bool:
    """True for a record of a module's own state rather than a change to the guest."""
    return record.get("bookkeeping") is True


def guest_changes(actions: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The records of ``actions`` that change the guest (bookkeeping left out)."""
    return [record for record in actions if not is_bookkeeping(record)]


def _content(record: Dict[str, Any], field: str) -> Optional[bytes]:
    value = record.get(field)
    if value is None:
        return None
    if record.get("encoding") == "base64":
        try:
            return base64.b64decode(value)
        except ValueError:
            return b""
    return str(value).encode("utf-8")


def _mode(record: Dict[str, Any]) -> str:
    mode = record.get("mode")
    return " (mode %04o)" % mode if isinstance(mode, int) else ""


def describe(record: Dict[str, Any]) -> str:
    """One line saying what a record did (or would do); no file content."""
    op = record.get("op")
    verb = "" if record.get("applied", True) else "would "
    if op == "command":
        argv = record.get("argv") or []
        return "%srun: %s" % (verb, shlex.join(str(a) for a in argv))
    path = record.get("path", "?")
    if op == "write":
        what = "secret file" if record.get("secret") else "file"
        return "%s%s %s %s%s" % (verb, "create" if record.get("old") is None
                                 and not record.get("secret") else "write", what, path,
                                 _mode(record))
    if op == "remove":
        return "%sremove %s" % (verb, path)
    if op == "mkdir":
        return "%screate directory %s%s" % (verb, path, _mode(record))
    if op == "symlink":
        return "%slink %s -> %s" % (verb, path, record.get("target", "?"))
    if op == "chmod":
        return "%schmod %s%s" % (verb, path, _mode(record))
    if op == "chown":
        return "%schown %s to %s:%s" % (verb, path, record.get("uid", "-"), record.get("gid", "-"))
    details = {k: v for k, v in record.items() if k not in ("op", "applied", "old", "new")}
    return "%s%s %s" % (verb, op, json.dumps(details, sort_keys=True))


def file_diff(record: Dict[str, Any]) -> str:
    """The unified diff of a ``write``/``remove`` record (or why it cannot be shown)."""
    path = record.get("path", "?")
    if record.get("secret"):
        return "%s: secret content, not shown\n" % path
    old, new = _content(record, "old"), _content(record, "new")
    if record.get("encoding") == "base64":
        return "%s: binary content (%s -> %s bytes)\n" % (
            path, "absent" if old is None else len(old), "absent" if new is None else len(new))
    old_lines = (old or b"").decode("utf-8").splitlines(True)
    new_lines = (new or b"").decode("utf-8").splitlines(True)
    import difflib  # only for plans (--dry-run): not on every run's start-up

    text = "".join(_terminated(difflib.unified_diff(
        old_lines, new_lines,
        fromfile="/dev/null" if old is None else "a" + path,
        tofile="/dev/null" if new is None else "b" + path)))
    return text or "%s: unchanged content%s\n" % (path, _mode(record))


def _terminated(lines: Iterable[str]) -> Iterator[str]:
    for line in lines:
        if line.endswith("\n"):
            yield line
        else:
            yield line + "\n\\ No newline at end of file\n"


def render_plan(modules: Sequence[Tuple[str, List[Dict[str, Any]]]],
                skipped: Sequence[Tuple[str, str]] = ()) -> str:
    """The text of a dry run: per module, its file diffs and other changes, then every
    command in order; modules that could not be planned are listed with the reason."""
    out: List[str] = []
    commands: List[str] = []
    for name, actions in modules:
        out.append("=== %s ===\n" % name)
        changes = guest_changes(actions)
        if not any(a.get("op") != "command" for a in changes):
            out.append("no file changes\n")
        for record in changes:
            op = record.get("op")
            if op == "command":
                commands.append("%s: %s" % (name, shlex.join(str(a) for a in
                                                             record.get("argv") or [])))
            elif op in _FILE_OPS:
                out.append(describe(record) + "\n")
                out.append(file_diff(record))
            else:
                out.append(describe(record) + "\n")
        own = sorted({str(a.get("path", "?")) for a in actions if is_bookkeeping(a)})
        if own:
            out.append("its own state (not shown): %s\n" % ", ".join(own))
    out.append("=== commands that would run ===\n")
    out.extend("%s\n" % c for c in commands)
    if not commands:
        out.append("none\n")
    if skipped:
        out.append("=== modules not planned ===\n")
        out.extend("%s: %s\n" % item for item in skipped)
    return "".join(out)


def plan_json(modules: Sequence[Tuple[str, List[Dict[str, Any]]]],
              skipped: Sequence[Tuple[str, str]] = ()) -> Dict[str, Any]:
    """The dry run for ``--json``: per module the records of its changes to the guest
    (``actions``) and those of its own state (``bookkeeping``); the skipped modules."""
    return {"modules": [{"name": name, "actions": guest_changes(actions),
                         "bookkeeping": [a for a in actions if is_bookkeeping(a)]}
                        for name, actions in modules],
            "skipped": [{"name": name, "reason": reason} for name, reason in skipped]}
