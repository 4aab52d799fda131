"""The network module: host name, /etc/hosts, interfaces, per network stack.

Module scripts run as real processes on copies of the fixture roots (see conftest.py).
Only pyudev is replaced, in the in-process tests of ``find_device_by_mac``: there is no
udev daemon here, so no real udev event can arrive.
"""
from __future__ import annotations

import json
import sys
import time
import types
from typing import Optional

import pytest
from module_helpers import (
    SCRIPTS,
    Case,
    CleanupSuite,
    assert_dry_run_matches,
    assert_golden,
    assert_idempotent,
    enumerate_module,
    run_module,
    start_module,
    tree,
)

from templateconfig import common
from templateconfig.common import ServiceControl
from templateconfig.platform.network import (
    IfcfgStack,
    IfupdownStack,
    Interface,
    KeyfileStack,
    NetplanStack,
)

P = "com.oracle.linux.network."

TWO_NICS = {
    P + "hostname": "vm1.example.com",
    P + "host.0": "192.0.2.50 db.example.com db",
    P + "host.1": "192.0.2.51   backup.example.com",
    P + "device.0": "eth0", P + "onboot.0": "yes", P + "bootproto.0": "static",
    P + "ipaddr.0": "192.0.2.10", P + "netmask.0": "255.255.255.0", P + "gateway.0": "192.0.2.1",
    P + "dns-servers.0": "192.0.2.53,192.0.2.54",
    P + "dns-search-domains.0": "example.com,example.org",
    P + "device.1": "eth1", P + "onboot.1": "no", P + "bootproto.1": "dhcp", P + "mtu.1": "9000",
}
# The second NIC named by hardware address (the OL9 fixture has /sys/class/net/eth1);
# netmask as a prefix length; bootproto "none" behaves as static.
BY_MAC = {
    P + "hostname": "vm9",
    P + "device.0": "eth0", P + "bootproto.0": "none", P + "ipaddr.0": "10.0.0.5",
    P + "netmask.0": "16", P + "dns-servers.0": "10.0.0.2",
    P + "hwaddr.1": "00:16:3E:00:00:02", P + "bootproto.1": "dhcp",
}

# IPv6, one interface per ipv6-bootproto value: static (two addresses, one in capitals, a
# link-local gateway, an IPv6 DNS server besides the IPv4 one), dhcp (on eth1, not
# activated at boot), auto, disabled.
IPV6_NICS = dict(TWO_NICS, **{
    P + "dns-servers.0": "192.0.2.53,2001:db8::53",
    P + "ipv6-bootproto.0": "static", P + "ipv6addr.0": "2001:DB8::10/64, 2001:db8:1::10/64",
    P + "ipv6gateway.0": "fe80::1",
    P + "ipv6-bootproto.1": "DHCP",
    P + "device.2": "eth2", P + "ipv6-bootproto.2": "auto",
    P + "device.3": "eth3", P + "ipv6-bootproto.3": "disabled",
})
ROOT_NAMES = ("ol6", "ol7", "ol8", "ol9", "debian12", "ubuntu2204")

CASES = [Case("network-%s" % root, root, [("network", TWO_NICS)]) for root in ROOT_NAMES]
CASES.append(Case("network-ol9-hwaddr", "ol9", [("network", BY_MAC)]))
CASES += [Case("network-ipv6-%s" % root, root, [("network", IPV6_NICS)]) for root in ROOT_NAMES]


def bad(name: str, key: str, value: Optional[str], message: str, root: str = "ol8", **extra) -> Case:
    params = dict(TWO_NICS)
    if value is None:
        del params[P + key]
    else:
        params[P + key] = value
    params.update(extra)
    return Case("network-invalid-" + name, root, [("network", params)], message=message)


INVALID = [
    bad("hostname-underscore", "hostname", "my_host", P + "hostname: value 'my_host'"),
    bad("hostname-too-long", "hostname", "a" * 40 + "." + "b" * 30,
        P + "hostname: value '%s'" % ("a" * 40 + "." + "b" * 30)),
    bad("hostname-label-too-long", "hostname", "x" * 64, P + "hostname: value '%s'" % ("x" * 64),
        root="debian12"),
    bad("ipaddr", "ipaddr.0", "192.0.2.300", P + "ipaddr.0: value '192.0.2.300'", root="ol9"),
    bad("netmask-33", "netmask.0", "33", P + "netmask.0: value '33'", root="ubuntu2204"),
    bad("netmask-dotted", "netmask.0", "255.0.255.0", P + "netmask.0: value '255.0.255.0'"),
    bad("gateway", "gateway.0", "gw", P + "gateway.0: value 'gw'", root="ol6"),
    bad("dns", "dns-servers.0", "192.0.2.53,nameserver", P + "dns-servers.0: value "
        "'192.0.2.53,nameserver'"),
    bad("mtu", "mtu.1", "20", P + "mtu.1: value '20'"),
    bad("onboot", "onboot.0", "sometimes", P + "onboot.0: value 'sometimes'"),
    bad("bootproto", "bootproto.0", "bootp", P + "bootproto.0: value 'bootp'"),
    bad("hwaddr", "hwaddr.1", "00:16:3e:00:00", P + "hwaddr.1: value '00:16:3e:00:00'"),
    bad("device", "device.1", "eth1/../x", P + "device.1: value 'eth1/../x'"),
    bad("hosts-line", "host.0", "db.example.com", P + "host.0: value 'db.example.com'"),
    bad("static-without-ipaddr", "ipaddr.0", None, P + "ipaddr.0: missing: required when "
        + P + "bootproto.0 is 'static'"),
    bad("duplicate-device", "device.1", "eth0", P + "device.1: value 'eth0' is also interface 0"),
    bad("no-device", "device.1", None, P + "device.1: missing"),
]


def bad6(name: str, root: str, message: str, **values: Optional[str]) -> Case:
    """IPV6_NICS with ``values`` (key suffix -> value, None removes it): refused, naming
    the key and what to do."""
    params = dict(IPV6_NICS)
    for suffix, value in values.items():
        key = P + suffix
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return Case("network-invalid-ipv6-" + name, root, [("network", params)], message=message)


INVALID += [
    bad6("no-prefix", "ol6", P + "ipv6addr.0: value '2001:db8::10' is invalid: item 1: expected "
         "an IPv6 address with its prefix length", **{"ipv6addr.0": "2001:db8::10"}),
    bad6("ipv4-address", "ol7", P + "ipv6addr.0: value '2001:db8::10/64,192.0.2.10/24' is "
         "invalid: item 2: an IPv4 address: IPv4 goes in ipaddr.N and netmask.N",
         **{"ipv6addr.0": "2001:db8::10/64,192.0.2.10/24"}),
    bad6("prefix-129", "ol8", "item 1: the prefix length must be 1-128",
         **{"ipv6addr.0": "2001:db8::10/129"}),
    bad6("prefix-0", "ol9", P + "ipv6addr.0: value '2001:db8::10/0' is invalid: item 1: the "
         "prefix length must be 1-128", **{"ipv6addr.0": "2001:db8::10/0"}),
    bad6("not-an-address", "debian12", P + "ipv6addr.0: value '2001:db8::g/64' is invalid: "
         "item 1: not an IPv6 address", **{"ipv6addr.0": "2001:db8::g/64"}),
    bad6("multicast", "ubuntu2204", "item 1: a multicast address, not one that a host or "
         "router has",
         **{"ipv6addr.0": "ff02::1/64"}),
    bad6("address-zone", "ol9", "item 1: an interface address takes no zone",
         **{"ipv6addr.0": "fe80::10%eth0/64"}),
    bad6("twice", "debian12", P + "ipv6addr.0: value '2001:db8::10/64, 2001:DB8::10/48' is "
         "invalid: item 2: the address is listed twice",
         **{"ipv6addr.0": "2001:db8::10/64, 2001:DB8::10/48"}),
    bad6("gateway-ipv4", "ol8", P + "ipv6gateway.0: value '192.0.2.1' is invalid: an IPv4 "
         "address: the IPv4 gateway is gateway.N", **{"ipv6gateway.0": "192.0.2.1"}),
    bad6("gateway-prefix", "ol6", "a gateway is an address without a prefix length",
         **{"ipv6gateway.0": "2001:db8::1/64"}),
    bad6("gateway-global-zone", "ubuntu2204", P + "ipv6gateway.0: value '2001:db8::1%eth0' is "
         "invalid: only a link-local gateway (fe80::/10) takes a zone",
         **{"ipv6gateway.0": "2001:db8::1%eth0"}),
    bad6("gateway-other-zone", "ol9", P + "ipv6gateway.0: value 'fe80::1%eth1': the zone is not "
         "interface 0's device eth0: write fe80::1%eth0 or leave the zone out",
         **{"ipv6gateway.0": "fe80::1%eth1"}),
    bad6("bootproto", "ol7", P + "ipv6-bootproto.2: value 'slaac' is not one of: auto, dhcp, "
         "static, disabled", **{"ipv6-bootproto.2": "slaac"}),
    bad6("static-without-address", "debian12", P + "ipv6addr.0: missing: required when "
         + P + "ipv6-bootproto.0 is 'static'", **{"ipv6addr.0": None, "ipv6gateway.0": None}),
    bad6("gateway-without-static", "ol8", P + "ipv6gateway.2: only for a static IPv6 "
         "configuration, but " + P + "ipv6-bootproto.2 is 'auto': set it to static, or leave "
         + P + "ipv6gateway.2 out", **{"ipv6gateway.2": "2001:db8::1"}),
    bad6("address-without-bootproto", "ubuntu2204", P + "ipv6addr.0: only for a static IPv6 "
         "configuration, but " + P + "ipv6-bootproto.0 is not set: set it to static",
         **{"ipv6-bootproto.0": None, "ipv6gateway.0": None}),
    bad6("dns-on-disabled", "ol6", P + "dns-servers.0: IPv6 servers (2001:db8::53) but " + P
         + "ipv6-bootproto.0 is 'disabled': give IPv4 servers only, or enable IPv6",
         **{"ipv6-bootproto.0": "disabled", "ipv6addr.0": None, "ipv6gateway.0": None}),
]
# A device found by its hardware address: its gateway's zone is checked once it is named.
INVALID.append(Case("network-invalid-ipv6-zone-of-found-device", "ol9", [("network", dict(
    BY_MAC, **{P + "ipv6-bootproto.1": "static", P + "ipv6addr.1": "2001:db8::10/64",
               P + "ipv6gateway.1": "fe80::1%eth0"}))],
    message=P + "ipv6gateway.1: value 'fe80::1%eth0': the zone is not interface 1's device eth1"))
# A NIC that never appears: fails after the (shortened) bounded wait, before any write.
INVALID.append(Case("network-invalid-missing-nic", "ol9",
                    [("network", dict(BY_MAC, **{P + "hwaddr.1": "00:16:3e:99:99:99"}))],
                    message=P + "hwaddr.1: value '00:16:3e:99:99:99': no network device",
                    env={"OVM_TEMPLATE_CONFIG_NIC_WAIT": "0.3"}))


class TestNetworkCases(CleanupSuite):
    CASES = CASES
    INVALID = INVALID

def test_new_keys_apply_again_same_keys_do_not(fixture_root):
    root = fixture_root("ol8")
    rc, _, _, _ = run_module("network", "configure", TWO_NICS, root)
    assert rc == 0
    rc, _, err, records = run_module("network", "configure", TWO_NICS, root)
    assert rc == 0 and records == []
    changed = dict(TWO_NICS, **{P + "ipaddr.0": "192.0.2.11"})
    rc, _, _, records = run_module("network", "configure", changed, root)
    assert rc == 0
    assert [r["path"] for r in records if r["op"] == "write"] == [
        "/etc/sysconfig/network-scripts/ifcfg-eth0",
        "/var/lib/ovm-template-config/network.applied"]
    assert "IPADDR=192.0.2.11\n" in (root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()


def test_device_found_by_hwaddr_is_sent_back(fixture_root):
    rc, out, err, _ = run_module("network", "configure", BY_MAC, fixture_root("ol9"))
    assert rc == 0, err
    assert out[P + "device.1"] == "eth1"


def test_waits_for_a_nic_that_appears_later(fixture_root):
    """A real process waits (bounded) and finds the NIC once its sysfs entry appears:
    the NIC is plugged only after the module said that it waits for it."""
    root = fixture_root("ol9")
    params = dict(BY_MAC, **{P + "hwaddr.1": "00:16:3e:00:00:07"})
    proc = start_module("network", "configure", params, root,
                        env={"OVM_TEMPLATE_CONFIG_NIC_WAIT": "10"})
    said = []
    for line in proc.stderr:
        said.append(line)
        if "waiting up to" in line:
            break
    (root / "sys/class/net/eth7").mkdir()
    (root / "sys/class/net/eth7/address").write_text("00:16:3e:00:00:07\n")
    stdout, stderr = proc.communicate(timeout=60)
    rc, err = proc.returncode, "".join(said) + stderr
    out = json.loads(stdout) if rc == 0 else None
    assert rc == 0, err
    assert out[P + "device.1"] == "eth7"
    assert "waiting up to 10 s" in err
    assert (root / "etc/NetworkManager/system-connections/ovm-eth7.nmconnection").exists()


def test_nothing_to_do_without_network_keys(fixture_root):
    root = fixture_root("ol7")
    before = tree(root)
    rc, out, _, records = run_module("network", "configure", {"com.example.other": "x"}, root)
    assert (rc, out, records) == (0, {"com.example.other": "x"}, [])
    assert tree(root) == before


# --- finding a NIC by udev events (pyudev replaced: no udev daemon here) ----------------------

class FakeDevice:
    def __init__(self, name, address, action="add"):
        self.sys_name = name
        self.action = action
        self.attributes = {"address": address.encode()}


class FakeClock:
    """A stand-in for the network module's ``time``: the clock moves only when the module
    waits (``sleep``, or a poll of the fake udev monitor that times out)."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def fake_pyudev(events, clock=None):
    """A stand-in for pyudev whose monitor yields ``events`` (one per poll), then nothing;
    a poll without an event waits its timeout (on ``clock``, or a short real sleep)."""
    module = types.ModuleType("pyudev")
    pending = list(events)

    class Monitor:
        filtered = None

        @classmethod
        def from_netlink(cls, context):
            return cls()

        def filter_by(self, subsystem):
            Monitor.filtered = subsystem

        def start(self):
            pass

        def poll(self, timeout=None):
            if pending:
                return pending.pop(0)
            if clock is not None:
                clock.sleep(timeout or 0)
            else:
                time.sleep(min(timeout or 0, 0.05))
            return None

    module.Context = lambda: object()
    module.Monitor = Monitor
    return module


def test_udev_event_names_the_nic(monkeypatch, tmp_path):
    from templateconfig.modules import network
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    fake = fake_pyudev([FakeDevice("eth3", "00:16:3e:00:00:04"),
                        FakeDevice("ens5", "00:16:3E:00:00:05")])
    monkeypatch.setitem(sys.modules, "pyudev", fake)
    assert network.find_device_by_mac("00-16-3e-00-00-05", 5, use_udev=True) == "ens5"
    assert fake.Monitor.filtered == "net"


def test_udev_wait_is_bounded(monkeypatch, tmp_path):
    """Without the NIC, the module waits for udev events for its timeout, then gives up."""
    from templateconfig.modules import network
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    clock = FakeClock()
    monkeypatch.setattr(network, "time", clock)
    monkeypatch.setitem(sys.modules, "pyudev", fake_pyudev([], clock))
    assert network.find_device_by_mac("00:16:3e:00:00:05", 0.4, use_udev=True) is None
    assert clock.now == pytest.approx(0.4)


def test_without_pyudev_polls_sysfs(monkeypatch, tmp_path):
    from templateconfig.modules import network
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pyudev", None)   # import pyudev raises ImportError
    (tmp_path / "sys/class/net/eth2").mkdir(parents=True)
    (tmp_path / "sys/class/net/eth2/address").write_text("00:16:3e:00:00:02\n")
    assert network.find_device_by_mac("00:16:3e:00:00:02", 1, use_udev=True) == "eth2"
    assert network.find_device_by_mac("00:16:3e:00:00:09", 0.3, use_udev=True) is None


# --- IPv6: the template's own settings, kept when no IPv6 key is given -------------------------

TEMPLATE_IFCFG_IPV6 = "IPV6INIT=yes\nIPV6_AUTOCONF=no\nIPV6ADDR=2001:db8::99/64\n" \
    'IPV6_DEFAULTGW="2001:db8::1"\n'
TEMPLATE_KEYFILE_IPV6 = ["addr-gen-mode=eui64", "method=manual",
                         "address1=2001:db8::99/64,2001:db8::1"]
TEMPLATE_INET6 = ["iface eth0 inet6 static", "    address 2001:db8::99/64",
                  "    gateway 2001:db8::1"]


def with_template_ipv6(root) -> None:
    """Give fixture ``root`` a static IPv6 address on eth0, the way its stack writes it."""
    ifcfg = root / "etc/sysconfig/network-scripts/ifcfg-eth0"
    keyfile = root / "etc/NetworkManager/system-connections/eth0.nmconnection"
    interfaces = root / "etc/network/interfaces"
    netplan = root / "etc/netplan/00-installer-config.yaml"
    if keyfile.exists():
        keyfile.write_text(keyfile.read_text().replace(
            "[ipv6]\nmethod=auto\n", "[ipv6]\n%s\n" % "\n".join(TEMPLATE_KEYFILE_IPV6)))
    elif ifcfg.exists():
        ifcfg.write_text(ifcfg.read_text() + TEMPLATE_IFCFG_IPV6)
    elif interfaces.exists():
        interfaces.write_text(interfaces.read_text() + "\n".join(TEMPLATE_INET6) + "\n")
    else:
        netplan.write_text(netplan.read_text().replace(
            "      dhcp4: true\n", "      dhcp4: true\n      dhcp6: true\n"))


def keyfile_ipv6(path) -> list:
    lines = path.read_text().split("[ipv6]\n", 1)[1].split("\n\n")[0]
    return [line for line in lines.splitlines() if line]


@pytest.mark.parametrize("name", ROOT_NAMES)
def test_template_ipv6_kept_without_ipv6_keys_replaced_with_them(fixture_root, name):
    """No IPv6 key: the template's IPv6 settings stay in force, also where the template's
    file is rewritten whole (ifcfg) or replaced by ours (keyfile); any IPv6 key: they are
    ours alone. Runs twice give the same tree; cleanup gives the template back."""
    root = fixture_root(name)
    with_template_ipv6(root)
    template = tree(root)
    assert run_module("network", "configure", TWO_NICS, root)[0] == 0
    if name.startswith("ol") and name != "ol9":
        eth0 = (root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
        assert eth0.endswith('DOMAIN="example.com example.org"\n' + TEMPLATE_IFCFG_IPV6)
    elif name == "ol9":
        ours = root / "etc/NetworkManager/system-connections/ovm-eth0.nmconnection"
        assert keyfile_ipv6(ours) == TEMPLATE_KEYFILE_IPV6
    elif name == "debian12":
        text = (root / "etc/network/interfaces").read_text()
        assert "\n".join(TEMPLATE_INET6) in text and "#ovm# iface eth0 inet6" not in text
        assert "inet6" not in (root / "etc/network/interfaces.d/ovm-eth0").read_text()
    else:
        ours = (root / "etc/netplan/90-ovm.yaml").read_text()
        assert not any(k in ours for k in ("dhcp6", "accept-ra", "link-local"))
    kept = tree(root)
    assert run_module("network", "configure", TWO_NICS, root)[0] == 0
    assert tree(root) == kept
    (root / "var/lib/ovm-template-config/network.applied").unlink()   # rendered again
    assert run_module("network", "configure", TWO_NICS, root)[0] == 0
    assert tree(root) == kept

    assert run_module("network", "configure", IPV6_NICS, root)[0] == 0
    written = "".join(data.decode() for path, (_, data) in tree(root).items()
                      if path.startswith(("/etc/sysconfig/network-scripts/ifcfg-eth0",
                                          "/etc/NetworkManager/system-connections/ovm-",
                                          "/etc/network/interfaces.d/")))
    assert "2001:db8::99" not in written
    if name == "debian12":
        text = (root / "etc/network/interfaces").read_text()
        assert "\n".join("#ovm# " + line for line in TEMPLATE_INET6) in text
    if name == "ubuntu2204":   # ours comes later: it overrides the template's dhcp6
        eth0 = (root / "etc/netplan/90-ovm.yaml").read_text().split('"eth1"')[0]
        assert "      dhcp6: false\n" in eth0
    assert run_module("network", "cleanup", {}, root)[0] == 0
    assert tree(root) == template


def test_ipv6_global_gateway_and_explicit_zone(fixture_root):
    """A global gateway is written as it is; a link-local one given with its own
    interface's zone is accepted (and written with it where the format needs it)."""
    root = fixture_root("ol8")
    params = dict(IPV6_NICS, **{P + "ipv6gateway.0": "2001:DB8::1", P + "ipv6-bootproto.2": "static",
                                P + "ipv6addr.2": "2001:db8:2::10/64",
                                P + "ipv6gateway.2": "FE80::1%eth2"})
    rc, _, err, _ = run_module("network", "configure", params, root)
    assert rc == 0, err
    scripts = root / "etc/sysconfig/network-scripts"
    assert "IPV6_DEFAULTGW=2001:db8::1\n" in (scripts / "ifcfg-eth0").read_text()
    assert "IPV6_DEFAULTGW=fe80::1%eth2\n" in (scripts / "ifcfg-eth2").read_text()


def test_ipv6_disabled_then_enabled_gives_sysctl_conf_back(fixture_root):
    """The sysctl block exists only while an interface has IPv6 disabled; a template's
    own sysctl.conf keeps its lines."""
    root = fixture_root("ol6")
    (root / "etc/sysctl.conf").write_text("kernel.sysrq = 0\n")
    assert run_module("network", "configure", IPV6_NICS, root)[0] == 0
    assert "net.ipv6.conf.eth3.disable_ipv6 = 1\n" in (root / "etc/sysctl.conf").read_text()
    enabled = dict(IPV6_NICS, **{P + "ipv6-bootproto.3": "auto"})
    assert run_module("network", "configure", enabled, root)[0] == 0
    assert (root / "etc/sysctl.conf").read_text() == "kernel.sysrq = 0\n"


# --- /etc/hosts -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name, localhost", [
    ("debian12", ["127.0.0.1\tlocalhost", "::1     localhost ip6-localhost ip6-loopback"]),
    ("ol9", ["127.0.0.1   localhost localhost.localdomain localhost4 localhost4.localdomain4",
             "::1         localhost localhost.localdomain localhost6 localhost6.localdomain6"]),
])
def test_a_guest_without_hosts_gets_the_localhost_lines(fixture_root, name, localhost):
    root = fixture_root(name)
    (root / "etc/hosts").unlink()
    params = {P + "host.0": "192.0.2.50 db.example.com db"}
    assert run_module("network", "configure", params, root)[0] == 0
    lines = (root / "etc/hosts").read_text().splitlines()
    assert [line for line in lines if line in localhost] == localhost
    assert "192.0.2.50 db.example.com db" in lines
    if name == "debian12":   # no new host name: the guest's own, on Debian's 127.0.1.1 line
        assert "127.0.1.1\tdebian" in lines
    assert run_module("network", "cleanup", {}, root)[0] == 0
    assert not (root / "etc/hosts").exists()


def test_an_existing_hosts_file_keeps_its_own_lines(fixture_root):
    root = fixture_root("ol8")
    original = (root / "etc/hosts").read_text() + "10.1.1.1 nfs.example.com nfs\n"
    (root / "etc/hosts").write_text(original)
    run_module("network", "configure", {P + "host.0": "192.0.2.50 db"}, root)
    text = (root / "etc/hosts").read_text()
    assert text.startswith(original) and "192.0.2.50 db" in text


# --- DNS: the resolver configuration the guest uses --------------------------------------------

DEBIAN_DNS_FILES = ("/etc/resolv.conf", "/etc/dhcp/dhclient-enter-hooks.d/ovm-dns")


def written(records):
    return sorted(r["path"] for r in records if r["op"] == "write")


@pytest.mark.parametrize("manager", ["systemd-resolved", "resolvconf", "a symlink"])
def test_debian_leaves_a_managed_resolver_to_its_manager(fixture_root, manager):
    """With systemd-resolved (ifupdown's own hook) or resolvconf, dns-nameservers and
    dns-search reach the resolver: resolv.conf is theirs, not ours."""
    root = fixture_root("debian12")
    hooks = root / "etc/network/if-up.d"
    hooks.mkdir(parents=True)
    if manager == "systemd-resolved":
        (hooks / "resolved").write_text("#!/bin/sh\n")
        wants = root / "etc/systemd/system/multi-user.target.wants"
        (wants / "systemd-resolved.service").symlink_to("/lib/systemd/system/systemd-resolved.service")
    elif manager == "resolvconf":
        (hooks / "000resolvconf").write_text("#!/bin/sh\n")
    else:
        (root / "etc/resolv.conf").unlink()
        (root / "etc/resolv.conf").symlink_to("../run/resolvconf/resolv.conf")
    rc, _, err, records = run_module("network", "configure", TWO_NICS, root)
    assert rc == 0, err
    assert not set(DEBIAN_DNS_FILES) & set(written(records))
    assert "    dns-nameservers 192.0.2.53 192.0.2.54\n" in \
        (root / "etc/network/interfaces.d/ovm-eth0").read_text()


def test_debian_systemd_resolved_installed_but_disabled_is_not_a_manager(fixture_root):
    root = fixture_root("debian12")
    (root / "etc/network/if-up.d").mkdir(parents=True)
    (root / "etc/network/if-up.d/resolved").write_text("#!/bin/sh\n")
    rc, _, err, records = run_module("network", "configure", TWO_NICS, root)
    assert rc == 0, err
    assert set(DEBIAN_DNS_FILES) <= set(written(records))


def test_debian_dhcp_only_search_domains_keep_the_leases_servers(fixture_root):
    root = fixture_root("debian12")
    params = {P + "device.0": "eth0", P + "bootproto.0": "dhcp",
              P + "dns-search-domains.0": "example.com"}
    assert run_module("network", "configure", params, root)[0] == 0
    resolv = (root / "etc/resolv.conf").read_text()
    assert "search example.com\n" in resolv and "nameserver 10.0.2.3\n" in resolv
    hook = (root / "etc/dhcp/dhclient-enter-hooks.d/ovm-dns").read_text()
    assert "new_domain_search=example.com\n" in hook and "new_domain_name_servers" not in hook
    # Later without search domains: the hook goes, the lease's settings apply again.
    assert run_module("network", "configure", {P + "device.0": "eth0",
                                               P + "bootproto.0": "dhcp"}, root)[0] == 0
    assert not (root / "etc/dhcp/dhclient-enter-hooks.d/ovm-dns").exists()


@pytest.mark.parametrize("params, peerdns", [
    (TWO_NICS, "PEERDNS=no\n"),                         # eth0's DNS servers win over eth1's lease
    (dict(TWO_NICS, **{P + "dns-servers.0": ""}), None),  # no servers requested: the lease's
])
def test_el6_dhcp_lease_does_not_replace_the_requested_dns(fixture_root, params, peerdns):
    root = fixture_root("ol6")
    params = {k: v for k, v in params.items() if v}
    assert run_module("network", "configure", params, root)[0] == 0
    eth1 = (root / "etc/sysconfig/network-scripts/ifcfg-eth1").read_text()
    assert ("PEERDNS=no\n" in eth1) == (peerdns is not None)
    assert "PEERDNS" not in (root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()


@pytest.mark.parametrize("template_dhcpv6", [False, True])
def test_el6_dhcpv6_lease_does_not_replace_the_requested_dns(fixture_root, template_dhcpv6):
    """dhclient -6 (DHCPV6C=yes, ours or the template's) writes resolv.conf too: a static
    IPv4 interface with DHCPv6 gets PEERDNS=no when DNS servers are requested."""
    root = fixture_root("ol6")
    params = dict(TWO_NICS)
    if template_dhcpv6:
        eth0 = root / "etc/sysconfig/network-scripts/ifcfg-eth0"
        eth0.write_text(eth0.read_text() + "IPV6INIT=yes\nDHCPV6C=yes\n")
    else:
        params[P + "ipv6-bootproto.0"] = "dhcp"
    assert run_module("network", "configure", params, root)[0] == 0
    text = (root / "etc/sysconfig/network-scripts/ifcfg-eth0").read_text()
    assert "PEERDNS=no\n" in text and "DHCPV6C=yes\n" in text


# --- activation: not before the network service has started in this boot ------------------------

class RunningServices(ServiceControl):
    """A systemd guest's service control whose running services are given: a sandbox
    root has no running init system to ask (the booted guest test asks the real one)."""

    def __init__(self, active: Optional[dict]) -> None:
        super().__init__(ServiceControl.SYSTEMD)
        self.active = active

    def is_active(self, name: str) -> Optional[bool]:
        return None if self.active is None else self.active.get(name, False)


@pytest.mark.parametrize("stack_name, active, expected", [
    # first boot: the network service has not started yet; it brings them up itself
    ("ifupdown", {}, []),
    ("netplan", {}, [["netplan", "generate"]]),
    ("keyfile", {}, []),
    ("ifcfg-nm", {}, []),
    ("ifcfg", {}, []),
    # a reconfigure of a running guest
    ("ifupdown", {"networking": True}, [["ifdown", "--force", "eth0"], ["ifup", "eth0"]]),
    ("netplan", {"systemd-networkd": True}, [["netplan", "apply"]]),
    ("keyfile", {"NetworkManager": True},
     [["nmcli", "connection", "reload"], ["nmcli", "connection", "up", "id", "ovm-eth0"]]),
    ("ifcfg", {"network": True}, [["systemctl", "--no-block", "restart", "network"]]),
    # no running system to ask (a sandbox root): recorded as on a running guest
    ("ifupdown", None, [["ifdown", "--force", "eth0"], ["ifup", "eth0"]]),
])
def test_activation_waits_for_the_network_service(monkeypatch, tmp_path, stack_name, active,
                                                  expected):
    stacks = {"ifupdown": IfupdownStack(), "netplan": NetplanStack(), "keyfile": KeyfileStack(),
              "ifcfg-nm": IfcfgStack(networkmanager=True),
              "ifcfg": IfcfgStack(networkmanager=False)}
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    journal = tmp_path / "journal"
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(tmp_path))
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ACTIONS", str(journal))
    common.new_guest()
    monkeypatch.setattr(common, "service_control", lambda: RunningServices(active))
    stacks[stack_name].activate([Interface(0, "eth0")])
    argvs = [json.loads(line)["argv"] for line in journal.read_text().splitlines()] \
        if journal.exists() else []
    assert argvs == expected


# --- the compatibility surface ---------------------------------------------------------------

STATIC = [P + "bootproto.{n}", ["static", "none"]]


def interface_descriptors(n):
    hidden = {"hidden": True} if n else {}
    bootproto = P + "bootproto.%d" % n
    return [
        dict({"key": P + "device.%d" % n, "description": "Network device of interface %d "
              "(e.g. eth0)." % n}, **hidden),
        {"key": P + "hwaddr.%d" % n, "description": "Hardware (MAC) address of interface %d." % n,
         "hidden": True},
        {"key": P + "mtu.%d" % n, "description": "MTU of interface %d." % n, "hidden": True},
        dict({"key": P + "onboot.%d" % n, "description": "Activate interface %d at boot: yes or "
              "no." % n}, **hidden, depends=P + "device.%d" % n, choices=["yes", "no"]),
        dict({"key": bootproto, "description": "Boot protocol of interface %d: dhcp or static."
              % n}, **hidden, depends=P + "device.%d" % n, choices=["dhcp", "static"]),
        dict({"key": P + "ipaddr.%d" % n, "description": "IPv4 address of interface %d." % n},
             **hidden, requires=[bootproto, ["static", "none"]]),
        dict({"key": P + "netmask.%d" % n, "description": "Netmask of interface %d "
              "(255.255.255.0, or a prefix length such as 24)." % n},
             **hidden, requires=[bootproto, ["static", "none"]]),
        dict({"key": P + "gateway.%d" % n, "description": "Default gateway of interface %d." % n},
             **hidden, requires=[bootproto, ["static", "none"]]),
        dict({"key": P + "dns-servers.%d" % n, "description": "DNS servers of interface %d, "
              "comma-separated." % n}, **hidden, requires=[bootproto, ["static", "none"]]),
        {"key": P + "dns-search-domains.%d" % n, "description": "DNS search domains of "
         "interface %d, comma-separated." % n, "hidden": True},
        dict({"key": P + "ipv6-bootproto.%d" % n, "description": "IPv6 of interface %d: auto, "
              "dhcp, static or disabled (unset: as the template has it)." % n},
             **hidden, depends=P + "device.%d" % n, choices=["auto", "dhcp", "static", "disabled"]),
        dict({"key": P + "ipv6addr.%d" % n, "description": "IPv6 addresses of interface %d with "
              "prefix lengths, comma-separated (e.g. 2001:db8::10/64)." % n},
             **hidden, requires=[P + "ipv6-bootproto.%d" % n, ["static"]]),
        dict({"key": P + "ipv6gateway.%d" % n, "description": "IPv6 default gateway of "
              "interface %d." % n}, **hidden, requires=[P + "ipv6-bootproto.%d" % n, ["static"]]),
    ]


def test_enumerate_configure_is_exact():
    got = enumerate_module("network", "configure")
    expected = [{"key": P + "hostname", "description": "Host name (e.g. vm1.example.com)."}]
    expected += [{"key": P + "host.%d" % n, "description": "A line for /etc/hosts: an IP "
                  "address and host names.", "hidden": True} for n in range(4)]
    per_interface = [interface_descriptors(n) for n in range(4)]
    for position in range(13):   # key by key, each for interfaces 0..3
        expected += [per_interface[n][position] for n in range(4)]
    assert got == expected


def test_human_readable_enumerate_shows_the_ipv6_keys():
    """``--enumerate --human-readable``: the IPv6 keys of interface 0 are prompted, with
    their choices and conditions."""
    from templateconfig.descriptors import format_human_readable
    text = format_human_readable([(50, "network", enumerate_module("network", "configure"))])
    lines = [line.strip() for line in text.splitlines()]
    rows = {line.split()[0]: (line.split()[1:], lines[number + 1:number + 3])
            for number, line in enumerate(lines) if line.startswith(P)}
    assert rows[P + "ipv6-bootproto.0"] == (["-"], ["only if %sdevice.0 is set" % P,
                                                    "choices: auto, dhcp, static, disabled"])
    for key in ("ipv6addr.0", "ipv6gateway.0"):
        flags, details = rows[P + key]
        assert flags == ["-"] and details[0] == "only if %sipv6-bootproto.0 is static" % P
    assert rows[P + "ipv6addr.1"][0] == ["hidden"]


def test_enumerate_cleanup_lists_no_keys():
    assert enumerate_module("network", "cleanup") == []


@pytest.mark.parametrize("name", ["network", "datetime", "firewall", "selinux"])
def test_script_header_is_the_spec_header(name):
    import importlib
    spec = importlib.import_module("templateconfig.modules." + name).SPEC
    text = (SCRIPTS / name).read_text()
    assert text.startswith("#!/usr/bin/env python3\n")
    assert spec.header() in text
    assert (SCRIPTS / name).stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("name,targets", [
    ("network", {"configure": 50, "cleanup": 50}), ("datetime", {"configure": 50, "cleanup": 50}),
    ("firewall", {"configure": 41}), ("selinux", {"configure": 30})])
def test_oracle_names_and_priorities(name, targets):
    from templateconfig.header import parse_header
    info = parse_header(str(SCRIPTS / name))
    assert info.name == name
    assert dict(info.targets) == targets


# --- all four modules on one guest, in the runner's order (selinux 30, firewall 41, 50s) -------

from test_datetime import FULL as DATETIME_FULL  # noqa: E402

ALL = [Case("all-modules-%s" % root, root, [
    ("selinux", {"com.oracle.linux.selinux.mode": "permissive"}),
    ("firewall", {"com.oracle.linux.network.firewall": "False"}),
    ("datetime", DATETIME_FULL),
    ("network", TWO_NICS)]) for root in ("ol6", "ol7", "ol8", "ol9", "debian12", "ubuntu2204")]


@pytest.mark.parametrize("case", ALL, ids=repr)
def test_all_modules_golden(case, fixture_root):
    assert_golden(case, fixture_root)


@pytest.mark.parametrize("case", ALL, ids=repr)
def test_all_modules_idempotent(case, fixture_root):
    assert_idempotent(case, fixture_root)


@pytest.mark.parametrize("case", ALL, ids=repr)
def test_all_modules_dry_run(case, fixture_root):
    assert_dry_run_matches(case, fixture_root)
