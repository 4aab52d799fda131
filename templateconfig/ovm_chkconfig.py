"""``ovm-chkconfig``: enable and list template-configuration modules, as Oracle's does.

Package scripts call it (an RPM ``ovm-template-config-NAME`` runs ``ovm-chkconfig --add NAME``
in ``%post``), so the command line and the ``--list`` columns are a compatibility surface;
the work itself is :mod:`templateconfig.registry`.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

from ovmd.paths import ROOT_ENV, Paths, check_root
from templateconfig import __version__, registry
from templateconfig.header import TARGETS

log = logging.getLogger(__name__)

PROG = "ovm-chkconfig"
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

_DESCRIPTION = """\
Enable, disable and list template-configuration modules. A module is a script in
/etc/template.d/scripts/NAME whose '### BEGIN PLUGIN INFO' header gives a priority for each
target it takes part in; enabling it links /etc/template.d/<target>.d/<NN>NAME to it."""

_EPILOG = """\
examples:
  %(prog)s --list                      every module, on:<priority> or off per target
  %(prog)s --add ssh                   enable ssh for every target of its header
  %(prog)s --target configure,cleanup ssh off
  %(prog)s --del ssh                   disable ssh everywhere (the script stays)

targets: {targets}

exit status: 0 success, 1 error (message on stderr), 2 bad usage""".format(
    targets=", ".join(TARGETS))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("--list", nargs="?", const="", metavar="NAME",
                         help="list all modules, or only NAME")
    actions.add_argument("--add", metavar="NAME",
                         help="enable NAME for the targets and priorities of its header "
                              "(idempotent; stale links of NAME are replaced)")
    actions.add_argument("--del", dest="delete", metavar="NAME",
                         help="disable NAME for every target")
    actions.add_argument("--target", metavar="TARGET[,TARGET...]",
                         help="with 'NAME on|off': switch NAME for these targets")
    parser.add_argument("args", nargs="*", metavar="NAME on|off", help=argparse.SUPPRESS)
    parser.add_argument("--root", metavar="DIR",
                        help="operate on the tree under DIR instead of / (default: $%s or /)"
                             % ROOT_ENV)
    parser.add_argument("--version", action="version", version="%s %s" % (PROG, __version__))
    return parser


def format_list(entries: List[registry.ModuleEntry]) -> str:
    """Oracle's ``--list`` table: ``name`` then one ``on:<priority>``/``off`` column per target."""
    rows = [["name"] + list(TARGETS)]
    for entry in entries:
        rows.append([entry.name] + [
            "on:%d" % entry.enabled[target] if target in entry.enabled else "off"
            for target in TARGETS])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%s: %%(levelname)s: %%(message)s" % PROG)
    parser = build_parser()
    options = parser.parse_args(argv)
    root = options.root if options.root is not None else os.environ.get(ROOT_ENV) or "/"
    refused = check_root(PROG, root, "--root" if options.root is not None else ROOT_ENV)
    if refused:
        sys.stderr.write(refused)
        return EXIT_USAGE
    paths = Paths(root)

    if options.target is None and options.args:
        parser.error("unexpected arguments: %s" % " ".join(options.args))
    try:
        if options.list is not None:
            entries = registry.list_modules(paths)
            if options.list:
                entries = [entry for entry in entries if entry.name == options.list]
                if not entries:
                    raise registry.RegistryError(
                        "no module %r in %s" % (options.list, paths.scripts_dir))
            for entry in entries:
                if entry.error:
                    log.warning("%s", entry.error)
            sys.stdout.write(format_list(entries))
        elif options.add is not None:
            registry.add(paths, options.add)
        elif options.delete is not None:
            registry.delete(paths, options.delete)
        elif options.target is not None:
            if len(options.args) != 2 or options.args[1] not in ("on", "off"):
                parser.error("--target %s needs NAME and on|off" % options.target)
            targets = [target.strip() for target in options.target.split(",") if target.strip()]
            registry.set_targets(paths, options.args[0], targets, options.args[1] == "on")
        else:
            parser.error("one of --list, --add, --del, --target is required")
    except registry.RegistryError as exc:
        sys.stderr.write("%s: error: %s\n" % (PROG, exc))
        return EXIT_USAGE if isinstance(exc, registry.UnknownTargetError) else EXIT_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
