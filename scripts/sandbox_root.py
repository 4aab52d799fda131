#!/usr/bin/env python3
"""A sandbox root for ``--root`` made from one of the fixture roots, with a real guest's modes.

    .venv/bin/python scripts/sandbox_root.py FIXTURE DEST [--modules]

FIXTURE is a directory name under ``tests/templateconfig/modules/fixtures/roots/``
(``ol6`` ... ``ol9``, ``debian12``, ``ubuntu2204``): the few files of a template that
the standard modules read and write. git keeps no modes but 0644 and 0755 (nor owners),
so a plain copy has a world-readable ``/etc/shadow``; the copy gets the modes a real
guest has: ``/etc/shadow`` and ``/etc/gshadow`` 0000 root:root on Oracle Linux, 0640
root:shadow on Debian and Ubuntu; ``/root`` 0550 (EL) or 0700; ``/etc/machine-id`` 0444;
SSH private keys 0600, ``~/.ssh`` 0700; and no ``.keep`` placeholders (git cannot hold an
empty directory). Owners need root; without it the modes are set and the owner is the
caller. ``--modules`` installs the standard modules' scripts from ``template.d/`` and
registers them, as their packages do (``ovm-chkconfig --add``).

``make demo``, the benchmarks and the tests make their roots with this, so they see the
modes a guest has.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
FIXTURE_ROOTS = REPO / "tests" / "templateconfig" / "modules" / "fixtures" / "roots"
#: The standard modules, in their configure order.
STANDARD_MODULES = ("selinux", "firewall", "datetime", "network", "system", "user", "ssh",
                    "authentication")

#: (mode, group name or None for root's) of the files of password hashes, per family.
SHADOW = {"el": (0o000, None), "debian": (0o640, "shadow")}
ROOT_HOME = {"el": 0o550, "debian": 0o700}


def family(root: Path) -> str:
    """``debian`` for a Debian or Ubuntu root (it has ``/etc/debian_version``), else ``el``."""
    return "debian" if (root / "etc" / "debian_version").exists() else "el"


def group_id(root: Path, name: str) -> Optional[int]:
    """The gid of group ``name`` in the root's ``/etc/group``."""
    for line in (root / "etc" / "group").read_text().splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name:
            return int(fields[2])
    return None


def _set(path: Path, mode: int, gid: Optional[int] = None) -> None:
    if not path.exists():
        return
    if os.geteuid() == 0:
        os.chown(path, 0, 0 if gid is None else gid)
    os.chmod(path, mode)


def guest_modes(root: Path) -> None:
    """Give the files of the tree at ``root`` the modes (and, as root, owners) of a real
    guest of its family (see the module docstring)."""
    kind = family(root)
    mode, group = SHADOW[kind]
    gid = group_id(root, group) if group else None
    for name in ("shadow", "gshadow", "shadow-", "gshadow-"):
        _set(root / "etc" / name, mode, gid)
    _set(root / "root", ROOT_HOME[kind])
    _set(root / "etc" / "machine-id", 0o444)
    _set(root / "root" / ".ssh", 0o700)
    for key in list((root / "etc" / "ssh").glob("ssh_host_*_key")) + \
            [p for p in (root / "root" / ".ssh").glob("*") if p.is_file()]:
        _set(key, 0o600)
    for keep in root.rglob(".keep"):
        keep.unlink()


def fixture_root(name: str, dest: Path) -> Path:
    """A fresh copy of fixture root ``name`` at ``dest`` with a real guest's modes."""
    source = FIXTURE_ROOTS / name
    if not (source / "etc").is_dir():
        raise ValueError("no fixture root %r; the fixture roots are: %s" % (
            name, ", ".join(sorted(p.name for p in FIXTURE_ROOTS.iterdir()))))
    shutil.copytree(source, dest, symlinks=True)
    guest_modes(Path(dest))
    return Path(dest)


def install_modules(root: Path, names: Iterable[str] = STANDARD_MODULES) -> None:
    """The standard modules' scripts in ``root``'s ``/etc/template.d/scripts``, registered
    for their targets (``ovm-chkconfig --add NAME``, in this process)."""
    from ovmd.paths import Paths
    from templateconfig import registry

    paths = Paths(str(root))
    os.makedirs(paths.scripts_dir, exist_ok=True)
    for name in names:
        shutil.copy2(REPO / "template.d" / "scripts" / name, paths.scripts_dir)
        registry.add(paths, name)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fixture", help="a fixture root: %s" % ", ".join(
        sorted(p.name for p in FIXTURE_ROOTS.iterdir())))
    parser.add_argument("dest", type=Path, help="the new root (must not exist)")
    parser.add_argument("--modules", action="store_true",
                        help="install and register the standard modules")
    args = parser.parse_args(argv)
    if args.dest.exists():
        parser.error("%s exists already: name a new directory" % args.dest)
    try:
        fixture_root(args.fixture, args.dest)
    except ValueError as exc:
        parser.error(str(exc))
    if args.modules:
        install_modules(args.dest)
    print("%s: a %s guest root (%s)%s" % (
        args.dest, args.fixture, family(args.dest),
        ", the standard modules registered" if args.modules else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
