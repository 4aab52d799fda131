"""What every network stack is given and what it must do.

:class:`Interface` is one validated interface (the network module builds it from the
params); :class:`NetworkStack` is what a renderer offers: write its files for the
interfaces through the ``files`` object it is given
(:class:`templateconfig.modules.support.state.ModuleState`, which saves the originals
for cleanup), and activate them on a running system through
:func:`templateconfig.common.system_cmd` (recorded, not run, under ``--root``), once the
guest's network service has started.
"""
from __future__ import annotations

import ipaddress
import logging
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

from templateconfig import common

if TYPE_CHECKING:
    from templateconfig.platform.guest import FileChanges

log = logging.getLogger(__name__)

#: The first line (as a comment) of every file a stack writes.
HEADER = "Written by ovm-template-config (network module); its cleanup target undoes this."


class Interface:
    """One interface to configure, validated (see the network module).

    A plain class rather than a dataclass: ``dataclasses`` imports ``inspect``, which
    every run's start-up would pay for (the runner preloads this module).
    """

    _FIELDS = ("index", "device", "hwaddr", "mtu", "onboot", "bootproto", "ipaddr", "prefix",
               "gateway", "dns", "search", "ipv6_method", "ipv6_addresses", "ipv6_gateway",
               "ipv6_gateway_zone")

    def __init__(self, index: int, device: str, hwaddr: Optional[str] = None,
                 mtu: Optional[int] = None, onboot: bool = True,
                 bootproto: str = "dhcp",  # dhcp, static or none (none behaves as static)
                 ipaddr: Optional[str] = None, prefix: Optional[int] = None,
                 gateway: Optional[str] = None, dns: Optional[List[str]] = None,
                 search: Optional[List[str]] = None,
                 # None: the template's IPv6 stays as it is; else auto, dhcp, static, disabled
                 ipv6_method: Optional[str] = None,
                 ipv6_addresses: Optional[List[str]] = None,  # "address/prefix", static only
                 ipv6_gateway: Optional[str] = None,
                 ipv6_gateway_zone: Optional[str] = None) -> None:
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
        self.ipv6_method = ipv6_method
        self.ipv6_addresses: List[str] = ipv6_addresses if ipv6_addresses is not None else []
        self.ipv6_gateway = ipv6_gateway
        self.ipv6_gateway_zone = ipv6_gateway_zone

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
        return str(ipaddress.IPv4Network("0.0.0.0/%s" % self.prefix).netmask)

    @property
    def cidr(self) -> str:
        return "%s/%s" % (self.ipaddr, self.prefix)

    @property
    def ipv6_gateway_link_local(self) -> bool:
        return bool(self.ipv6_gateway) and ipaddress.IPv6Address(self.ipv6_gateway).is_link_local

    @property
    def ipv6_gateway_on_device(self) -> Optional[str]:
        """The IPv6 gateway as a format without the interface's context needs it: a
        link-local one with its zone (``fe80::1%eth0``), a global one as it is."""
        if self.ipv6_gateway and self.ipv6_gateway_link_local:
            return "%s%%%s" % (self.ipv6_gateway, self.device)
        return self.ipv6_gateway

    @property
    def dns_by_family(self) -> Tuple[List[str], List[str]]:
        """(IPv4 servers, IPv6 servers) of ``dns``, each in order."""
        return ([s for s in self.dns if ":" not in s], [s for s in self.dns if ":" in s])

    @property
    def disable_ipv6_key(self) -> str:
        """The kernel setting that turns IPv6 off on this device, as sysctl names it
        (a ``.`` in the device name is written ``/``)."""
        return "net.ipv6.conf.%s.disable_ipv6" % self.device.replace(".", "/")


class NetworkStack:
    """How one network stack is configured and activated."""

    name = ""
    #: The services that bring the interfaces up at boot: the network has started in
    #: this boot once one of them runs.
    services: Tuple[str, ...] = ()

    def write(self, files: FileChanges, interfaces: Sequence[Interface]) -> None:
        raise NotImplementedError

    def activate(self, interfaces: Sequence[Interface]) -> None:
        """Bring the interfaces up with their new files, unless the network has not
        started yet in this boot: a first boot configures before ``network-pre.target``
        (or, on SysV, before the network script), and the network service then brings
        them up itself, with these files; bringing them up here as well would fight it
        (ifupdown fails with "Address already assigned"). Under a sandbox root there is
        no running system to ask: the commands are recorded as usual."""
        control = common.service_control()
        if self.services and all(control.is_active(name) is False for name in self.services):
            log.info("network: %s has not started yet; it brings the interfaces up with "
                     "the new configuration", " or ".join(self.services))
            self.prepare_start(interfaces)
            return
        self.apply_now(interfaces)

    def apply_now(self, interfaces: Sequence[Interface]) -> None:
        """Bring the interfaces up with their new files on a guest whose network runs."""
        raise NotImplementedError

    @staticmethod
    def switch_ipv6(interfaces: Sequence[Interface]) -> None:
        """Turn the kernel's IPv6 off on the running system's devices whose IPv6 is
        ``disabled``, and back on for those with another IPv6 setting, for stacks that do
        not do it themselves (NetworkManager does; initscripts and ifupdown do not)."""
        for iface in interfaces:
            if iface.ipv6_method is not None:
                common.system_cmd(["sysctl", "-q", "-e", "-w", "%s=%d" % (
                    iface.disable_ipv6_key, iface.ipv6_method == "disabled")])

    def prepare_start(self, interfaces: Sequence[Interface]) -> None:
        """What the network service needs before it starts (nothing, for most stacks)."""
