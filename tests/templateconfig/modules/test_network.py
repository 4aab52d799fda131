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

CASES = [Case("network-%s" % root, root, [("network", TWO_NICS)])
         for root in ("ol6", "ol7", "ol8", "ol9", "debian12", "ubuntu2204")]
CASES.append(Case("network-ol9-hwaddr", "ol9", [("network", BY_MAC)]))


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
    ]


def test_enumerate_configure_is_exact():
    got = enumerate_module("network", "configure")
    expected = [{"key": P + "hostname", "description": "Host name (e.g. vm1.example.com)."}]
    expected += [{"key": P + "host.%d" % n, "description": "A line for /etc/hosts: an IP "
                  "address and host names.", "hidden": True} for n in range(4)]
    per_interface = [interface_descriptors(n) for n in range(4)]
    for position in range(10):   # key by key, each for interfaces 0..3
        expected += [per_interface[n][position] for n in range(4)]
    assert got == expected


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
