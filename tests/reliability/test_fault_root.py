"""Fault injection: symbolic links planted in a guest root lead out of it.

The standard modules run as real processes on copies of the fixture roots
(tests/templateconfig/modules/fixtures) in which a file or a directory they write was
replaced by a link to a place outside the root. Nothing may be written outside; a link
at a file the module writes whole is replaced by a regular file with the module's mode
(never the link's 0777), any other is refused with an error naming the link.
"""
from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("case, distro, planted, is_dir, module, params, expected", CASES,
                         ids=[c[0] for c in CASES])
def test_a_link_out_of_the_root_is_never_followed(tmp_path, figures, case, distro, planted,
                                                  is_dir, module, params, expected):
    root = tmp_path / "root"
    shutil.copytree(str(ROOTS / distro), str(root), symlinks=True)
    outside = tmp_path / "outside"
    if is_dir:
        outside.mkdir()
        (outside / "keep").write_text("the host's own\n")
    else:
        outside.write_text("the host's own\n")
        outside.chmod(0o644)
    link = root / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(str(link))
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(outside)
    before = snapshot(outside) if is_dir else outside.read_bytes()
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
