"""scripts/sandbox_root.py, as the README tells a user to make a sandbox root for ``--root``:
a fixture root copied with a real guest's modes (git keeps none), the standard modules
registered, ready for ``ovm-template-config --root``; bad input gets a one-line error."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
from testlib import REPO, STANDARD_MODULES, bin_path, require_root

SCRIPT = str(REPO / "scripts" / "sandbox_root.py")


def mode_and_owner(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.mark.parametrize("fixture, shadow, root_home", [("ol9", (0o000, 0, 0), 0o550),
                                                        ("debian12", (0o640, 0, 42), 0o700)])
def test_a_fixture_root_with_a_real_guests_modes_and_the_modules(tmp_path, fixture, shadow,
                                                                 root_home):
    require_root("the owners of a real guest's files (root:shadow) need root")
    dest = tmp_path / "sandbox"
    proc = subprocess.run([sys.executable, SCRIPT, fixture, str(dest), "--modules"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name in ("shadow", "gshadow"):
        assert mode_and_owner(dest / "etc" / name) == shadow, name
    assert mode_and_owner(dest / "etc" / "machine-id")[0] == 0o444
    assert mode_and_owner(dest / "root")[0] == root_home
    assert not list(dest.rglob(".keep"))
    listed = subprocess.run([bin_path("ovm-chkconfig"), "--root", str(dest), "--list"],
                            capture_output=True, text=True, check=True).stdout
    assert [line.split()[0] for line in listed.splitlines()[1:]] == sorted(STANDARD_MODULES)
    # ready for a dry run of the standard modules
    plan = subprocess.run([bin_path("ovm-template-config"), "--root", str(dest), "--stdin",
                           "--dry-run", "configure"],
                          input=json.dumps({"com.oracle.linux.root-password": "x-Pass-1"}),
                          capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr
    assert "=== authentication ===" in plan.stdout


@pytest.mark.parametrize("args, message", [
    (["ol99", "{dest}"], "no fixture root 'ol99'; the fixture roots are: debian12, ol6"),
    (["ol9", "{existing}"], "exists already: name a new directory"),
])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, args, message):
    existing = tmp_path / "existing"
    existing.mkdir()
    argv = [a.format(dest=tmp_path / "new", existing=existing) for a in args]
    proc = subprocess.run([sys.executable, SCRIPT] + argv, capture_output=True, text=True)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "new").exists() and list(existing.iterdir()) == []
