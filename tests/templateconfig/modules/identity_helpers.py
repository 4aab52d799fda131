"""Helpers for the identity-module tests (user, ssh, authentication, system).

Kept apart from ``conftest.py`` (owned by the network-module tests): running a module
script on a root, snapshotting a tree, and the cached minimal Debian root that
``test_real_root.py`` runs the real shadow tools in.
"""
from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[3]
SCRIPTS = REPO / "template.d" / "scripts"
DISTROS = ("ol6", "ol7", "ol8", "ol9", "debian12", "ubuntu2204")



class ModuleRun:
    """The outcome of one module process: exit status, output, params and journal."""

    def __init__(self, returncode: int, stdout: str, stderr: str, journal: List[dict]) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.journal = journal

    @property
    def params(self) -> dict:
        return json.loads(self.stdout)

    def commands(self) -> List[List[str]]:
        return [entry["argv"] for entry in self.journal if entry["op"] == "command"]

    def files(self) -> List[Tuple[str, str]]:
        return [(entry["op"], entry["path"]) for entry in self.journal if entry["op"] != "command"]


def run_module(name: str, target: str, params: Optional[dict], root: Path, dry_run: bool = False,
               enumerate_only: bool = False, extra_env: Optional[Dict[str, str]] = None,
               check: bool = True) -> ModuleRun:
    """Run ``template.d/scripts/NAME`` as the runner would, on ``root``."""
    env = dict(os.environ)
    env["OVM_TEMPLATE_CONFIG_ROOT"] = str(root)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("OVM_TEMPLATE_CONFIG_DRY_RUN", None)
    if dry_run:
        env["OVM_TEMPLATE_CONFIG_DRY_RUN"] = "1"
    if extra_env:
        env.update(extra_env)
    fd, journal = tempfile.mkstemp(prefix="journal-", suffix=".jsonl")
    os.close(fd)
    env["OVM_TEMPLATE_CONFIG_ACTIONS"] = journal
    argv = [sys.executable, str(SCRIPTS / name)]
    argv += ["--enumerate", target] if enumerate_only else [target]
    try:
        proc = subprocess.run(argv, input=json.dumps(params or {}), capture_output=True,
                              text=True, env=env, timeout=300)
        with open(journal) as handle:
            entries = [json.loads(line) for line in handle if line.strip()]
    finally:
        os.unlink(journal)
    result = ModuleRun(proc.returncode, proc.stdout, proc.stderr, entries)
    if check and proc.returncode != 0:
        raise AssertionError("%s %s failed (%d):\n%s" % (name, target, proc.returncode, proc.stderr))
    return result


def tree(root: Path, normalize_hashes: bool = True) -> Dict[str, tuple]:
    """A snapshot of a tree: relative path -> (kind, mode, uid, gid, content or target).

    With ``normalize_hashes``, crypt hashes in shadow files lose their salt and digest
    (``$6$...`` -> ``$6$<salt>$<hash>``), and the backup files the shadow tools keep
    (``passwd-``, ``shadow-``, ...) are left out: a re-set password gets a new salt.
    """
    snapshot = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        st = os.lstat(path)
        if normalize_hashes and relative in ("etc/passwd-", "etc/shadow-", "etc/group-", "etc/gshadow-"):
            continue
        if stat.S_ISLNK(st.st_mode):
            snapshot[relative] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            snapshot[relative] = ("dir", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        else:
            data = path.read_bytes()
            if normalize_hashes and relative in ("etc/shadow", "etc/gshadow"):
                data = normalize_shadow(data.decode()).encode()
            snapshot[relative] = ("file", stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, data)
    return snapshot


_HASH = re.compile(r"\$(1|5|6|y|2[aby]|7)\$[^:]*")


def normalize_shadow(text: str) -> str:
    """Shadow lines with hashes reduced to their method: ``$6$<salt>$<hash>``."""
    return _HASH.sub(lambda m: "$%s$<salt>$<hash>" % m.group(1), text)


def lines_of(root: Path, relative: str) -> List[str]:
    return (root / relative).read_text().splitlines()


def entry(root: Path, relative: str, name: str) -> Optional[List[str]]:
    """The colon-separated fields of ``name``'s line in ROOT/etc/<file>, or None."""
    for line in lines_of(root, relative):
        fields = line.split(":")
        if fields[0] == name:
            return fields
    return None


# --- tests/testlib.py (shared with the daemon and packaging tests) ------------------------

from testlib import (  # noqa: E402,F401  (re-exported)
    extract_debian_root,
    fixture_root,
    sandbox_root,
    verify_password,
)


def shadow_norm(root: Path) -> Tuple[int, int, int]:
    """(mode, uid, gid) a real guest of the root's distribution gives ``/etc/shadow`` and
    ``/etc/gshadow``: EL 0000 root:root, Debian and Ubuntu 0640 root:shadow."""
    mode, group = sandbox_root.SHADOW[sandbox_root.family(root)]
    return mode, 0, sandbox_root.group_id(root, group) if group else 0


def owner_and_mode(path: Path) -> Tuple[int, int, int]:
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
