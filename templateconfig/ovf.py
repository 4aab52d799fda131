"""``--ovf-transport-iso``: template parameters from an OVF environment document.

A hypervisor using the OVF "iso" transport attaches a CD image whose root holds
``ovf-env.xml`` (DMTF DSP0243, namespace ``http://schemas.dmtf.org/ovf/environment/1``)::

    <Environment xmlns="http://schemas.dmtf.org/ovf/environment/1"
                 xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="vm1">
      <PropertySection>
        <Property oe:key="com.oracle.linux.network.hostname" oe:value="web1"/>
        <Property oe:key="com.oracle.linux.root-password" oe:value="..."/>
      </PropertySection>
      <Entity oe:id="com.oracle.linux">
        <PropertySection>
          <Property oe:key="network.ipaddr.0" oe:value="192.0.2.10"/>
        </PropertySection>
      </Entity>
    </Environment>

:func:`read_ovf_params` reads that document from an ISO 9660 image or block device (with
pycdlib; the Joliet, Rock Ridge and plain ISO 9660 names ``ovf-env.xml``,
``OVF_ENV.XML;1`` ... are all accepted) or from a plain XML file, and maps properties to
template-config keys exactly so:

1. A property key starting ``com.oracle.linux.`` is kept as it is, wherever it appears:
   ``com.oracle.linux.root-password`` -> ``com.oracle.linux.root-password``.
2. A bare key (``network.hostname``, ``root-password``) is taken only inside a
   ``com.oracle.linux`` scope and becomes ``com.oracle.linux.<key>``
   (``com.oracle.linux.network.hostname``). A scope is com.oracle.linux when the
   ``PropertySection`` or an enclosing ``Entity`` has an attribute, in any namespace,
   named ``class``, ``id`` or ``instance`` whose value is ``com.oracle.linux``.
3. Every other property (another product's, or a bare key outside such a scope) is
   ignored; the ignored keys (never their values) are logged at INFO.
4. Properties in an ``Entity`` that is not a com.oracle.linux scope describe *other*
   virtual systems of a collection and are ignored, whatever their keys.
5. Values are taken verbatim (``oe:value``); a property without ``oe:value`` maps to
   "". When a key occurs twice, the environment's own (top-level) ``PropertySection``
   wins over an Entity; within one scope the last occurrence wins. Both are logged.

The ``oe`` attributes are accepted with or without their namespace, since hand-written
environments often omit it. Errors are :class:`OvfError`; their messages name the file
and what is wrong, never a property value (values may be passwords).
"""
from __future__ import annotations

import io
import logging
import os
import stat
import xml.etree.ElementTree as ET
import xml.parsers.expat
from typing import Any, Dict, Iterator, List, Optional, Tuple

from templateconfig.errors import TemplateConfigError

log = logging.getLogger(__name__)

#: Where the OVF ISO appears when ``--ovf-transport-iso`` is given no argument.
DEFAULT_OVF_DEVICE = "/dev/cdrom"

OVF_ENV_NS = "http://schemas.dmtf.org/ovf/environment/1"
PRODUCT = "com.oracle.linux"
KEY_PREFIX = PRODUCT + "."
OVF_ENV_NAME = "ovf-env.xml"

#: An OVF environment is a few kilobytes; refuse to read anything absurdly large.
MAX_ENV_BYTES = 16 * 1024 * 1024

_ISO_SECTOR = 2048
_ISO_MAGIC_OFFSET = 16 * _ISO_SECTOR + 1  # primary volume descriptor: "\x01CD001"


class OvfError(TemplateConfigError):
    """The OVF environment could not be read; the message says which file and why."""


def read_ovf_params(path: str = DEFAULT_OVF_DEVICE) -> Dict[str, str]:
    """The ``com.oracle.linux`` parameters of the OVF environment at ``path``.

    ``path`` is an ISO 9660 image or a block device holding ``ovf-env.xml`` at its root,
    or the ``ovf-env.xml`` file itself. Returns ``{template-config key: value}`` mapped as
    the module docstring describes. Raises :class:`OvfError`.
    """
    document = _read_document(path)
    return _parse_environment(document, path)


# --- reading the document -------------------------------------------------------------

def _read_document(path: str) -> bytes:
    try:
        with open(path, "rb") as source:
            mode = os.fstat(source.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise OvfError("%s is a directory, not an ISO image, a device or an %s file"
                               % (path, OVF_ENV_NAME))
            head = source.read(_ISO_MAGIC_OFFSET + 5)
            if _looks_like_iso(head):
                return _read_from_iso(source, path)
            if _looks_like_xml(head):
                source.seek(0)
                data = source.read(MAX_ENV_BYTES + 1)
                if len(data) > MAX_ENV_BYTES:
                    raise OvfError("%s is larger than %d bytes; not an OVF environment"
                                   % (path, MAX_ENV_BYTES))
                return data
    except FileNotFoundError:
        raise OvfError("%s does not exist (give the OVF ISO image, its device, or an %s file)"
                       % (path, OVF_ENV_NAME)) from None
    except IsADirectoryError:
        raise OvfError("%s is a directory, not an ISO image, a device or an %s file"
                       % (path, OVF_ENV_NAME)) from None
    except PermissionError:
        raise OvfError("%s cannot be read: permission denied" % path) from None
    except OSError as exc:
        # ENOMEDIUM (empty CD drive), ENXIO, EIO ...: strerror carries no file content.
        raise OvfError("%s cannot be read: %s" % (path, exc.strerror or exc.__class__.__name__)) \
            from None
    if not head:
        raise OvfError("%s is empty: neither an ISO 9660 image nor an OVF environment" % path)
    raise OvfError("%s is neither an ISO 9660 image nor an XML file" % path)


def _looks_like_iso(head: bytes) -> bool:
    return head[_ISO_MAGIC_OFFSET:_ISO_MAGIC_OFFSET + 5] == b"CD001"


def _looks_like_xml(head: bytes) -> bool:
    text = head[:512]
    for bom in (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"):
        if text.startswith(bom):
            return True
    return text.lstrip().startswith(b"<")


def _normalized_name(name: str) -> str:
    """``OVF_ENV.XML;1`` / ``ovf-env.xml`` / ``OVF-ENV.XML.`` -> ``ovf-env.xml``."""
    name = name.split(";", 1)[0].rstrip(".").lower()
    return name.replace("_", "-")


def _read_from_iso(source: io.BufferedReader, path: str) -> bytes:
    import pycdlib  # slow to import and needed only here
    from pycdlib.pycdlibexception import PyCdlibException

    iso = pycdlib.PyCdlib()
    try:
        source.seek(0)
        iso.open_fp(source)
    except PyCdlibException as exc:
        raise OvfError("%s looks like an ISO 9660 image but cannot be read: %s" % (path, exc)) \
            from None
    try:
        for facade, record, name in _root_files(iso):
            if _normalized_name(name) != OVF_ENV_NAME:
                continue
            size = record.get_data_length()
            if size > MAX_ENV_BYTES:
                raise OvfError("%s: %s on the ISO is larger than %d bytes"
                               % (path, name, MAX_ENV_BYTES))
            out = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(out, **{facade: "/" + name})
            except PyCdlibException as exc:
                raise OvfError("%s: cannot read %s from the ISO: %s" % (path, name, exc)) \
                    from None
            log.debug("read %s (%d bytes) from %s via %s", name, size, path, facade)
            return out.getvalue()
        raise OvfError("%s is an ISO 9660 image but has no %s at its root"
                       % (path, OVF_ENV_NAME))
    finally:
        try:
            iso.close()
        except PyCdlibException:  # pragma: no cover - closing a read-only image
            pass


def _root_files(iso) -> Iterator[Tuple[str, Any, str]]:
    """(path keyword, record, name) for files in the ISO's root, Joliet, Rock Ridge, ISO."""
    facades: List[str] = []
    if iso.has_joliet():
        facades.append("joliet_path")
    if iso.has_rock_ridge():
        facades.append("rr_path")
    facades.append("iso_path")
    for facade in facades:
        for record in iso.list_children(**{facade: "/"}):
            if record is None or record.is_dot() or record.is_dotdot() or record.is_dir():
                continue
            if facade == "rr_path":
                if record.rock_ridge is None:
                    continue
                name = record.rock_ridge.name().decode("utf-8", "replace")
            elif facade == "joliet_path":
                name = record.file_identifier().decode("utf-16_be", "replace")
            else:
                name = record.file_identifier().decode("ascii", "replace")
            yield facade, record, name


# --- parsing the environment ----------------------------------------------------------

def _refuse_dtd(*_args) -> None:
    raise ValueError("document type declarations are not allowed")


def _check_no_dtd(document: bytes) -> None:
    """Refuse DTDs (entity expansion bombs, external entities) before ElementTree parses."""
    parser = xml.parsers.expat.ParserCreate()
    parser.StartDoctypeDeclHandler = _refuse_dtd
    parser.EntityDeclHandler = _refuse_dtd
    parser.Parse(document, True)


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _oe_attr(element: ET.Element, name: str) -> Optional[str]:
    value = element.get("{%s}%s" % (OVF_ENV_NS, name))
    return element.get(name) if value is None else value


def _is_product_scope(element: ET.Element) -> bool:
    return any(_local(attr) in ("class", "id", "instance") and value.strip() == PRODUCT
               for attr, value in element.attrib.items())


def _parse_environment(document: bytes, path: str) -> Dict[str, str]:
    try:
        _check_no_dtd(document)
        root = ET.fromstring(document)
    except xml.parsers.expat.ExpatError as exc:
        raise OvfError("%s is not well-formed XML: %s"
                       % (path, xml.parsers.expat.ErrorString(exc.code)) +
                       " (line %d, column %d)" % (exc.lineno, exc.offset)) from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise OvfError("%s is not well-formed XML (line %d, column %d)" % (path, line, column)) \
            from None
    except ValueError as exc:
        raise OvfError("%s: %s" % (path, exc)) from None
    if _local(root.tag) != "Environment":
        raise OvfError("%s is XML but not an OVF environment (root element <%s>, expected "
                       "<Environment> in namespace %s)" % (path, _local(root.tag), OVF_ENV_NS))

    own: Dict[str, str] = {}
    from_entities: Dict[str, str] = {}
    ignored: List[str] = []
    _collect(root, False, own, ignored, path, top_level=True)
    for entity in root.iter():
        if _local(entity.tag) != "Entity":
            continue
        if _is_product_scope(entity):
            _collect(entity, True, from_entities, ignored, path, top_level=False)
        else:
            for section in _sections(entity):
                ignored.extend(_oe_attr(p, "key") or "?" for p in _properties(section))
    params = dict(from_entities)
    for key in sorted(set(own) & set(from_entities)):
        log.info("%s: %s is set both at top level and in an Entity; the top level wins",
                 path, key)
    params.update(own)
    if ignored:
        log.info("%s: ignored %d propert%s outside the %s product section: %s", path,
                 len(ignored), "y" if len(ignored) == 1 else "ies", PRODUCT, ", ".join(ignored))
    log.debug("%s: %d parameter(s) from the OVF environment: %s", path, len(params),
              ", ".join(sorted(params)))
    return params


def _sections(scope: ET.Element) -> List[ET.Element]:
    """PropertySections directly in ``scope`` (an Environment or an Entity)."""
    return [child for child in scope if _local(child.tag) == "PropertySection"]


def _properties(section: ET.Element) -> List[ET.Element]:
    return [child for child in section if _local(child.tag) == "Property"]


def _collect(scope: ET.Element, scope_is_product: bool, into: Dict[str, str],
             ignored: List[str], path: str, top_level: bool) -> None:
    for section in _sections(scope):
        in_product = scope_is_product or _is_product_scope(section)
        for prop in _properties(section):
            key = _oe_attr(prop, "key")
            if key is None or not key.strip():
                log.warning("%s: a Property without oe:key was ignored", path)
                continue
            key = key.strip()
            if key.startswith(KEY_PREFIX):
                mapped = key
            elif in_product:
                mapped = KEY_PREFIX + key
            else:
                ignored.append(key)
                continue
            if mapped in into:
                log.info("%s: %s occurs more than once%s; the last one wins", path, mapped,
                         "" if top_level else " in an Entity")
            value = _oe_attr(prop, "value")
            into[mapped] = "" if value is None else value


__all__ = ["DEFAULT_OVF_DEVICE", "OvfError", "read_ovf_params"]
