"""The address reporter, end to end: the real daemon in a network namespace of its own,
veth pairs whose guest ends are listed as vifs in the development XenStore, real
``ip addr`` / ``ip link`` changes, and the host's view (``attr/vif`` through dom0 and
Debian's ``xenstore-ls``, the ``com.oracle.linux.network.ipaddrs`` message through
``ovm-vmmessage``) waited for on XenStore watches. Needs root (namespaces), as CI has.

Nothing asserts how fast: ``bench/bench_addresses.py`` measures the latency.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from daemon_helpers import GUEST
from guestnet import GuestNetwork, HostView, context_switches, link_local, wait_idle
from testlib import bin_path, require_root, require_tool, start_xenstored

from ovmd.channel import MAX_VALUE_BYTES
from ovmd.vifaddrs import KEY
from ovmd.xenstore import XenStoreClient

#: How long the idle daemon is watched for wake-ups.
IDLE_SECONDS = 3.0


@pytest.fixture
def net(dom0):
    require_root("network namespaces")
    require_tool("ip")
    network = GuestNetwork(dom0, GUEST).create()
    try:
        yield network
    finally:
        network.remove()


@pytest.fixture
def view(dom0):
    return HostView(dom0, GUEST)


@pytest.fixture
def guest_ovmd(ovmd_factory, net, root):
    """Start the daemon in the guest's namespace, with these /etc/sysconfig/ovmd lines."""
    def start(*settings: str):
        if settings:
            sysconfig = root / "etc/sysconfig/ovmd"
            sysconfig.parent.mkdir(parents=True, exist_ok=True)
            sysconfig.write_text("".join(line + "\n" for line in settings))
        return ovmd_factory(prefix=net.exec_prefix)
    return start


def tools_view(xenstored) -> dict:
    """``attr/vif`` as Debian's ``xenstore-ls -f`` prints it: devid -> family -> list."""
    result = subprocess.run([require_tool("xenstore-ls"), "-f", "/local/domain/%d/attr/vif"
                             % GUEST], env=xenstored.env, capture_output=True, text=True,
                            timeout=60, check=True)
    leaves = {}
    for line in result.stdout.splitlines():
        path, _, value = line.partition(" = ")
        parts = path.split("/")[6:]  # after /local/domain/1/attr/vif
        if len(parts) == 3:
            leaves[tuple(parts)] = json.loads(value)
    found: dict = {}
    for (devid, family, number) in sorted(leaves, key=lambda p: (p[0], p[1], int(p[2]))):
        found.setdefault(devid, {}).setdefault(family, []).append(leaves[devid, family, number])
    return found


def vmmessage_query(xenstored) -> dict:
    """The message, as ``ovm-vmmessage -q`` prints it."""
    result = subprocess.run([bin_path("ovm-vmmessage"), "-d", str(GUEST), "--xenstore",
                             xenstored.dom0_socket, "-q", KEY], capture_output=True,
                            text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def test_the_host_sees_the_addresses_follow_every_change(net, view, guest_ovmd, dom0, xenstored):
    g0, g1 = net.add_nic(), net.add_nic()
    ll0, ll1 = link_local(g0.mac), link_local(g1.mac)
    net.guest("addr", "add", "10.1.0.5/24", "dev", "g0")
    # left by an earlier run: ovmd owns attr/vif and replaces what it finds
    dom0.write("/local/domain/1/attr/vif/7/ipv4/0", "10.9.9.9")
    dom0.write("/local/domain/1/attr/vif/0/ipv4/3", "10.9.9.8")
    guest_ovmd()
    # link-local addresses are reported once duplicate address detection has passed
    view.wait_for({"0": {"ipv4": ["10.1.0.5"], "ipv6": [ll0]}, "1": {"ipv6": [ll1]}},
                  {g0.mac: ["10.1.0.5", ll0], g1.mac: [ll1]})

    net.guest("addr", "add", "192.168.97.201/24", "dev", "g1")
    net.guest("addr", "add", "2001:db8:1::201/64", "dev", "g1", "nodad")
    net.guest("addr", "add", "2001:db8:1::10/64", "dev", "g1", "nodad")
    net.guest("addr", "add", "192.168.97.9/24", "dev", "g1")  # a secondary address
    # per family: global before link-local, then by numeric value
    g1_view = {"ipv4": ["192.168.97.9", "192.168.97.201"],
               "ipv6": ["2001:db8:1::10", "2001:db8:1::201", ll1]}
    view.wait_for({"0": {"ipv4": ["10.1.0.5"], "ipv6": [ll0]}, "1": g1_view},
                  {g0.mac: ["10.1.0.5", ll0], g1.mac: g1_view["ipv4"] + g1_view["ipv6"]})
    assert tools_view(xenstored) == view.xen()
    assert vmmessage_query(xenstored) == view.oracle()

    net.guest("addr", "del", "10.1.0.5/24", "dev", "g0")
    net.guest("addr", "del", "2001:db8:1::10/64", "dev", "g1")
    g1_view = {"ipv4": ["192.168.97.9", "192.168.97.201"], "ipv6": ["2001:db8:1::201", ll1]}
    view.wait_for({"0": {"ipv6": [ll0]}, "1": g1_view},
                  {g0.mac: [ll0], g1.mac: g1_view["ipv4"] + g1_view["ipv6"]})

    # a link that is down reports nothing; the kernel keeps its IPv4 addresses and
    # drops the IPv6 ones, so up again it reports the IPv4 ones and a new link-local
    net.set_up(g1, False)
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0], g1.mac: []})
    net.set_up(g1, True)
    view.wait_for({"0": {"ipv6": [ll0]}, "1": {"ipv4": ["192.168.97.9", "192.168.97.201"],
                                               "ipv6": [ll1]}},
                  {g0.mac: [ll0], g1.mac: ["192.168.97.9", "192.168.97.201", ll1]})
    assert tools_view(xenstored) == view.xen()


def test_a_nic_added_later_is_reported_and_one_removed_disappears(net, view, guest_ovmd):
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    guest_ovmd()
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0]})

    # hot-plugged: the toolstack lists the vif, the NIC appears, down at first
    g1 = net.add_nic(up=False)
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0], g1.mac: []})
    net.set_up(g1, True)
    net.guest("addr", "add", "172.16.0.2/16", "dev", "g1")
    ll1 = link_local(g1.mac)
    view.wait_for({"0": {"ipv6": [ll0]}, "1": {"ipv4": ["172.16.0.2"], "ipv6": [ll1]}},
                  {g0.mac: [ll0], g1.mac: ["172.16.0.2", ll1]})

    # a NIC no vif lists is not the host's business
    g2 = net.add_nic(vif=False)
    net.guest("addr", "add", "172.17.0.2/16", "dev", g2.name)
    # ... until its vif is listed
    net.list_vif(g2.devid, g2.mac)
    ll2 = link_local(g2.mac)
    view.wait_for({"0": {"ipv6": [ll0]}, "1": {"ipv4": ["172.16.0.2"], "ipv6": [ll1]},
                   "2": {"ipv4": ["172.17.0.2"], "ipv6": [ll2]}},
                  {g0.mac: [ll0], g1.mac: ["172.16.0.2", ll1], g2.mac: ["172.17.0.2", ll2]})

    # unplugged: the vif goes, then the NIC
    net.unlist_vif(g1.devid)
    net.guest("link", "del", "g1")
    view.wait_for({"0": {"ipv6": [ll0]}, "2": {"ipv4": ["172.17.0.2"], "ipv6": [ll2]}},
                  {g0.mac: [ll0], g2.mac: ["172.17.0.2", ll2]})


def test_the_message_is_sent_only_when_the_addresses_changed(net, view, guest_ovmd):
    g0 = net.add_nic()
    spare = net.add_nic(vif=False)  # changes here concern no vif
    ll0 = link_local(g0.mac)
    net.guest("addr", "add", "10.1.0.5/24", "dev", "g0")
    net.guest("addr", "add", "2001:db8::5/64", "dev", "g0", "nodad")
    daemon = guest_ovmd()
    pid = daemon.process.pid
    view.wait_for({"0": {"ipv4": ["10.1.0.5"], "ipv6": ["2001:db8::5", ll0]}},
                  {g0.mac: ["10.1.0.5", "2001:db8::5", ll0]})
    sent = view.sent()

    for no_op in (["addr", "replace", "10.1.0.5/24", "dev", "g0"],  # the same again
                  ["addr", "replace", "2001:db8::5/64", "dev", "g0", "nodad"],
                  ["link", "set", "g0", "mtu", "1400"],
                  ["addr", "add", "10.2.0.1/24", "dev", spare.name]):
        idle = wait_idle(pid)
        net.guest(*no_op)
        wait_idle(pid, woken_since=idle)  # the daemon woke, handled it, sleeps again
        assert view.sent() == sent, no_op

    net.guest("addr", "add", "10.1.0.6/24", "dev", "g0")
    view.wait_for({"0": {"ipv4": ["10.1.0.5", "10.1.0.6"], "ipv6": ["2001:db8::5", ll0]}},
                  {g0.mac: ["10.1.0.5", "10.1.0.6", "2001:db8::5", ll0]})
    assert view.sent() == sent + 1


@pytest.mark.parametrize("settings, reporting", [
    ((), True),
    (("REPORT_ADDRESSES=no",), False),
    (('REPORT_ADDRESSES="maybe"',), True),  # not understood: warned about, the default
], ids=["default", "off", "bad-value"])
def test_idle_the_daemon_is_never_woken(net, view, guest_ovmd, settings, reporting):
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    net.guest("addr", "add", "10.1.0.5/24", "dev", "g0")
    daemon = guest_ovmd(*settings)
    pid = daemon.process.pid
    if reporting:
        view.wait_for({"0": {"ipv4": ["10.1.0.5"], "ipv6": [ll0]}}, {g0.mac: ["10.1.0.5", ll0]})
    # voluntary context switches count every time the daemon went to sleep: none while
    # nothing changes (the benchmark prints the same figure)
    before = wait_idle(pid)
    if not reporting:  # without the reporter, not even an address change wakes it
        net.guest("addr", "add", "10.1.0.6/24", "dev", "g0")
    time.sleep(IDLE_SECONDS)  # the window being measured, not a wait for something
    assert context_switches(pid) == before

    if reporting:
        net.guest("addr", "add", "10.1.0.6/24", "dev", "g0")
        view.wait_for({"0": {"ipv4": ["10.1.0.5", "10.1.0.6"], "ipv6": [ll0]}},
                      {g0.mac: ["10.1.0.5", "10.1.0.6", ll0]})
        assert context_switches(pid) > before  # a change does wake it: the count can move
    else:
        assert view.xen() == {} and view.oracle() is None
        assert "not reporting IP addresses to the host (REPORT_ADDRESSES=no)" \
            in daemon.log_text()
    if settings and "maybe" in settings[0]:
        assert "REPORT_ADDRESSES=maybe is not yes or no; reporting IP addresses, the " \
            "default" in daemon.log_text()


def test_after_a_xenstore_restart_the_report_is_published_again(net, guest_ovmd, xenstored,
                                                                dom0):
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    net.guest("addr", "add", "10.1.0.5/24", "dev", "g0")
    daemon = guest_ovmd()
    HostView(dom0, GUEST).wait_for({"0": {"ipv4": ["10.1.0.5"], "ipv6": [ll0]}},
                                   {g0.mac: ["10.1.0.5", ll0]})

    # a new, empty store on the same sockets, as after a resume on another host
    xenstored.stop()
    dom0.close()
    restarted = start_xenstored(xenstored.socket_dir, xenstored.domains)
    try:
        with XenStoreClient.open(restarted.dom0_socket) as fresh:
            net.dom0 = fresh
            net.list_vif(g0.devid, g0.mac)  # the toolstack lists the vif again
            view = HostView(fresh, GUEST)
            view.wait_for({"0": {"ipv4": ["10.1.0.5"], "ipv6": [ll0]}},
                          {g0.mac: ["10.1.0.5", ll0]})
            assert "connected to XenStore again" in daemon.log_text()
            net.guest("addr", "del", "10.1.0.5/24", "dev", "g0")
            view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0]})
    finally:
        restarted.stop()


def test_notifications_lost_to_an_overrun_are_recovered_by_a_new_dump(net, view, guest_ovmd):
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    daemon = guest_ovmd()
    pid = daemon.process.pid
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0]})

    # stopped, the daemon reads nothing: 700 notifications overflow its socket's queue
    count = 700
    addresses = ["10.77.%d.%d" % (n // 200, n % 200 + 1) for n in range(count)]
    os.kill(pid, signal.SIGSTOP)
    try:
        subprocess.run(["ip", "-n", net.guest_ns, "-batch", "-"], check=True, timeout=120,
                       input="".join("addr add %s/32 dev g0\n" % a for a in addresses),
                       text=True)
    finally:
        os.kill(pid, signal.SIGCONT)
    view.wait(lambda: view.xen().get("0", {}).get("ipv4") == addresses,
              "all %d addresses in attr/vif/0/ipv4" % count)
    assert view.xen()["0"]["ipv6"] == [ll0]
    log = daemon.log_text()
    assert "the kernel dropped address notifications" in log

    # the message holds what fits its 8192 bytes: the first addresses in order
    view.wait(lambda: view.oracle() is not None and len(view.oracle()[g0.mac]) > 1,
              "the long message")
    value = view.channel.received()[KEY]
    assert len(value.encode()) <= MAX_VALUE_BYTES
    reported = json.loads(value)[g0.mac]
    every = addresses + [ll0]
    assert len(reported) < len(every) and reported == every[:len(reported)]
    assert "do not fit the 8192 bytes of one message" in daemon.log_text()


def test_a_tentative_address_is_reported_once_duplicate_detection_passed(net, view,
                                                                         guest_ovmd):
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    guest_ovmd()
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0]})
    net.guest("addr", "add", "2001:db8:7::7/64", "dev", "g0")  # with DAD: tentative first
    view.wait_for({"0": {"ipv6": ["2001:db8:7::7", ll0]}}, {g0.mac: ["2001:db8:7::7", ll0]})
    shown = net.guest("-6", "addr", "show", "dev", "g0")
    assert "tentative" not in shown


def test_addresses_on_a_bridge_over_the_nic_are_the_vifs(net, view, guest_ovmd):
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    guest_ovmd()
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0]})
    # the guest bridges its NIC: the bridge carries the NIC's MAC, the address is on it
    net.guest("link", "add", "br0", "address", g0.mac, "type", "bridge")
    net.guest("link", "set", "g0", "master", "br0")
    net.guest("link", "set", "br0", "up")
    net.guest("addr", "add", "10.3.0.1/24", "dev", "br0")
    view.wait(lambda: view.xen().get("0", {}).get("ipv4") == ["10.3.0.1"]
              and view.oracle()[g0.mac][0] == "10.3.0.1", "the bridge's address on vif 0")
    # leaving the bridge (an AF_BRIDGE RTM_DELLINK) is not the NIC going away
    net.guest("link", "set", "g0", "nomaster")
    net.guest("link", "del", "br0")
    view.wait_for({"0": {"ipv6": [ll0]}}, {g0.mac: [ll0]})


def test_when_attr_is_not_the_guests_the_message_still_goes(net, view, guest_ovmd, dom0):
    dom0.set_perms("/local/domain/1/attr", ["n0", "r1"])  # a toolstack that keeps it
    g0 = net.add_nic()
    ll0 = link_local(g0.mac)
    net.guest("addr", "add", "10.1.0.5/24", "dev", "g0")
    daemon = guest_ovmd()
    view.wait(lambda: view.oracle() == {g0.mac: ["10.1.0.5", ll0]}, "the message")
    net.guest("addr", "del", "10.1.0.5/24", "dev", "g0")
    view.wait(lambda: view.oracle() == {g0.mac: [ll0]}, "the next message")
    assert view.xen() == {}
    log = daemon.log_text()
    assert log.count("cannot write attr/vif: ") == 1  # said once, not at every change
    assert "(EACCES)" in log
