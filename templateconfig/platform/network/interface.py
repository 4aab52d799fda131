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
        return str(ipaddress.IPv4Network("0.0.0.0/%s" % self.prefix).netmask)

    @property
    def cidr(self) -> str:
        return "%s/%s" % (self.ipaddr, self.prefix)


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

    def prepare_start(self, interfaces: Sequence[Interface]) -> None:
        """What the network service needs before it starts (nothing, for most stacks)."""
