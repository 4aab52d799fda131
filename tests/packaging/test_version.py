"""The version string has one source, ``ovmd/__init__.py``; everything that shows a
version says the same (both packages, the commands, the man pages, the RPM and Debian
changelogs)."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from testlib import REPO

import templateconfig
from ovmd import __version__

MAN_PAGES = sorted((REPO / "packaging" / "man").glob("*.8"))


def test_templateconfig_shares_the_version():
    assert templateconfig.__version__ == __version__


@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_header_names_the_version(page):
    header = next(line for line in page.read_text().splitlines() if line.startswith(".TH"))
    assert '"ovmd %s"' % __version__ in header


def test_rpm_changelog_starts_with_the_version():
    spec = (REPO / "packaging" / "ovmd.spec").read_text()
    changelog = spec.split("%changelog", 1)[1]
    first = next(line for line in changelog.splitlines() if line.startswith("*"))
    assert re.search(r" - %s-\d+$" % re.escape(__version__), first), first


def test_debian_changelog_starts_with_the_version():
    first = (REPO / "packaging/debian/changelog").read_text().splitlines()[0]
    assert first.startswith("ovmd (%s-1) " % __version__), first


def test_spec_has_no_version_of_its_own():
    spec = (REPO / "packaging" / "ovmd.spec").read_text()
    assert not re.search(r"%global version \d", spec)


@pytest.mark.parametrize("module", ["ovmd.cli", "templateconfig.ovm_template_config",
                                    "templateconfig.ovm_chkconfig", "ovmd.vmmessage"])
def test_commands_print_the_version(module):
    out = subprocess.run([sys.executable, "-c", "import sys; from %s import main; "
                          "sys.argv[0] = 'x'; sys.exit(main(['--version']))" % module],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert __version__ in out.stdout + out.stderr


def test_makefile_and_setup_read_the_one_source():
    version = subprocess.run(["make", "-s", "-C", str(REPO), "--no-print-directory",
                              "print-version"], capture_output=True, text=True)
    assert version.stdout.strip() == __version__, version.stderr
    setup = subprocess.run([sys.executable, "setup.py", "--version"], cwd=str(REPO),
                           capture_output=True, text=True)
    assert setup.stdout.strip().splitlines()[-1] == __version__, setup.stderr
