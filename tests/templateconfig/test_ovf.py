"""--ovf-transport-iso: OVF environments on real ISO 9660 images and in plain files."""
from __future__ import annotations

import io
import logging
import subprocess
import sys
from pathlib import Path

import pycdlib
import pytest

from templateconfig.ovf import DEFAULT_OVF_DEVICE, OvfError, read_ovf_params

ROOT_SECRET = "Tr0ub4dor&3-root"

ENVIRONMENT = """<?xml version="1.0" encoding="UTF-8"?>
<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
             xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
             xmlns:oe="http://schemas.dmtf.org/ovf/environment/1"
             oe:id="vm-1">
  <PlatformSection>
    <Kind>Oracle VM</Kind>
  </PlatformSection>
  <PropertySection>
    <Property oe:key="com.oracle.linux.root-password" oe:value="%s"/>
    <Property oe:key="com.oracle.linux.network.hostname" oe:value="web1.example.com"/>
    <Property oe:key="com.example.app.port" oe:value="8080"/>
    <Property oe:key="bare-outside-any-product" oe:value="x"/>
  </PropertySection>
  <Entity oe:id="com.oracle.linux">
    <PropertySection>
      <Property oe:key="network.ipaddr.0" oe:value="192.0.2.10"/>
      <Property oe:key="network.hostname" oe:value="loses-to-top-level"/>
    </PropertySection>
  </Entity>
  <Entity oe:id="other-vm">
    <PropertySection>
      <Property oe:key="com.oracle.linux.root-password" oe:value="other-vms-password"/>
    </PropertySection>
  </Entity>
</Environment>
""" % ROOT_SECRET.replace("&", "&amp;")

EXPECTED = {
    "com.oracle.linux.root-password": ROOT_SECRET,
    "com.oracle.linux.network.hostname": "web1.example.com",
    "com.oracle.linux.network.ipaddr.0": "192.0.2.10",
}


def make_iso(path: Path, files: dict, joliet: bool = True, rock_ridge: bool = True) -> Path:
    """An ISO 9660 image holding ``files`` ({name: bytes}) at its root, made by pycdlib."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="OVF ENV", joliet=3 if joliet else None,
            rock_ridge="1.09" if rock_ridge else None)
    for name, data in files.items():
        iso_name = "/" + name.upper().replace("-", "_") + ";1"
        kwargs = {"iso_path": iso_name}
        if joliet:
            kwargs["joliet_path"] = "/" + name
        if rock_ridge:
            kwargs["rr_name"] = name
        iso.add_fp(io.BytesIO(data), len(data), **kwargs)
    with open(path, "wb") as out:
        iso.write_fp(out)
    iso.close()
    return path


class TestIso:
    @pytest.mark.parametrize("joliet, rock_ridge", [(True, True), (True, False),
                                                    (False, True), (False, False)])
    def test_reads_ovf_env_from_every_iso_flavour(self, tmp_path, joliet, rock_ridge):
        iso = make_iso(tmp_path / "ovf.iso", {"ovf-env.xml": ENVIRONMENT.encode()},
                       joliet=joliet, rock_ridge=rock_ridge)
        assert read_ovf_params(str(iso)) == EXPECTED

    def test_other_files_on_the_iso_are_ignored(self, tmp_path):
        iso = make_iso(tmp_path / "ovf.iso", {"readme.txt": b"hello",
                                              "ovf-env.xml": ENVIRONMENT.encode()})
        assert read_ovf_params(str(iso)) == EXPECTED

    def test_iso_without_ovf_env(self, tmp_path):
        iso = make_iso(tmp_path / "empty.iso", {"readme.txt": b"hello"})
        with pytest.raises(OvfError, match="has no ovf-env.xml at its root"):
            read_ovf_params(str(iso))

    def test_malformed_xml_on_the_iso(self, tmp_path):
        iso = make_iso(tmp_path / "bad.iso", {"ovf-env.xml": ENVIRONMENT.encode()[:-40]})
        with pytest.raises(OvfError, match="not well-formed XML") as info:
            read_ovf_params(str(iso))
        assert ROOT_SECRET not in str(info.value)

    def test_truncated_iso(self, tmp_path):
        iso = make_iso(tmp_path / "ovf.iso", {"ovf-env.xml": ENVIRONMENT.encode()})
        cut = tmp_path / "cut.iso"
        cut.write_bytes(iso.read_bytes()[:16 * 2048 + 100])
        with pytest.raises(OvfError, match="cut.iso"):
            read_ovf_params(str(cut))


class TestPlainFile:
    def test_plain_xml_file(self, tmp_path):
        path = tmp_path / "ovf-env.xml"
        path.write_text(ENVIRONMENT)
        assert read_ovf_params(str(path)) == EXPECTED

    def test_bare_keys_in_a_product_section_are_prefixed(self, tmp_path):
        path = tmp_path / "env.xml"
        path.write_text(
            '<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" '
            'xmlns:oe="http://schemas.dmtf.org/ovf/environment/1">'
            '<PropertySection oe:class="com.oracle.linux">'
            '<Property oe:key="network.hostname" oe:value="h1"/>'
            '<Property oe:key="root-password" oe:value="p"/>'
            '<Property oe:key="com.oracle.linux.network.ipaddr.0" oe:value="192.0.2.1"/>'
            '</PropertySection></Environment>')
        assert read_ovf_params(str(path)) == {
            "com.oracle.linux.network.hostname": "h1",
            "com.oracle.linux.root-password": "p",
            "com.oracle.linux.network.ipaddr.0": "192.0.2.1",
        }

    def test_attributes_without_namespace_and_empty_value(self, tmp_path):
        path = tmp_path / "env.xml"
        path.write_text('<Environment><PropertySection>'
                        '<Property key="com.oracle.linux.network.hostname" value="h2"/>'
                        '<Property key="com.oracle.linux.network.gateway.0"/>'
                        '</PropertySection></Environment>')
        assert read_ovf_params(str(path)) == {"com.oracle.linux.network.hostname": "h2",
                                              "com.oracle.linux.network.gateway.0": ""}

    def test_ignored_keys_are_logged_without_values(self, tmp_path, caplog):
        caplog.set_level(logging.DEBUG, logger="templateconfig.ovf")
        path = tmp_path / "ovf-env.xml"
        path.write_text(ENVIRONMENT)
        read_ovf_params(str(path))
        assert "com.example.app.port" in caplog.text
        assert ROOT_SECRET not in caplog.text
        assert "other-vms-password" not in caplog.text


class TestErrors:
    def test_missing_file(self, tmp_path):
        with pytest.raises(OvfError, match="does not exist"):
            read_ovf_params(str(tmp_path / "nope.iso"))

    def test_directory(self, tmp_path):
        with pytest.raises(OvfError, match="is a directory"):
            read_ovf_params(str(tmp_path))

    def test_neither_iso_nor_xml(self, tmp_path):
        path = tmp_path / "random.bin"
        path.write_bytes(b"\x00\x01binary junk" * 5000)
        with pytest.raises(OvfError, match="neither an ISO 9660 image nor an XML file"):
            read_ovf_params(str(path))

    def test_empty_file(self, tmp_path):
        path = tmp_path / "empty"
        path.write_bytes(b"")
        with pytest.raises(OvfError, match="is empty"):
            read_ovf_params(str(path))

    def test_malformed_xml_message_has_position_not_values(self, tmp_path):
        path = tmp_path / "ovf-env.xml"
        path.write_text(ENVIRONMENT.replace("</Environment>", "</Envirnoment>"))
        with pytest.raises(OvfError) as info:
            read_ovf_params(str(path))
        message = str(info.value)
        assert "not well-formed XML" in message and "line" in message
        assert ROOT_SECRET not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__

    def test_xml_that_is_not_an_environment(self, tmp_path):
        path = tmp_path / "other.xml"
        path.write_text('<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"/>')
        with pytest.raises(OvfError, match="not an OVF environment"):
            read_ovf_params(str(path))

    def test_entity_expansion_is_refused(self, tmp_path):
        path = tmp_path / "bomb.xml"
        path.write_text('<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaaaaaaaa">'
                        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
                        '<Environment><PropertySection>'
                        '<Property key="com.oracle.linux.x" value="&b;"/>'
                        '</PropertySection></Environment>')
        with pytest.raises(OvfError, match="document type declarations are not allowed"):
            read_ovf_params(str(path))


def test_default_device():
    assert DEFAULT_OVF_DEVICE == "/dev/cdrom"


def test_pycdlib_is_imported_only_for_an_iso(tmp_path):
    """pycdlib is slow to import: reading a plain XML file must not load it."""
    path = tmp_path / "ovf-env.xml"
    path.write_text(ENVIRONMENT)
    code = ("import sys; from templateconfig.ovf import read_ovf_params; "
            "read_ovf_params(sys.argv[1]); print('pycdlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == "False"
