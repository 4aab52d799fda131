"""The developer's install step (`make venv`, which `make demo` and `make test` run first):
a fresh virtualenv with the project installed in editable mode, as a newcomer gets it.

The install must say nothing that looks like a problem (setuptools warned about its
deprecated "compat" editable mode on every fresh install, right before the demo), and
must cost nothing at interpreter start-up: the editable install is a plain ``.pth`` line
naming the tree, not an import hook, so ``ovmd -g``'s start-up stays as budgeted. The
modules' scripts and ``scripts/`` work from the tree.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

from testlib import REPO

#: What setuptools prints when it warns about an editable install.
SETUPTOOLS_WARNINGS = ("BuildBackendWarning", "SetuptoolsDeprecationWarning",
                       "editable mode", "Compat editable", "editable_mode")


def test_make_venv_installs_the_tree_without_warnings_or_import_hooks(tmp_path):
    venv = tmp_path / "venv"
    proc = subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "venv",
                           "VENV=%s" % venv], capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert not [word for word in SETUPTOOLS_WARNINGS if word in output], output
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    pth = sorted(p for p in Path(site).glob("*ovmd*") if p.is_file())
    assert [p.suffix for p in pth] == [".pth"], pth  # no finder module next to it
    assert pth[0].read_text().split() == [str(REPO)]
    # nothing of the install is imported at start-up
    imported = subprocess.run([str(python), "-X", "importtime", "-c", "pass"],
                              capture_output=True, text=True, check=True).stderr
    assert "editable" not in imported and "finder" not in imported, imported
    # the packages, a module script and scripts/ run from the tree
    where = subprocess.run([str(python), "-c", "import ovmd, templateconfig.modules.ssh as m; "
                            "print(ovmd.__file__); print(m.__file__)"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert where == [str(REPO / "ovmd" / "__init__.py"),
                     str(REPO / "templateconfig" / "modules" / "ssh.py")]
    enumerate_ = subprocess.run([str(python), str(REPO / "template.d" / "scripts" / "selinux"),
                                 "--enumerate", "configure"], capture_output=True, text=True)
    assert enumerate_.returncode == 0 and "com.oracle.linux.selinux.mode" in enumerate_.stdout, \
        enumerate_.stderr
    demo_help = subprocess.run([str(python), str(REPO / "scripts" / "demo.py"), "--help"],
                               capture_output=True, text=True)
    assert demo_help.returncode == 0 and "--keep" in demo_help.stdout, demo_help.stderr
