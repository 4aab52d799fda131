"""Fault injection: symbolic links planted in a guest root lead out of it, and the
runner's files are left with hostile modes.

The standard modules run as real processes on copies of the fixture roots
(tests/templateconfig/modules/fixtures) in which a file or a directory they write was
replaced by a link to a place outside the root. Nothing may be written outside; a link
at a file the module writes whole is replaced by a regular file with the module's mode
(never the link's 0777), any other is refused with an error naming the link.

The real ``ovm-template-config`` runs on a sandbox root in which one of its own files
(the run log, the report, the run state, the enumerate cache, a module's state, the run
lock) or a directory on the way to them is a link out of the root: a link at a file is
replaced or removed, never followed; a directory is refused in one line, and nothing
runs. Files and directories someone widened to 0666/0777 get their documented modes
back on the next run, also when it has nothing to change.
"""
from __future__ import annotations

import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
from runner_helpers import guest, ran, recording_module, run_cli

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "templateconfig" / "modules"))

from module_helpers import ROOTS, run_module  # noqa: E402

P = "com.oracle.linux."
N = P + "network."
STATIC = {N + "device.0": "eth0", N + "onboot.0": "yes", N + "bootproto.0": "static",
          N + "ipaddr.0": "10.0.0.5", N + "netmask.0": "255.255.255.0"}
CASES = [
    # (case, distro, path replaced by a link, a directory?, module, params, outcome)
    ("/etc/hostname linked out: replaced by a regular file", "ol9", "etc/hostname", False,
     "network", {P + "network.hostname": "vm1"}, "replaced"),
    ("/etc/shadow linked out: refused", "ol9", "etc/shadow", False, "authentication",
     {P + "root-password": "Planted-Link-pw-1"}, "refused"),
    ("/etc/ssh linked out: refused, no host key outside", "ol9", "etc/ssh", True, "ssh", {},
     "refused"),
    ("NetworkManager keyfiles directory linked out: refused", "ol9",
     "etc/NetworkManager/system-connections", True, "network", STATIC, "refused"),
    ("/etc/sysconfig/network-scripts linked out: refused", "ol7",
     "etc/sysconfig/network-scripts", True, "network", STATIC, "refused"),
]


def snapshot(directory: Path):
    return {str(p.relative_to(directory)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(directory.rglob("*"))}


def plant_link(link: Path, outside: Path, is_dir: bool):
    """Make ``outside`` (a directory holding one file, or a file of mode 0666) and put a
    link to it at ``link`` in place of what is there; returns what ``outside`` holds."""
    if is_dir:
        outside.mkdir()
        (outside / "keep").write_text("the host's own\n")
    else:
        outside.write_text("the host's own\n")
        outside.chmod(0o666)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(str(link))
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(outside)
    return snapshot(outside) if is_dir else outside.read_bytes()


@pytest.mark.parametrize("case, distro, planted, is_dir, module, params, expected", CASES,
                         ids=[c[0] for c in CASES])
def test_a_link_out_of_the_root_is_never_followed(tmp_path, figures, case, distro, planted,
                                                  is_dir, module, params, expected):
    root = tmp_path / "root"
    shutil.copytree(str(ROOTS / distro), str(root), symlinks=True)
    outside = tmp_path / "outside"
    link = root / planted
    before = plant_link(link, outside, is_dir)
    code, _, stderr, _ = run_module(module, "configure", params, root)
    figures.add("fault", "symlinks planted in a root (5 module writes)", tried=1,
                crashes=int("Traceback" in stderr))
    assert (snapshot(outside) if is_dir else outside.read_bytes()) == before
    assert "Traceback" not in stderr
    if expected == "replaced":
        assert code == 0, stderr
        assert not link.is_symlink() and link.read_text() == "vm1\n"
        assert stat.S_IMODE(link.stat().st_mode) == 0o644
    else:
        assert code == 1
        assert "refusing to" in stderr and str(link) in stderr and "outside the root" in stderr
        assert link.is_symlink()


STATE = "/var/lib/ovm-template-config"
RUNNER_LINKS = [
    # (case, guest path replaced by a link out of the root, a directory?, exit status)
    ("the run log: replaced by a regular file", "/var/log/ovm-template-config.log", False, 0),
    ("the run report: removed, written anew", STATE + "/last-run.json", False, 0),
    ("the run state: removed, never read", STATE + "/run-state.json", False, 0),
    ("the enumerate cache: removed, written anew", STATE + "/enumerate-cache.json", False, 0),
    ("a module's applied state: removed", STATE + "/recorder.applied", False, 0),
    ("the run lock: replaced by a regular file", "/run/ovmd/run.lock", False, 0),
    ("/var/log: refused, nothing runs", "/var/log", True, 2),
    ("the state directory: refused, nothing runs", STATE, True, 2),
    ("/run/ovmd: refused, nothing runs", "/run/ovmd", True, 5),
]


def runner_root(tmp_path):
    paths = guest(tmp_path)
    recording_module(paths, tmp_path)
    return paths


def configure(paths):
    return run_cli(["--root", paths.root, "--stdin", "configure"], input_text='{"run": "1"}\n')


@pytest.mark.parametrize("case, planted, is_dir, status", RUNNER_LINKS,
                         ids=[c[0] for c in RUNNER_LINKS])
def test_a_link_at_the_runners_files_is_never_followed(tmp_path, figures, case, planted,
                                                       is_dir, status):
    paths = runner_root(tmp_path)
    outside = tmp_path / "outside"
    link = Path(paths.under(planted))
    before = plant_link(link, outside, is_dir)
    result = configure(paths)
    figures.add("fault", "symlinks planted in a root (9 of the runner's files)", tried=1,
                crashes=int("Traceback" in result.stderr))
    assert "Traceback" not in result.stderr
    assert (snapshot(outside) if is_dir else outside.read_bytes()) == before
    assert result.returncode == status, result.stderr
    if status:
        assert ran(tmp_path) == [] and link.is_symlink()
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "refusing to" in lines[0] and str(link) in lines[0] \
            and "outside the root" in lines[0]
        return
    assert ran(tmp_path) == ["recorder run=1"]
    assert not link.is_symlink()
    if link.exists():
        assert stat.S_IMODE(link.stat().st_mode) == 0o600
    assert stat.S_IMODE(outside.stat().st_mode) == 0o666


#: What someone widened, and the mode the next run puts back.
HOSTILE_MODES = [
    (STATE, 0o777, 0o700),
    (STATE + "/last-run.json", 0o666, 0o600),
    (STATE + "/enumerate-cache.json", 0o666, 0o600),
    (STATE + "/recorder.applied", 0o666, 0o600),
    (STATE + "/machine-id.generated", 0o777, 0o644),
    ("/run/ovmd", 0o777, 0o700),
    ("/run/ovmd/run.lock", 0o666, 0o600),
    ("/var/log/ovm-template-config.log", 0o666, 0o600),
]


def test_the_runners_files_get_their_modes_back(tmp_path, figures):
    paths = runner_root(tmp_path)
    assert configure(paths).returncode == 0
    for name in ("recorder.applied", "machine-id.generated"):
        Path(paths.under(STATE + "/" + name)).write_text("{}\n")
    for path, hostile, _ in HOSTILE_MODES:
        os.chmod(paths.under(path), hostile)
    result = configure(paths)  # a steady-state run: nothing new to write in the directory
    found = {path: stat.S_IMODE(os.stat(paths.under(path)).st_mode)
             for path, _, _ in HOSTILE_MODES}
    figures.add("fault", "hostile modes on the runner's files (%d files and directories)"
                % len(HOSTILE_MODES), tried=len(HOSTILE_MODES),
                crashes=int("Traceback" in result.stderr))
    assert result.returncode == 0, result.stderr
    assert found == {path: documented for path, _, documented in HOSTILE_MODES}
    assert "had mode 0666: put back to 0600" in result.stderr  # said, not silent
