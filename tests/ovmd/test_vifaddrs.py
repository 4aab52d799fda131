"""What the host is told: the table of links and addresses, which addresses count, their
order, the ``attr/vif`` nodes and their minimal changes, the message's JSON value."""
from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtnetlink_capture import captured

from ovmd.netlink import Address, Done, Link, LinkGone, parse
from ovmd.vifaddrs import (
    InterfaceTable,
    VifAddresses,
    normalize_mac,
    oracle_value,
    reportable,
    vif_addresses,
    xen_changes,
    xen_nodes,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
V4, V6 = socket.AF_INET, socket.AF_INET6
UP, DOWN, LOOPBACK = 0x1043, 0x1002, 0x49
MAC0, MAC1 = "00:16:3e:00:00:01", "00:16:3e:00:00:02"


def addr(index, text, flags=0x80, scope=0, prefixlen=24, new=True):
    family = V6 if ":" in text else V4
    return Address(new, family, index, prefixlen, flags, scope, socket.inet_pton(family, text))


def table_of(*bodies):
    table = InterfaceTable()
    for body in bodies:
        table.apply(body)
    return table


def report(table, vifs):
    return {v.devid: (v.mac, list(v.ipv4), list(v.ipv6)) for v in vif_addresses(table, vifs)}


# --- the table ----------------------------------------------------------------------------

def test_the_captured_kernel_view_becomes_a_report_step_by_step():
    table = InterfaceTable()
    vifs = {"0": MAC1, "1": MAC0}  # h0 is vif 0, g0 vif 1
    seen = []
    for label, data in captured():
        for message in parse(data):
            table.apply(message.body)
        seen.append((label.split(",")[0], report(table, vifs)))
    after_dump = {"0": (MAC1, [], ["fe80::216:3eff:fe00:2"]),
                  "1": (MAC0, ["10.1.0.5", "10.1.0.9"], ["2001:db8::5", "fe80::216:3eff:fe00:1"])}
    assert [s for label, s in seen if label.startswith("dump of the addresses")][-1] == after_dump
    deleted = [s for label, s in seen if "addr del" in label][-1]
    assert deleted["1"] == (MAC0, ["10.1.0.5"], ["2001:db8::5", "fe80::216:3eff:fe00:1"])
    assert seen[-1][1] == {"0": (MAC1, [], []), "1": (MAC0, [], [])}
    assert table.links == {1: ("lo", "00:00:00:00:00:00", 0x8)} and not table.addresses


def test_apply_says_whether_anything_changed():
    table = InterfaceTable()
    assert table.apply(Link(0, 2, UP, "eth0", MAC0))
    assert not table.apply(Link(0, 2, UP, "eth0", MAC0))
    assert not table.apply(Link(0, 2, UP, None, None))  # a notification without names
    assert table.links[2] == ("eth0", MAC0, UP)
    assert table.apply(Link(0, 2, DOWN, None, None))
    assert table.links[2] == ("eth0", MAC0, DOWN)
    assert table.apply(addr(2, "10.0.0.1"))
    assert not table.apply(addr(2, "10.0.0.1"))  # the same again (ip addr replace)
    assert table.apply(addr(2, "10.0.0.1", flags=0x81))  # now a secondary
    assert table.apply(addr(2, "10.0.0.1", prefixlen=16))  # another prefix: another entry
    assert len(table.addresses) == 2
    assert table.apply(addr(2, "10.0.0.1", new=False))
    assert not table.apply(addr(2, "10.9.9.9", new=False))  # never known
    assert not table.apply(Done(0)) and not table.apply(None)


def test_other_families_repeat_links_and_a_bridge_port_leaving_is_not_a_link_going():
    table = table_of(Link(0, 2, UP, "eth0", MAC0), addr(2, "10.0.0.1"))
    assert not table.apply(Link(7, 2, DOWN, "eth0", MAC0))  # AF_BRIDGE
    assert not table.apply(Link(V6, 2, DOWN, "eth0", MAC0))
    assert not table.apply(LinkGone(7, 2))
    assert table.links[2].flags == UP and len(table.addresses) == 1
    assert table.apply(LinkGone(0, 2))
    assert table.links == {} and table.addresses == {}  # its addresses went with it


# --- which addresses, in which order ------------------------------------------------------

@pytest.mark.parametrize("address, reported", [
    (addr(2, "10.0.0.1"), True),
    (addr(2, "10.0.0.2", flags=0x81), True),  # IPv4 secondary
    (addr(2, "169.254.3.4", scope=253), True),  # IPv4 link-local
    (addr(2, "127.0.0.2", scope=254), False),  # host scope
    (addr(2, "10.0.0.3", scope=255), False),  # nowhere
    (addr(2, "2001:db8::1", flags=0x82), True),  # nodad
    (addr(2, "fe80::1", scope=253), True),
    (addr(2, "2001:db8::2", flags=0xC0), False),  # tentative: DAD running
    (addr(2, "2001:db8::3", flags=0x48), False),  # DAD failed
    (addr(2, "2001:db8::4", flags=0x01), False),  # temporary (privacy)
    (addr(2, "2001:db8::5", flags=0x20), True),  # deprecated: still assigned
    (addr(2, "2001:db8::6", flags=0x04), True),  # optimistic DAD: usable
    (addr(2, "::1", scope=254), False),
])
def test_which_addresses_are_reported(address, reported):
    assert reportable(address) is reported


def test_only_up_links_with_a_vifs_mac_count_and_links_sharing_a_mac_merge():
    table = table_of(
        Link(0, 1, LOOPBACK, "lo", "00:00:00:00:00:00"), addr(1, "127.0.0.1", scope=254),
        Link(0, 2, UP, "eth0", MAC0), addr(2, "10.0.0.9"), addr(2, "fe80::216:3eff:fe00:1", scope=253),
        # a bridge over eth0 carries its MAC: the vif's addresses are on it
        Link(0, 3, UP, "br0", MAC0), addr(3, "192.0.2.1"), addr(3, "2001:db8::1"),
        addr(3, "10.0.0.9"),  # the same address twice: once
        Link(0, 4, DOWN, "eth1", MAC1), addr(4, "10.1.0.1"),
        Link(0, 5, UP, "eth2", "00:16:3e:00:00:03"), addr(5, "10.2.0.1"),  # no vif
        addr(9, "10.3.0.1"),  # a link not known (yet)
    )
    assert report(table, {"0": MAC0, "1": MAC1, "10": "00:16:3e:00:00:0a", "2": MAC0}) == {
        "0": (MAC0, ["10.0.0.9", "192.0.2.1"], ["2001:db8::1", "fe80::216:3eff:fe00:1"]),
        "1": (MAC1, [], []),
        "2": (MAC0, ["10.0.0.9", "192.0.2.1"], ["2001:db8::1", "fe80::216:3eff:fe00:1"]),
        "10": ("00:16:3e:00:00:0a", [], []),
    }
    assert [v.devid for v in vif_addresses(table, {"10": MAC0, "9": MAC0, "2": MAC0})] \
        == ["2", "9", "10"]


def test_order_global_before_link_local_then_numeric():
    table = table_of(Link(0, 2, UP, "eth0", MAC0), *[
        addr(2, text, scope=scope) for text, scope in [
            ("fe80::2", 253), ("2001:db8::10", 0), ("fe80::1", 253), ("2001:db8::9", 0),
            ("169.254.0.1", 253), ("10.0.0.10", 0), ("10.0.0.9", 0), ("9.0.0.1", 0)]])
    assert report(table, {"0": MAC0}) == {"0": (MAC0, ["9.0.0.1", "10.0.0.9", "10.0.0.10",
                                                       "169.254.0.1"],
                                                ["2001:db8::9", "2001:db8::10", "fe80::1",
                                                 "fe80::2"])}


@pytest.mark.parametrize("text, mac", [
    ("00:16:3e:0a:0b:0c", "00:16:3e:0a:0b:0c"),
    ("00:16:3E:0A:0B:0C\n", "00:16:3e:0a:0b:0c"),
    ("00-16-3e-0a-0b-0c", "00:16:3e:0a:0b:0c"),
    ("0:16:3e:a:b:c", "00:16:3e:0a:0b:0c"),
    ("00:16:3e:0a:0b", None),
    ("00:16:3e:0a:0b:0c:0d", None),
    ("00:16:3e:0a:0b:0g", None),
    ("", None),
])
def test_mac_addresses_are_normalized(text, mac):
    assert normalize_mac(text) == mac


# --- what is written ----------------------------------------------------------------------

REPORT = [VifAddresses("0", MAC0, ("192.168.97.201",), ("fe80::216:3eff:fe00:1",)),
          VifAddresses("1", MAC1, (), ()),
          VifAddresses("2", "00:16:3e:00:00:03", ("10.0.0.1", "10.0.0.2"), ())]


def test_xen_nodes_one_leaf_per_address():
    assert xen_nodes(REPORT) == {
        "attr/vif/0/ipv4/0": "192.168.97.201",
        "attr/vif/0/ipv6/0": "fe80::216:3eff:fe00:1",
        "attr/vif/2/ipv4/0": "10.0.0.1",
        "attr/vif/2/ipv4/1": "10.0.0.2",
    }


def test_the_message_value_is_compact_json_per_mac_ipv4_first():
    value, dropped = oracle_value(REPORT)
    assert value == ('{"00:16:3e:00:00:01":["192.168.97.201","fe80::216:3eff:fe00:1"],'
                     '"00:16:3e:00:00:02":[],"00:16:3e:00:00:03":["10.0.0.1","10.0.0.2"]}')
    assert dropped == 0
    assert oracle_value([]) == ("{}", 0)


def test_a_long_value_loses_the_last_addresses_of_the_longest_lists():
    many = [VifAddresses("0", MAC0, tuple("10.0.%d.%d" % (i // 250, i % 250) for i in range(30)),
                         ("2001:db8::1",)),
            VifAddresses("1", MAC1, ("10.9.0.1", "10.9.0.2"), ())]
    full, _ = oracle_value(many)
    value, dropped = oracle_value(many, limit=len(full) - 20)
    assert len(value) <= len(full) - 20 and dropped == 2
    kept = json.loads(value)
    assert kept[MAC1] == ["10.9.0.1", "10.9.0.2"]
    assert kept[MAC0] == list(many[0].ipv4[:29])  # the IPv6 one went first, then one more
    previous = None
    for limit in range(len(full) - 60, len(full) + 1):  # always within, no more cut than needed
        value, dropped = oracle_value(many, limit=limit)
        assert len(value) <= limit
        if previous is not None and dropped < previous[1]:
            assert len(previous[0]) < len(value) <= limit
        previous = (value, dropped)
    assert previous == (full, 0)
    assert oracle_value([VifAddresses("0", MAC0, ("10.0.0.1",), ())], limit=5) == \
        ('{"%s":[]}' % MAC0, 1)  # the MACs alone do not fit: the channel will refuse it


def test_xen_changes_write_what_differs_and_remove_as_high_as_possible():
    current = {
        "attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv4/1": "10.0.0.2",
        "attr/vif/0/ipv6/0": "fe80::1",
        "attr/vif/1/ipv4/0": "10.1.0.1",
        "attr/vif/0/name": "eth0",  # something ovmd did not write: attr/vif is ovmd's
    }
    wanted = {"attr/vif/0/ipv4/0": "10.0.0.1", "attr/vif/0/ipv6/0": "fe80::2",
              "attr/vif/2/ipv6/0": "fe80::3"}
    writes, removals = xen_changes(current, wanted)
    assert writes == {"attr/vif/0/ipv6/0": "fe80::2", "attr/vif/2/ipv6/0": "fe80::3"}
    assert removals == ["attr/vif/0/ipv4/1", "attr/vif/0/name", "attr/vif/1"]
    assert xen_changes(wanted, wanted) == ({}, [])
    assert xen_changes(current, {})[1] == ["attr/vif/0", "attr/vif/1"]


def apply_changes(tree, writes, removals):
    tree = {p: v for p, v in tree.items()
            if not any(p == r or p.startswith(r + "/") for r in removals)}
    tree.update(writes)
    return tree


leaf = st.builds("attr/vif/{}/{}/{}".format, st.sampled_from("0123"),
                 st.sampled_from(["ipv4", "ipv6", "x"]), st.sampled_from("012"))
trees = st.dictionaries(leaf, st.sampled_from(["a", "b"]), max_size=12)


@FAST
@given(trees, trees)
def test_xen_changes_turn_any_tree_into_the_wanted_one(current, wanted):
    # as XenStore has them: a leaf is never also a parent here
    writes, removals = xen_changes(current, wanted)
    assert apply_changes(current, writes, removals) == wanted
    assert all(current.get(p) != v for p, v in writes.items())
    assert not any(r.startswith(q + "/") for r in removals for q in removals)
