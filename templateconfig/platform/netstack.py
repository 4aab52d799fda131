"""The network stacks a guest may use, and the files each one reads.

A platform picks one stack (``Platform.network_stack()``); the network module hands it
validated :class:`Interface` records and never asks which stack it is. Every stack
writes only files we own (``ifcfg-<dev>`` on EL, which the template owns anyway, our
``ovm-<dev>`` keyfile or ``interfaces.d`` snippet, ``90-ovm.yaml``) through the
``files`` object it is given (:class:`templateconfig.modules.state.ModuleState`), so the
originals are saved for cleanup, and activates the result on a running system through
:func:`templateconfig.common.system_cmd` (recorded, not run, under ``--root``).
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
from typing import List, Optional, Sequence, Tuple

from templateconfig import common
from templateconfig.platform.textedit import apply_managed, strip_managed

HEADER = "Written by ovm-template-config (network module); its cleanup target undoes this."

#: ``uuid.NAMESPACE_URL.bytes``
_NAMESPACE_URL = bytes.fromhex("6ba7b8119dad11d180b400c04fd430c8")


def _url_uuid(name: str) -> str:
    """``str(uuid.uuid5(uuid.NAMESPACE_URL, name))``, without importing :mod:`uuid` (which
    imports :mod:`platform`: 2-3 ms of every run's start-up, since the runner preloads
    what modules import)."""
    raw = bytearray(hashlib.sha1(_NAMESPACE_URL + name.encode("utf-8")).digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50  # version 5
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return "%s-%s-%s-%s-%s" % (text[:8], text[8:12], text[12:16], text[16:20], text[20:])


class Interface:
    """One interface to configure, validated (see the network module).

    A plain class rather than a dataclass: ``dataclasses`` imports ``inspect``, several
    ms of every run's start-up (the runner preloads this module).
    """

    _FIELDS = ("index", "device", "hwaddr", "mtu", "onboot", "bootproto", "ipaddr", "prefix",
               "gateway", "dns", "search")

    def __init__(self, index: int, device: str, hwaddr: Optional[str] = None,
                 mtu: Optional[int] = None, onboot: bool = True,
                 bootproto: str = "dhcp",  # dhcp, static or none (none behaves as static)
                 ipaddr: Optional[str] = None, prefix: Optional[int] = None,
                 gateway: Optional[str] = None, dns: Optional[List[str]] = None,
                 search: Optional[List[str]] = None) -> None:
        self.index = index
        self.device = device
        self.hwaddr = hwaddr
        self.mtu = mtu
        self.onboot = onboot
        self.bootproto = bootproto
        self.ipaddr = ipaddr
        self.prefix = prefix
        self.gateway = gateway
        self.dns: List[str] = dns if dns is not None else []
        self.search: List[str] = search if search is not None else []

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, f) == getattr(other, f) for f in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, as the dataclass was

    def __repr__(self) -> str:
        return "Interface(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self._FIELDS)

    @property
    def static(self) -> bool:
        return self.bootproto != "dhcp"

    @property
    def netmask(self) -> str:
        return str(ipaddress.IPv4Network("0.0.0.0/%d" % self.prefix).netmask)

    @property
    def cidr(self) -> str:
        return "%s/%d" % (self.ipaddr, self.prefix)


class NetworkStack:
    """How one network stack is configured and activated."""

    name = ""

    def write(self, files, interfaces: Sequence[Interface]) -> None:
        raise NotImplementedError

    def activate(self, interfaces: Sequence[Interface]) -> None:
        raise NotImplementedError


# --- EL: /etc/sysconfig/network-scripts/ifcfg-<dev> ------------------------------------------

class IfcfgStack(NetworkStack):
    """initscripts' ifcfg files (EL5-8), activated by NetworkManager or the network service."""

    name = "ifcfg"

    def __init__(self, directory: str = "/etc/sysconfig/network-scripts",
                 networkmanager: bool = False) -> None:
        self.directory = directory
        self.networkmanager = networkmanager

    def path(self, iface: Interface) -> str:
        return "%s/ifcfg-%s" % (self.directory, iface.device)

    @staticmethod
    def render(iface: Interface) -> str:
        values: List[Tuple[str, str]] = [("DEVICE", iface.device), ("TYPE", "Ethernet")]
        if iface.hwaddr:
            values.append(("HWADDR", iface.hwaddr))
        values.append(("ONBOOT", "yes" if iface.onboot else "no"))
        values.append(("BOOTPROTO", iface.bootproto))
        if iface.static:
            values += [("IPADDR", iface.ipaddr), ("NETMASK", iface.netmask)]
            if iface.gateway:
                values.append(("GATEWAY", iface.gateway))
            for number, server in enumerate(iface.dns, 1):
                values.append(("DNS%d" % number, server))
        if iface.mtu:
            values.append(("MTU", str(iface.mtu)))
        if iface.search:
            values.append(("DOMAIN", " ".join(iface.search)))
        return "# %s\n" % HEADER + "".join(
            "%s=%s\n" % (name, common.quote_value(value)) for name, value in values)

    def write(self, files, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface), mode=0o644)

    def activate(self, interfaces: Sequence[Interface]) -> None:
        if self.networkmanager:
            common.system_cmd(["nmcli", "connection", "reload"])
            for iface in interfaces:
                if iface.onboot:
                    common.system_cmd(["nmcli", "connection", "up", "ifname", iface.device])
        else:
            common.service_control().restart("network")


# --- NetworkManager keyfiles ----------------------------------------------------------------------

class KeyfileStack(NetworkStack):
    """NetworkManager keyfiles (EL9+, and wherever NetworkManager is keyfile-only)."""

    name = "keyfile"

    def __init__(self, directory: str = "/etc/NetworkManager/system-connections") -> None:
        self.directory = directory

    @staticmethod
    def connection_id(iface: Interface) -> str:
        return "ovm-%s" % iface.device

    def path(self, iface: Interface) -> str:
        return "%s/%s.nmconnection" % (self.directory, self.connection_id(iface))

    @classmethod
    def render(cls, iface: Interface) -> str:
        ident = cls.connection_id(iface)
        lines = ["# %s" % HEADER, "[connection]", "id=%s" % ident,
                 "uuid=%s" % _url_uuid("ovm-template-config:" + ident),
                 "type=ethernet", "interface-name=%s" % iface.device,
                 "autoconnect=%s" % ("true" if iface.onboot else "false"),
                 # Wins over the template's own profile for the same device.
                 "autoconnect-priority=100", ""]
        ethernet = []
        if iface.hwaddr:
            ethernet.append("mac-address=%s" % iface.hwaddr.upper())
        if iface.mtu:
            ethernet.append("mtu=%d" % iface.mtu)
        if ethernet:
            lines += ["[ethernet]"] + ethernet + [""]
        lines.append("[ipv4]")
        if iface.static:
            lines.append("method=manual")
            address = "address1=%s" % iface.cidr
            if iface.gateway:
                address += ",%s" % iface.gateway
            lines.append(address)
            if iface.dns:
                lines.append("dns=%s;" % ";".join(iface.dns))
        else:
            lines.append("method=auto")
        if iface.search:
            lines.append("dns-search=%s;" % ";".join(iface.search))
        lines += ["", "[ipv6]", "method=auto", ""]
        return "\n".join(lines)

    def write(self, files, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface), mode=0o600)

    def activate(self, interfaces: Sequence[Interface]) -> None:
        common.system_cmd(["nmcli", "connection", "reload"])
        for iface in interfaces:
            if iface.onboot:
                common.system_cmd(["nmcli", "connection", "up", "id", self.connection_id(iface)])


# --- Debian: ifupdown ----------------------------------------------------------------------------------

_STANZAS = ("iface", "auto", "mapping", "source", "source-directory", "rename")


class IfupdownStack(NetworkStack):
    """ifupdown: our ``interfaces.d/ovm-<dev>``; the template's stanza for the same
    device in ``/etc/network/interfaces`` is disabled (marked, undone by cleanup)."""

    name = "ifupdown"

    def __init__(self, interfaces_file: str = "/etc/network/interfaces",
                 directory: str = "/etc/network/interfaces.d") -> None:
        self.interfaces_file = interfaces_file
        self.directory = directory

    def path(self, iface: Interface) -> str:
        return "%s/ovm-%s" % (self.directory, iface.device)

    @staticmethod
    def render(iface: Interface) -> str:
        lines = ["# %s" % HEADER]
        if iface.onboot:
            lines.append("auto %s" % iface.device)
        lines.append("iface %s inet %s" % (iface.device, "static" if iface.static else "dhcp"))
        if iface.static:
            lines.append("    address %s" % iface.cidr)
            if iface.gateway:
                lines.append("    gateway %s" % iface.gateway)
            if iface.dns:
                lines.append("    dns-nameservers %s" % " ".join(iface.dns))
        if iface.mtu:
            lines.append("    mtu %d" % iface.mtu)
        if iface.search:
            lines.append("    dns-search %s" % " ".join(iface.search))
        return "\n".join(lines) + "\n"

    def _disable_template_stanzas(self, text: str, devices: Sequence[str]) -> str:
        """Mark the template's own ``auto``/``allow-*``/``iface DEV inet`` lines disabled."""
        state = {"in_stanza": False}

        def disable(line: str) -> bool:
            words = line.split()
            if not words or words[0].startswith("#"):
                return False
            first = words[0]
            if first == "iface" or first in _STANZAS or first.startswith("allow-"):
                state["in_stanza"] = (first == "iface" and len(words) > 2
                                      and words[1] in devices and words[2] == "inet")
                if state["in_stanza"]:
                    return True
                return ((first == "auto" or first.startswith("allow-"))
                        and len(words) == 2 and words[1] in devices)
            return state["in_stanza"] and line[:1].isspace()

        base = strip_managed(text, "network")
        sourced = any(line.split()[:1] in (["source"], ["source-directory"])
                      and self.directory in line for line in base.splitlines())
        block = [] if sourced else ["source %s/ovm-*" % self.directory]
        return apply_managed(text, "network", block, disable=disable)

    def write(self, files, interfaces: Sequence[Interface]) -> None:
        original = common.read_file(self.interfaces_file)
        if original is not None:
            text = self._disable_template_stanzas(original, [i.device for i in interfaces])
            files.write_file(self.interfaces_file, text)
        for iface in interfaces:
            files.write_file(self.path(iface), self.render(iface), mode=0o644)

    def activate(self, interfaces: Sequence[Interface]) -> None:
        for iface in interfaces:
            common.system_cmd(["ifdown", "--force", iface.device], success_return_code=(0, 1))
            if iface.onboot:
                common.system_cmd(["ifup", iface.device])


# --- Ubuntu: netplan ------------------------------------------------------------------------------------

class NetplanStack(NetworkStack):
    """netplan: one file ``/etc/netplan/90-ovm.yaml`` for all interfaces (merged over the
    template's files, later names win)."""

    name = "netplan"

    def __init__(self, path: str = "/etc/netplan/90-ovm.yaml") -> None:
        self.path = path

    @staticmethod
    def _q(value: str) -> str:
        return json.dumps(value)  # a JSON string is a valid YAML scalar

    def render(self, interfaces: Sequence[Interface]) -> str:
        q = self._q
        lines = ["# %s" % HEADER, "network:", "  version: 2", "  ethernets:"]
        for iface in interfaces:
            lines.append("    %s:" % q(iface.device))
            if iface.hwaddr:
                lines += ["      match:", "        macaddress: %s" % q(iface.hwaddr.lower())]
            if not iface.onboot:
                lines.append("      activation-mode: off")
            lines.append("      dhcp4: %s" % ("false" if iface.static else "true"))
            if iface.static:
                lines.append("      addresses: [%s]" % q(iface.cidr))
                if iface.gateway:
                    lines += ["      routes:", "        - to: default",
                              "          via: %s" % q(iface.gateway)]
            if iface.mtu:
                lines.append("      mtu: %d" % iface.mtu)
            if (iface.static and iface.dns) or iface.search:
                lines.append("      nameservers:")
                if iface.static and iface.dns:
                    lines.append("        addresses: [%s]" % ", ".join(q(s) for s in iface.dns))
                if iface.search:
                    lines.append("        search: [%s]" % ", ".join(q(s) for s in iface.search))
        return "\n".join(lines) + "\n"

    def write(self, files, interfaces: Sequence[Interface]) -> None:
        files.write_file(self.path, self.render(interfaces), mode=0o600)

    def activate(self, interfaces: Sequence[Interface]) -> None:
        common.system_cmd(["netplan", "apply"])

