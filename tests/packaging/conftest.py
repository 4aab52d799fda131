"""Shared slow set-up of the packaging tests: the RPM builds and a Debian root to install in.

- ``rpms``: ``make rpm`` as a user runs it (default macros), into a temporary _topdir.
- ``debian_rpms``: the same build with ``python3_sitelib`` aimed at Debian's
  ``/usr/lib/python3/dist-packages``, the only site directory the Debian root's python3
  reads, so the installed packages are importable there.
- ``installed_root``: a minimal Debian 12 root (debootstrap ``minbase`` + python3, cached
  as a tarball per machine) with every built RPM installed by ``rpm --root``. rpm chroots
  into it to run the scriptlets, which is why it needs ``/bin/sh`` and a python3.

The helpers live in packaging_helpers.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import pytest
from packaging_helpers import DEBIAN_SITELIB, build_rpms, debian_root, rpm_root


@pytest.fixture(scope="session")
def rpms(tmp_path_factory) -> Dict[str, Path]:
    return build_rpms(tmp_path_factory.mktemp("rpmbuild"))


@pytest.fixture(scope="session")
def debian_rpms(tmp_path_factory) -> Dict[str, Path]:
    return build_rpms(tmp_path_factory.mktemp("rpmbuild-debian"),
                      '--define "python3_sitelib %s"' % DEBIAN_SITELIB)


@pytest.fixture(scope="session")
def installed_root(tmp_path_factory, debian_rpms) -> Path:
    """A Debian root with every built RPM installed (read-only for the tests using it)."""
    root = debian_root(tmp_path_factory.mktemp("installed") / "root")
    rpm_root(root, "-ivh", *[str(p) for p in debian_rpms.values()])
    return root


@pytest.fixture(scope="session")
def debs(tmp_path_factory) -> Dict[str, Path]:
    """``make deb`` once: package name -> .deb."""
    from packaging_helpers import build_debs
    return build_debs(tmp_path_factory.mktemp("debbuild"))
