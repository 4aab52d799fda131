"""Platform detection from the release files under the root."""
from __future__ import annotations

import pytest

from templateconfig.platform import UnsupportedPlatform, detect

from pathlib import Path

#: The modules' fixture roots: one small tree per supported distro release.
ROOTS = Path(__file__).resolve().parents[1] / "modules" / "fixtures" / "roots"


@pytest.mark.parametrize("name,family,ident,major", [
    ("ol6", "rhel", "ol", 6),   # no os-release: /etc/oracle-release
    ("ol7", "rhel", "ol", 7),
    ("ol8", "rhel", "ol", 8),
    ("ol9", "rhel", "ol", 9),
    ("debian12", "debian", "debian", 12),
    ("ubuntu2204", "debian", "ubuntu", 22),
])
def test_detects_each_fixture_root(monkeypatch, name, family, ident, major):
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(ROOTS / name))
    platform = detect()
    assert (platform.family, platform.release.id, platform.major) == (family, ident, major)


def test_centos6_redhat_release(monkeypatch, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/redhat-release").write_text("CentOS release 6.10 (Final)\n")
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    platform = detect()
    assert (platform.family, platform.release.id, platform.major) == ("rhel", "centos", 6)


def test_unknown_guest_is_a_clear_error(monkeypatch, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('ID=plan9\nPRETTY_NAME="Plan 9"\n')
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    with pytest.raises(UnsupportedPlatform, match="Plan 9"):
        detect()
