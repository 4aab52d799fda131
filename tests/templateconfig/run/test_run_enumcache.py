"""The enumerate cache's fingerprint of the framework (``templateconfig.run.enumcache``):
a change to any file of the ``templateconfig`` package, sub-packages included, makes the
cached descriptors stale.

The cache in use (a steady-state run enumerates once) is in test_runner.py.
"""
from __future__ import annotations

import os

import pytest

import templateconfig
from templateconfig.run.enumcache import framework_fingerprint


@pytest.fixture
def framework(tmp_path, monkeypatch):
    """A stand-in ``templateconfig`` tree, with a module in a sub-package."""
    top = tmp_path / "templateconfig"
    for name in ("__init__.py", "cli.py", "modules/__init__.py", "modules/support/__init__.py",
                 "modules/support/base.py", "platform/network/__init__.py"):
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_text("# %s\n" % name)
    (top / "platform" / "__init__.py").write_text("")
    monkeypatch.setattr(templateconfig, "__file__", str(top / "__init__.py"))
    return top


def files(fingerprint):
    return [entry[0] for entry in fingerprint[2]]


def test_every_file_of_the_package_counts(framework):
    assert files(framework_fingerprint()) == [
        "__init__.py", "cli.py", "modules/__init__.py", "modules/support/__init__.py",
        "modules/support/base.py", "platform/__init__.py", "platform/network/__init__.py"]


@pytest.mark.parametrize("name", ["cli.py", "modules/support/base.py"])
def test_a_changed_file_changes_the_fingerprint(framework, name):
    before = framework_fingerprint()
    with open(os.path.join(str(framework), name), "a") as handle:
        handle.write("CHANGED = True\n")
    assert framework_fingerprint() != before


def test_the_version_and_the_interpreter_count(framework):
    import sys

    version, python, _files = framework_fingerprint()
    assert (version, python) == (templateconfig.__version__, sys.version)
