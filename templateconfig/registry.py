"""The ``/etc/template.d`` registry: which module runs in which target, at what priority.

Layout (Oracle's, the same idea as chkconfig's ``/etc/rc3.d``)::

    /etc/template.d/scripts/<name>              the module script (header + code)
    /etc/template.d/<target>.d/<NN><name>  ->  ../scripts/<name>

``NN`` is the two-digit priority from the script's header. The symlinks are the truth: the
runner runs what is linked, in (priority, name) order, whatever the header says today.
:func:`add` makes the links exactly match the header (every header target on, every other
target off, stale priorities replaced), so running it twice leaves the same tree.

A dangling or malformed entry in a ``<target>.d`` directory never stops a run: it is logged
and, if the caller passes a ``problems`` list, appended there for its report.
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from ovmd.fsutil import atomic_symlink
from ovmd.paths import Paths
from templateconfig.errors import TemplateConfigError
from templateconfig.header import TARGETS, HeaderError, PluginInfo, parse_header

log = logging.getLogger(__name__)


class RegistryError(TemplateConfigError):
    """A registry operation that cannot be done; the message says what and where."""


class UnknownTargetError(RegistryError):
    """A target name that is not one of :data:`~templateconfig.header.TARGETS` (bad usage)."""


class ModuleEntry(NamedTuple):
    """One module as ``ovm-chkconfig --list`` shows it.

    ``name`` is the file name under ``scripts/`` (or, for a link whose script is gone, the
    name in the link); ``info`` is None when the script is missing or its header is bad, and
    ``error`` then says why; ``enabled`` maps target -> priority of the existing links.
    """

    name: str
    info: Optional[PluginInfo]
    enabled: Dict[str, int]
    error: Optional[str] = None


class _Link(NamedTuple):
    priority: int
    name: str
    link_path: str
    script_path: str


def script_path(paths: Paths, name: str) -> str:
    """Where the script of module ``name`` lives (``scripts/<name>``)."""
    _check_name(name)
    return os.path.join(paths.scripts_dir, name)


def link_name(priority: int, name: str) -> str:
    """``<NN><name>``, the name of the symlink in a ``<target>.d`` directory."""
    return "%02d%s" % (priority, name)


def read_module(paths: Paths, name: str) -> PluginInfo:
    """The parsed header of module ``name``; RegistryError if missing or invalid."""
    path = script_path(paths, name)
    if not os.path.isfile(path):
        raise RegistryError("no module %r: %s does not exist (install the script there first)"
                            % (name, path))
    try:
        return parse_header(path)
    except HeaderError as exc:
        raise RegistryError("module %r has an invalid header: %s" % (name, exc)) from exc


def add(paths: Paths, name: str) -> PluginInfo:
    """Enable module ``name`` for exactly the targets of its header, at their priorities.

    Idempotent; replaces links of ``name`` with another priority and removes its links in
    targets the header does not list. Returns the parsed header.
    """
    info = read_module(paths, name)
    for target in TARGETS:
        if target in info.targets:
            _enable(paths, target, name, info.targets[target])
        else:
            _disable(paths, target, name)
    log.info("added module %s: %s", name, _describe(info.targets))
    return info


def delete(paths: Paths, name: str) -> int:
    """Remove every link of module ``name`` (the script stays). Returns how many.

    Deleting a module that is not enabled anywhere is fine if its script exists; if there
    is neither a script nor a link, the name is probably a typo: RegistryError.
    """
    _check_name(name)
    removed = sum(_disable(paths, target, name) for target in TARGETS)
    if not removed and not os.path.isfile(script_path(paths, name)):
        raise RegistryError("no module %r: neither %s nor any link to it in %s/<target>.d"
                            % (name, script_path(paths, name), paths.template_d))
    log.info("deleted module %s (%d links)", name, removed)
    return removed


def set_targets(paths: Paths, name: str, targets: Iterable[str], on: bool) -> None:
    """Turn module ``name`` on or off for ``targets``.

    ``on`` uses the header's priority, so it fails for a target the header does not list
    (only header targets are run). ``off`` needs no header.
    """
    targets = list(targets)
    unknown = [target for target in targets if target not in TARGETS]
    if unknown or not targets:
        raise UnknownTargetError("unknown target %s; the targets are: %s"
                                 % (", ".join(repr(t) for t in unknown) or "(none given)",
                                    ", ".join(TARGETS)))
    if not on:
        _check_name(name)
        if not os.path.isfile(script_path(paths, name)) and not _module_links(paths, name):
            raise RegistryError("no module %r: %s does not exist"
                                % (name, script_path(paths, name)))
        for target in targets:
            _disable(paths, target, name)
        return
    info = read_module(paths, name)
    missing = [target for target in targets if target not in info.targets]
    if missing:
        raise RegistryError("module %r cannot be enabled for %s: its header (%s) gives no "
                            "priority for %s" % (name, ", ".join(missing), info.path,
                                                 "it" if len(missing) == 1 else "them"))
    for target in targets:
        _enable(paths, target, name, info.targets[target])


def list_modules(paths: Paths) -> List[ModuleEntry]:
    """Every module with a script or a link, sorted by name."""
    enabled: Dict[str, Dict[str, int]] = {}
    for target in TARGETS:
        for link in _scan(paths, target, problems=None, quiet=True):
            enabled.setdefault(link.name, {})[target] = link.priority
    names = set(enabled) | _linked_names(paths)
    if os.path.isdir(paths.scripts_dir):
        names.update(entry for entry in os.listdir(paths.scripts_dir)
                     if not entry.startswith(".")
                     and os.path.isfile(os.path.join(paths.scripts_dir, entry)))
    entries = []
    for name in sorted(names):
        info, error = None, None
        try:
            info = read_module(paths, name)
        except RegistryError as exc:
            error = str(exc)
            if not os.path.lexists(os.path.join(paths.scripts_dir, name)):
                error += "; its links do not run (remove them: ovm-chkconfig --del %s)" % name
        entries.append(ModuleEntry(name, info, enabled.get(name, {}), error))
    return entries


def enabled_modules(paths: Paths, target: str,
                    problems: Optional[List[str]] = None) -> List[Tuple[int, str, str]]:
    """``(priority, name, script_path)`` of every module linked for ``target``.

    Sorted by priority then name. Dangling and malformed entries are skipped, logged, and
    appended to ``problems`` when given.
    """
    if target not in TARGETS:
        raise UnknownTargetError("unknown target %r; the targets are: %s"
                                 % (target, ", ".join(TARGETS)))
    links = _scan(paths, target, problems=problems, quiet=False)
    return sorted((link.priority, link.name, link.script_path) for link in links)


# --- internals -------------------------------------------------------------------------

def _check_name(name: str) -> None:
    if not name or "/" in name or name.startswith(".") or any(ch.isspace() for ch in name):
        raise RegistryError("invalid module name %r: a module name is a plain file name in "
                            "/etc/template.d/scripts" % (name,))


def _describe(targets: Dict[str, int]) -> str:
    return ", ".join("%s:%d" % item for item in targets.items()) or "no targets"


def _resolve(paths: Paths, link_path: str) -> str:
    """Where a registry symlink points, kept inside the root."""
    destination = os.readlink(link_path)
    if destination.startswith("/"):
        return paths.under(destination)  # absolute links name guest paths
    return os.path.normpath(os.path.join(os.path.dirname(link_path), destination))


def _scan(paths: Paths, target: str, problems: Optional[List[str]],
          quiet: bool) -> List[_Link]:
    directory = paths.target_dir(target)
    try:
        entries = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:
        _report(problems, quiet, "cannot read %s: %s" % (directory, exc.strerror or exc))
        return []
    links = []
    for entry in entries:
        if entry.startswith("."):
            continue
        link_path = os.path.join(directory, entry)
        if len(entry) < 3 or not entry[:2].isdigit() or not entry[:2].isascii():
            _report(problems, quiet, "skipping %s: not named <NN><name> (two-digit priority, "
                    "then the module name)" % link_path)
            continue
        if not os.path.islink(link_path):
            _report(problems, quiet, "skipping %s: not a symlink to ../scripts/%s (use "
                    "ovm-chkconfig --add)" % (link_path, entry[2:]))
            continue
        script = _resolve(paths, link_path)
        if not os.path.isfile(script):
            _report(problems, quiet, "skipping %s: dangling link to %s"
                    % (link_path, os.readlink(link_path)))
            continue
        links.append(_Link(int(entry[:2]), entry[2:], link_path, script))
    return links


def _report(problems: Optional[List[str]], quiet: bool, message: str) -> None:
    if not quiet:
        log.warning("%s", message)
    if problems is not None:
        problems.append(message)


def _module_links(paths: Paths, name: str, target: Optional[str] = None) -> List[str]:
    """Paths of every entry ``NN<name>`` (any kind, even dangling) in the target dirs."""
    found: List[str] = []
    for each in ([target] if target else TARGETS):
        directory = paths.target_dir(each)
        try:
            entries = os.listdir(directory)
        except FileNotFoundError:
            continue
        found.extend(os.path.join(directory, entry) for entry in sorted(entries)
                     if len(entry) > 2 and entry[:2].isdigit() and entry[2:] == name)
    return found


def _linked_names(paths: Paths) -> set:
    """Module names of every ``NN<name>`` entry in the target dirs, valid or not."""
    names: Set[str] = set()
    for target in TARGETS:
        try:
            entries = os.listdir(paths.target_dir(target))
        except OSError:
            continue
        names.update(entry[2:] for entry in entries
                     if len(entry) > 2 and entry[:2].isdigit() and not entry.startswith("."))
    return names


def _enable(paths: Paths, target: str, name: str, priority: int) -> None:
    directory = paths.target_dir(target)
    wanted = os.path.join(directory, link_name(priority, name))
    destination = os.path.join("..", "scripts", name)
    try:
        for existing in _module_links(paths, name, target):
            if existing == wanted and os.path.islink(existing) \
                    and os.readlink(existing) == destination:
                continue
            log.info("removing stale %s", existing)
            os.unlink(existing)
        if os.path.islink(wanted) and os.readlink(wanted) == destination:
            return
        os.makedirs(directory, exist_ok=True)
        atomic_symlink(destination, wanted)
    except OSError as exc:
        raise RegistryError("cannot enable %s for %s: %s: %s"
                            % (name, target, wanted, exc.strerror or exc)) from exc


def _disable(paths: Paths, target: str, name: str) -> int:
    removed = 0
    for existing in _module_links(paths, name, target):
        try:
            os.unlink(existing)
        except OSError as exc:
            raise RegistryError("cannot disable %s for %s: %s: %s"
                                % (name, target, existing, exc.strerror or exc)) from exc
        removed += 1
    return removed
