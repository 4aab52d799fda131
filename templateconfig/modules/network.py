"""network: host name, /etc/hosts entries and interfaces (Oracle's ``network`` module, 50).

Interfaces ``N = 0, 1, ...`` are named by ``device.N`` or found by ``hwaddr.N`` (the MAC
address; the module waits a bounded time for a NIC that has not appeared yet). Each is
``dhcp`` or ``static`` (``none`` behaves as ``static``) with an IPv4 address, netmask
(dotted or prefix length), gateway, MTU, DNS servers and search domains. IPv6 is
``ipv6-bootproto.N`` (``auto``, ``dhcp``, ``static`` with ``ipv6addr.N`` and
``ipv6gateway.N``, or ``disabled``); without it the template's IPv6 settings for the
device stay as they are, also in a file the module writes whole (what each stack writes:
docs/keys.md).

The files written depend on the guest's network stack, chosen by the platform
(ifcfg, NetworkManager keyfile, ifupdown, netplan: ``templateconfig.platform.network``),
and DNS settings go where the guest's resolver reads them (the stack's own files, or
``/etc/resolv.conf`` itself where nothing manages it). The change is activated on a
running system once its network service runs; during a first boot that service starts
after the configuration and brings the interfaces up itself. ``/etc/hosts`` gets the
``host.N`` lines in a marked block (and, on a guest without the file, the distribution's
localhost lines). Applied once: a later boot with the same params does nothing; new or
changed keys apply again. ``cleanup`` restores every file configure changed and removes
those it created.

Environment: ``OVM_TEMPLATE_CONFIG_NIC_WAIT`` (seconds, default 10) bounds the wait for
a NIC named by its hardware address.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import sys
import time
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple

from templateconfig import common
from templateconfig.modules.support import validators
from templateconfig.modules.support.spec import CheckContext, Key, ModuleSpec, ValidationError
from templateconfig.modules.support.state import ModuleState, pending_params
from templateconfig.platform import detect
from templateconfig.platform.network import Interface
from templateconfig.platform.textedit import apply_managed

log = logging.getLogger(__name__)

P = "com.oracle.linux.network."
HOSTNAME = P + "hostname"
HOST = P + "host.{n}"
DEVICE = P + "device.{n}"
HWADDR = P + "hwaddr.{n}"
MTU = P + "mtu.{n}"
ONBOOT = P + "onboot.{n}"
BOOTPROTO = P + "bootproto.{n}"
IPADDR = P + "ipaddr.{n}"
NETMASK = P + "netmask.{n}"
GATEWAY = P + "gateway.{n}"
DNS_SERVERS = P + "dns-servers.{n}"
DNS_SEARCH = P + "dns-search-domains.{n}"
IPV6_BOOTPROTO = P + "ipv6-bootproto.{n}"
IPV6ADDR = P + "ipv6addr.{n}"
IPV6GATEWAY = P + "ipv6gateway.{n}"
INTERFACE_KEYS = (DEVICE, HWADDR, MTU, ONBOOT, BOOTPROTO, IPADDR, NETMASK, GATEWAY,
                  DNS_SERVERS, DNS_SEARCH, IPV6_BOOTPROTO, IPV6ADDR, IPV6GATEWAY)
STATIC_ONLY = (IPADDR, NETMASK, GATEWAY, DNS_SERVERS)
IPV6_METHODS = ("auto", "dhcp", "static", "disabled")

WAIT_ENV = "OVM_TEMPLATE_CONFIG_NIC_WAIT"
DEFAULT_WAIT = 10.0
SYS_CLASS_NET = "/sys/class/net"

HOST_NAME_MAX = 64
_DEVICE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}\Z")


def check_device(value: str) -> None:
    if not _DEVICE.match(value) or value in (".", ".."):
        raise ValueError("not a network device name (1-15 letters, digits or _.:@-)")


def check_hostname(value: str) -> None:
    """RFC 1123, and at most 64 characters: the kernel's limit for the host name."""
    validators.hostname(value)
    if len(value.rstrip(".")) > HOST_NAME_MAX:
        raise ValueError("longer than %d characters (the kernel's host name limit)" % HOST_NAME_MAX)


def check_hosts_line(value: str) -> None:
    """An /etc/hosts line: an IP address and one or more host names."""
    fields = value.split()
    if len(fields) < 2:
        raise ValueError("expected an IP address followed by host names")
    validators.ip_address(fields[0])
    for name in fields[1:]:
        validators.hostname(name)


def _ipv6_host(text: str, ipv4_hint: str) -> ipaddress.IPv6Address:
    """``text`` as an IPv6 address a host or router may have (no zone), or ValueError."""
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        pass
    else:
        raise ValueError("an IPv4 address: " + ipv4_hint)
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError("not an IPv6 address") from None
    if address.ipv4_mapped is not None:
        raise ValueError("an IPv4-mapped address: " + ipv4_hint)
    for kind, bad in (("a multicast address", address.is_multicast),
                      ("the unspecified address (::)", address.is_unspecified),
                      ("the loopback address (::1)", address.is_loopback)):
        if bad:
            raise ValueError("%s, not one that a host or router has" % kind)
    return address


def check_ipv6_address(value: str) -> None:
    """One IPv6 address with its prefix length (``2001:db8::10/64``), prefix 1-128."""
    text, slash, prefix = value.partition("/")
    if "%" in text:
        raise ValueError("an interface address takes no zone (%...)")
    if not slash:
        raise ValueError("expected an IPv6 address with its prefix length, e.g. 2001:db8::10/64")
    _ipv6_host(text, "IPv4 goes in ipaddr.N and netmask.N")
    if not (prefix.isascii() and prefix.isdigit()) or not 1 <= int(prefix) <= 128:
        raise ValueError("the prefix length must be 1-128")


def ipv6_address_list(value: str) -> List[str]:
    """The validated addresses of an ``ipv6addr.N`` value, compressed (``2001:db8::10/64``)."""
    out = []
    for item in validators.split_list(value):
        text, _, prefix = item.partition("/")
        out.append("%s/%d" % (ipaddress.IPv6Address(text).compressed, int(prefix)))
    return out


def check_ipv6_addresses(value: str) -> None:
    """``address/prefix`` items, comma-separated, each once."""
    validators.comma_list(check_ipv6_address)(value)
    addresses = [item.split("/")[0] for item in ipv6_address_list(value)]
    for position, address in enumerate(addresses, 1):
        if address in addresses[:position - 1]:
            raise ValueError("item %d: the address is listed twice" % position)


def check_ipv6_gateway(value: str) -> None:
    """An IPv6 router address; a link-local one may name its zone (``fe80::1%eth0``)."""
    text, percent, zone = value.strip().partition("%")
    if "/" in text:
        raise ValueError("a gateway is an address without a prefix length")
    address = _ipv6_host(text, "the IPv4 gateway is gateway.N")
    if percent and not address.is_link_local:
        raise ValueError("only a link-local gateway (fe80::/10) takes a zone (%device)")
    if percent and not zone:
        raise ValueError("an empty zone after %")


class ChoiceKey(Key):
    """A key that offers ``choices`` but also accepts ``aliases`` (any case)."""

    def __init__(self, key: str, description: str, aliases: Sequence[str] = (), **kwargs) -> None:
        super().__init__(key, description, **kwargs)
        self.aliases = tuple(aliases)

    def check(self, name: str, value: str, secret: bool = False) -> Optional[str]:
        if value.strip().lower() in tuple(self.choices or ()) + self.aliases:
            return None
        return super().check(name, value, secret)


_STATIC = (BOOTPROTO, ["static", "none"])
_IPV6_STATIC = (IPV6_BOOTPROTO, ["static"])

SPEC = ModuleSpec(
    "network", {"configure": 50, "cleanup": 50}, "Configure the host name and network interfaces.",
    enumerate_count=4,
    keys=[
        Key(HOSTNAME, "Host name (e.g. vm1.example.com).", validate=check_hostname),
        Key(HOST, "A line for /etc/hosts: an IP address and host names.", hidden=True,
            validate=check_hosts_line),
        Key(DEVICE, "Network device of interface {n} (e.g. eth0).", validate=check_device),
        Key(HWADDR, "Hardware (MAC) address of interface {n}.", hidden=True,
            validate=validators.mac_address),
        Key(MTU, "MTU of interface {n}.", hidden=True, validate=validators.integer(68, 65535)),
        ChoiceKey(ONBOOT, "Activate interface {n} at boot: yes or no.", depends=DEVICE,
                  choices=["yes", "no"],
                  aliases=validators.BOOLEAN_TRUE + validators.BOOLEAN_FALSE),
        ChoiceKey(BOOTPROTO, "Boot protocol of interface {n}: dhcp or static.", depends=DEVICE,
                  choices=["dhcp", "static"], aliases=("none",)),
        Key(IPADDR, "IPv4 address of interface {n}.", requires=_STATIC, validate=validators.ipv4),
        Key(NETMASK, "Netmask of interface {n} (255.255.255.0, or a prefix length such as 24).",
            requires=_STATIC, validate=validators.netmask),
        Key(GATEWAY, "Default gateway of interface {n}.", requires=_STATIC,
            validate=validators.ipv4),
        Key(DNS_SERVERS, "DNS servers of interface {n}, comma-separated.", requires=_STATIC,
            validate=validators.comma_list(validators.ip_address)),
        Key(DNS_SEARCH, "DNS search domains of interface {n}, comma-separated.", hidden=True,
            validate=validators.comma_list(validators.hostname)),
        ChoiceKey(IPV6_BOOTPROTO, "IPv6 of interface {n}: auto, dhcp, static or disabled "
                  "(unset: as the template has it).", depends=DEVICE, choices=IPV6_METHODS),
        Key(IPV6ADDR, "IPv6 addresses of interface {n} with prefix lengths, comma-separated "
            "(e.g. 2001:db8::10/64).", requires=_IPV6_STATIC, validate=check_ipv6_addresses),
        Key(IPV6GATEWAY, "IPv6 default gateway of interface {n}.", requires=_IPV6_STATIC,
            validate=check_ipv6_gateway),
    ])


# --- finding a device by its hardware address -----------------------------------------------

def _normal_mac(mac) -> str:
    if isinstance(mac, bytes):
        mac = mac.decode("ascii", "replace")
    return mac.strip().lower().replace("-", ":")


def scan_sysfs(mac: str) -> Optional[str]:
    """The device under the root's ``/sys/class/net`` whose address is ``mac``."""
    directory = common.root_path(SYS_CLASS_NET)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return None
    for name in names:
        address = common.read_file("%s/%s/address" % (SYS_CLASS_NET, name))
        if address is not None and _normal_mac(address) == _normal_mac(mac):
            return name
    return None


def _udev_monitor():
    """A started pyudev monitor of ``net`` events, or None (no pyudev, no netlink)."""
    try:
        import pyudev  # lazily: only needed when a NIC is missing
        monitor = pyudev.Monitor.from_netlink(pyudev.Context())
        monitor.filter_by("net")
        monitor.start()
        return monitor
    except Exception as exc:  # ImportError, OSError from netlink, missing libudev
        log.debug("no udev monitor (%s); polling %s instead", exc, SYS_CLASS_NET)
        return None


def find_device_by_mac(mac: str, timeout: float, use_udev: Optional[bool] = None) -> Optional[str]:
    """The name of the NIC with hardware address ``mac``, waiting up to ``timeout`` s
    (see :func:`wait_for_device`)."""
    def from_udev(device) -> Optional[str]:
        address = device.attributes.get("address")
        if address is not None and _normal_mac(address) == _normal_mac(mac):
            return device.sys_name
        return None
    return wait_for_device(lambda: scan_sysfs(mac), from_udev, timeout,
                           "with hardware address %s" % mac, use_udev)


def devices_known() -> bool:
    """True if the guest's network devices can be known: on the running system always
    (the kernel says), under a sandbox root only if it has ``/sys/class/net``."""
    return not common.is_sandbox() or os.path.isdir(common.root_path(SYS_CLASS_NET))


def device_exists(name: str) -> bool:
    """Whether the guest has a network device ``name``: on the running system the
    kernel's answer for this network namespace (a container's ``/sys`` may show the
    host's devices), under a sandbox root its ``/sys/class/net``."""
    if not common.is_sandbox():
        import socket

        try:
            socket.if_nametoindex(name)
            return True
        except OSError:
            return False
    return os.path.lexists(common.root_path("%s/%s" % (SYS_CLASS_NET, name)))


def find_device_by_name(name: str, timeout: float,
                        use_udev: Optional[bool] = None) -> Optional[str]:
    """``name`` once the guest has that device (:func:`device_exists`), waiting up to
    ``timeout`` s (see :func:`wait_for_device`); None if it never appeared."""
    return wait_for_device(lambda: name if device_exists(name) else None,
                           lambda device: name if device.sys_name == name else None,
                           timeout, "named %s" % name, use_udev)


def wait_for_device(scan: Callable[[], Optional[str]],
                    from_udev: Callable[[Any], Optional[str]], timeout: float,
                    what: str, use_udev: Optional[bool] = None) -> Optional[str]:
    """The device ``scan()`` finds in sysfs, waiting up to ``timeout`` s for it to appear.

    While it is missing, waits for udev ``net`` events (pyudev, on the real root only;
    ``from_udev(device)`` names the device an event is about, if it is the one) and
    re-reads sysfs on each event or every 0.2 s without events, so a missing udev
    daemon only costs latency.
    """
    found = scan()
    if found or timeout <= 0:
        return found
    if use_udev is None:
        use_udev = not common.is_sandbox()
    monitor = _udev_monitor() if use_udev else None
    # a note, not a warning: the device usually comes
    sys.stderr.write("network: waiting up to %g s for a network device %s\n" % (timeout, what))
    sys.stderr.flush()
    deadline = time.monotonic() + timeout
    while True:
        found = scan()
        if found:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if monitor is None:
            time.sleep(min(remaining, 0.2))
            continue
        device = monitor.poll(timeout=min(remaining, 1.0))
        if device is not None and device.action in ("add", "move", "change", None):
            named = from_udev(device)
            if named:
                return named


def _wait_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT)))
    except ValueError:
        return DEFAULT_WAIT


# --- from params to interfaces ----------------------------------------------------------------

def _key(pattern: str, n: int) -> str:
    return pattern.format(n=n)


def parse_interfaces(params: Dict[str, str]) -> List[Interface]:
    """The interfaces the params describe, checked across keys; ValidationError if not.

    Devices given only by hardware address are left with ``device == ""``.
    """
    interfaces, problems = _parse_interfaces(params)
    if problems:
        raise ValidationError(problems)
    return interfaces


def _parse_interfaces(params: Dict[str, str]) -> Tuple[List[Interface], List[str]]:
    """(the interfaces that are complete, the problems of the others and across them)."""
    problems: List[str] = []
    interfaces = []
    for n in SPEC.indices(params, *INTERFACE_KEYS):
        get = lambda pattern: params.get(_key(pattern, n))  # noqa: E731
        device, hwaddr = get(DEVICE), get(HWADDR)
        if not device and not hwaddr:
            settings = sorted(k for k in params if SPEC.indices({k: ""}, *INTERFACE_KEYS) == [n])
            problems.append("%s: missing: interface %d has settings (%s) but neither %s nor %s"
                            % (_key(DEVICE, n), n, ", ".join(settings),
                               _key(DEVICE, n), _key(HWADDR, n)))
            continue
        bootproto = (get(BOOTPROTO) or ("static" if get(IPADDR) else "dhcp")).strip().lower()
        mtu, onboot, netmask = get(MTU), get(ONBOOT), get(NETMASK)
        iface = Interface(index=n, device=device or "", hwaddr=hwaddr.strip() if hwaddr else None,
                          mtu=int(mtu) if mtu else None,
                          onboot=validators.is_true(onboot) if onboot else True,
                          bootproto=bootproto)
        if iface.static:
            for pattern in (IPADDR, NETMASK):
                if not get(pattern):
                    problems.append("%s: missing: required when %s is %r"
                                    % (_key(pattern, n), _key(BOOTPROTO, n), bootproto))
            iface.ipaddr = (get(IPADDR) or "").strip() or None
            iface.prefix = validators.prefix_length(netmask) if netmask else None
            iface.gateway = (get(GATEWAY) or "").strip() or None
            iface.dns = validators.split_list(get(DNS_SERVERS) or "")
        else:
            ignored = [_key(p, n) for p in STATIC_ONLY if get(p)]
            if ignored:
                log.warning("network: %s ignored: %s is dhcp", ", ".join(ignored),
                            _key(BOOTPROTO, n))
        iface.search = validators.split_list(get(DNS_SEARCH) or "")
        _parse_ipv6(iface, get, problems)
        interfaces.append(iface)
    _check_interfaces(interfaces, problems)
    return interfaces, problems


def _parse_ipv6(iface: Interface, get: Callable[[str], Optional[str]],
                problems: List[str]) -> None:
    """The IPv6 settings of ``iface``; none at all leaves the template's IPv6 as it is."""
    n = iface.index
    method = (get(IPV6_BOOTPROTO) or "").strip().lower() or None
    addresses, gateway = get(IPV6ADDR), get(IPV6GATEWAY)
    if method == "static" and not addresses:
        problems.append("%s: missing: required when %s is 'static'"
                        % (_key(IPV6ADDR, n), _key(IPV6_BOOTPROTO, n)))
    for pattern, value in ((IPV6ADDR, addresses), (IPV6GATEWAY, gateway)):
        if value and method != "static":
            problems.append("%s: only for a static IPv6 configuration, but %s is %s: set it "
                            "to static, or leave %s out"
                            % (_key(pattern, n), _key(IPV6_BOOTPROTO, n),
                               repr(method) if method else "not set", _key(pattern, n)))
    if method == "disabled":
        ipv6_dns = [s for s in iface.dns if ":" in s]
        if ipv6_dns:
            problems.append("%s: IPv6 servers (%s) but %s is 'disabled': give IPv4 servers "
                            "only, or enable IPv6 on the interface"
                            % (_key(DNS_SERVERS, n), ", ".join(ipv6_dns),
                               _key(IPV6_BOOTPROTO, n)))
    iface.ipv6_method = method
    if method == "static":
        iface.ipv6_addresses = ipv6_address_list(addresses or "")
        if gateway:
            text, _, zone = gateway.strip().partition("%")
            iface.ipv6_gateway = ipaddress.IPv6Address(text).compressed
            iface.ipv6_gateway_zone = zone or None


def _check_interfaces(interfaces: List[Interface], problems: List[str],
                      named: Optional[Collection[int]] = None) -> None:
    """What only holds across interfaces, or once devices are named: each device once,
    and a link-local gateway's zone is its own interface's device. ``named``: only the
    problems of these interfaces (just named by their hardware address)."""
    seen: Dict[str, int] = {}
    for iface in interfaces:
        if not iface.device:
            continue
        mine = named is None or iface.index in named
        if iface.device in seen and (mine or seen[iface.device] in (named or ())):
            problems.append("%s: value %r is also interface %d's device"
                            % (_key(DEVICE, iface.index), iface.device, seen[iface.device]))
        seen.setdefault(iface.device, iface.index)
        zone = iface.ipv6_gateway_zone
        if mine and zone is not None and zone != iface.device:
            problems.append("%s: value '%s%%%s': the zone is not interface %d's device %s: "
                            "write %s%%%s or leave the zone out"
                            % (_key(IPV6GATEWAY, iface.index), iface.ipv6_gateway, zone,
                               iface.index, iface.device, iface.ipv6_gateway, iface.device))


def check_devices(interfaces: List[Interface]) -> List[str]:
    """Problems with the devices the interfaces name: a ``device.N`` the guest does not
    have (:func:`device_exists`; a sandbox root without ``/sys/class/net`` is not
    checked), a ``hwaddr.N`` no device has;
    each waited for, bounded (``OVM_TEMPLATE_CONFIG_NIC_WAIT``), as NICs can appear
    late in boot. Changes nothing: the runner checks this before any module runs."""
    problems: List[str] = []
    if devices_known():
        wait = _wait_seconds()
        for iface in interfaces:
            if iface.device and find_device_by_name(iface.device, wait) is None:
                problems.append("%s: value %r: the guest has no network device of this name "
                                "(waited %g s)" % (_key(DEVICE, iface.index), iface.device, wait))
    try:
        resolve_devices(interfaces)
    except ValidationError as exc:
        problems.extend(exc.problems)
    return problems


def resolve_devices(interfaces: List[Interface]) -> Dict[str, str]:
    """Name every interface given by hardware address; the device keys to send back."""
    found: Dict[str, str] = {}
    problems: List[str] = []
    wait = _wait_seconds()
    for iface in interfaces:
        if iface.device or iface.hwaddr is None:  # (parse_interfaces gave it one or the other)
            continue
        name = find_device_by_mac(iface.hwaddr, wait)
        if name is None:
            problems.append("%s: value %r: no network device has this hardware address "
                            "(waited %g s)" % (_key(HWADDR, iface.index), iface.hwaddr, wait))
            continue
        iface.device = name
        found[_key(DEVICE, iface.index)] = name
    _check_interfaces(interfaces, problems, named=[i.index for i in interfaces
                                                   if _key(DEVICE, i.index) in found])
    if problems:
        raise ValidationError(problems)
    return found


# --- /etc/hosts --------------------------------------------------------------------------------

def hosts_text(text: str, entries: List[str], hostname: Optional[str],
               self_address: Optional[str]) -> str:
    """/etc/hosts with our entries in a marked block; where the platform names the machine
    by an address of its own (Debian's 127.0.1.1), that line is replaced by ours."""
    lines = [" ".join(entry.split()) for entry in entries]
    disable = None
    if hostname and self_address:
        short = hostname.rstrip(".").split(".")[0]
        names = [hostname.rstrip(".")] + ([short] if short != hostname.rstrip(".") else [])
        lines.insert(0, "%s %s" % (self_address, " ".join(names)))
        disable = lambda line: line.split()[:1] == [self_address]  # noqa: E731
    return apply_managed(text, "network", lines, disable=disable)


# --- targets ---------------------------------------------------------------------------

@SPEC.check("configure")
def check_configure(params: Dict[str, str], context: CheckContext) -> List[str]:
    """The interfaces as a whole (a static one without an address, a device named twice)
    and the devices they name."""
    interfaces, problems = _parse_interfaces(params)
    return problems + check_devices(interfaces)


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    pending = pending_params(SPEC, params)
    if pending is None:
        return None
    state, digest = pending
    interfaces = parse_interfaces(params)
    platform = detect()
    stack = platform.network_stack() if interfaces else None
    changed = resolve_devices(interfaces)          # may wait for a NIC; still nothing written
    hostname = params.get(HOSTNAME)
    entries = [params[_key(HOST, n)] for n in SPEC.indices(params, HOST)]

    if hostname:
        platform.set_hostname(state, hostname.rstrip("."))
    if entries or (hostname and platform.hosts_self_address):
        original = common.read_file("/etc/hosts")
        if original is None:
            # A guest without /etc/hosts (a debootstrap root): the distribution's
            # localhost lines first, or localhost would not resolve at all.
            current = (common.read_file(platform.hostname_file) or "").strip() or None
            original = platform.default_hosts(None if hostname else current)
        state.write_file("/etc/hosts", hosts_text(original, entries, hostname,
                                                  platform.hosts_self_address))
    if stack is not None:
        stack.write(state, interfaces)

    if hostname:
        platform.activate_hostname(hostname.rstrip("."))
    if stack is not None:
        stack.activate(interfaces)
    state.mark_applied(digest)
    return changed or None


@SPEC.target("cleanup")
def cleanup(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    state = ModuleState("network")
    if not state.has_saved:
        log.info("network: nothing to undo")
    state.restore()
    return None
