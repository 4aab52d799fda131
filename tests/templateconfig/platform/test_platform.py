"""Platform detection from the release files under the root."""
from __future__ import annotations

from pathlib import Path

import pytest

from templateconfig.platform import Platform, UnsupportedPlatform, detect, detect_generic

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


@pytest.mark.parametrize("name,key_types,key_group,init_system", [
    ("ol6", ["rsa", "dsa"], "ssh_keys", "chkconfig"),
    ("ol7", ["rsa", "dsa", "ecdsa", "ed25519"], "ssh_keys", "systemd"),
    ("ol9", ["rsa", "ecdsa", "ed25519"], "ssh_keys", "systemd"),
    ("debian12", ["rsa", "ecdsa", "ed25519"], None, "systemd"),
    ("ubuntu2204", ["rsa", "ecdsa", "ed25519"], None, "systemd"),
])
def test_distro_decisions_come_from_the_platform(monkeypatch, name, key_types, key_group,
                                                 init_system):
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(ROOTS / name))
    platform = detect()
    assert platform.default_host_key_types() == key_types
    assert platform.ssh_host_key_group == key_group
    assert platform.init_system == init_system


def test_older_debian_and_ubuntu_still_make_dsa_host_keys(monkeypatch, tmp_path):
    (tmp_path / "etc").mkdir()
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    for ident, version in (("debian", "11"), ("ubuntu", "20.04")):
        (tmp_path / "etc/os-release").write_text("ID=%s\nVERSION_ID=%s\n" % (ident, version))
        assert "dsa" in detect().default_host_key_types(), ident


def test_an_unknown_guest_still_has_the_shared_behaviour(monkeypatch, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/os-release").write_text('ID=plan9\nPRETTY_NAME="Plan 9"\n')
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/useradd").write_text("#!/bin/sh\n")
    (tmp_path / "usr/sbin/useradd").chmod(0o755)
    (tmp_path / "usr/sbin/chpasswd").write_text("not executable\n")
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    platform = detect_generic()
    assert type(platform) is Platform
    assert platform.find_command("useradd") == "/usr/sbin/useradd"
    assert platform.find_command("chpasswd") is None
    assert not platform.uses_machine_id()
