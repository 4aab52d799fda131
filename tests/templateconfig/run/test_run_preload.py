"""What the runner imports before it forks (``templateconfig.run.preload``): every module of
the packages the standard modules use, sub-packages included, found by their files."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from templateconfig.run.preload import PRELOAD_PACKAGES, package_modules, python_files

TREE = {
    "__init__.py": "",
    "alpha.py": "",
    "bad-name.py": "",  # not importable: not a module name
    "notes.txt": "",
    "support/__init__.py": "",
    "support/base.py": "",
    "support/deeper/__init__.py": "",
    "support/deeper/leaf.py": "",
    "loose/orphan.py": "",  # no __init__.py: not a sub-package
    "__pycache__/alpha.cpython-311.pyc": "",
}


@pytest.fixture
def package(tmp_path, monkeypatch):
    """A package ``preloadme`` with sub-packages, importable from tmp_path."""
    top = tmp_path / "preloadme"
    for name, text in TREE.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    return top


def test_the_walk_descends_into_sub_packages(package):
    assert [name for name, _ in python_files(str(package))] == [
        "", "alpha", "support", "support.base", "support.deeper", "support.deeper.leaf"]
    assert package_modules("preloadme") == [
        "preloadme.alpha", "preloadme.support", "preloadme.support.base",
        "preloadme.support.deeper", "preloadme.support.deeper.leaf"]


def test_an_unknown_package_has_no_modules():
    assert package_modules("no_such_package_for_preload") == []


def test_preload_imports_every_module_of_the_packages_on_disk():
    """In a fresh interpreter: after preload(), every module file of the preloaded
    packages (walked here with os.walk) is imported."""
    code = ("import sys, json\n"
            "from templateconfig.run.preload import preload\n"
            "preload()\n"
            "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)
    imported = set(json.loads(proc.stdout))
    import templateconfig
    base = os.path.dirname(os.path.dirname(os.path.abspath(templateconfig.__file__)))
    expected = set()
    for package in PRELOAD_PACKAGES:
        top = os.path.join(base, *package.split("."))
        for directory, dirnames, filenames in os.walk(top):
            if "__init__.py" not in filenames:  # not a package, nor is anything below
                dirnames[:] = []
                continue
            relative = os.path.relpath(directory, top)
            prefix = package if relative == "." else \
                package + "." + relative.replace(os.sep, ".")
            for filename in filenames:
                if filename.endswith(".py"):
                    name = filename[:-3]
                    expected.add(prefix if name == "__init__" else prefix + "." + name)
    assert len(expected) > len(PRELOAD_PACKAGES)
    assert expected <= imported, sorted(expected - imported)
