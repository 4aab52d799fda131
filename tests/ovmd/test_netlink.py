"""The rtnetlink parser: datagrams captured from a real kernel, constructed ones, a live
dump compared with ``ip -json``, and any bytes at all (hypothesis): records or
NetlinkError, never another exception."""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rtnetlink_capture import address, captured, link, message
from testlib import require_root, require_tool

from ovmd import netlink
from ovmd.netlink import (
    GROUPS,
    NLM_F_DUMP_INTR,
    NLM_F_MULTI,
    RTM_GETADDR,
    RTM_GETLINK,
    Address,
    Done,
    Error,
    Link,
    LinkGone,
    NetlinkError,
    dump_request,
    parse,
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
V4 = socket.AF_INET
V6 = socket.AF_INET6


def summary(body):
    if isinstance(body, Address):
        return ("new" if body.new else "del", body.ifindex, body.text, body.prefixlen,
                body.flags, body.scope)
    if isinstance(body, Link):
        return ("link", body.ifindex, body.name, body.hwaddr, body.flags)
    if isinstance(body, LinkGone):
        return ("gone", body.ifindex)
    return body


def test_what_a_real_kernel_sent_parses_into_these_records():
    records = [summary(m.body) for _, data in captured() for m in parse(data)]
    assert records == [
        ("link", 1, "lo", "00:00:00:00:00:00", 0x8),
        ("link", 2, "h0", "00:16:3e:00:00:02", 0x11043),  # up, running, lower up
        ("link", 3, "g0", "00:16:3e:00:00:01", 0x11043),
        Done(0),
        ("new", 3, "10.1.0.5", 24, 0x80, 0),
        ("new", 3, "10.1.0.9", 24, 0x81, 0),  # permanent, secondary
        ("new", 2, "fe80::216:3eff:fe00:2", 64, 0x80, 253),
        ("new", 3, "2001:db8::5", 64, 0x82, 0),  # permanent, nodad
        ("new", 3, "fe80::216:3eff:fe00:1", 64, 0x80, 253),
        Done(0),
        ("del", 3, "10.1.0.9", 24, 0x81, 0),
        ("link", 2, "h0", "00:16:3e:00:00:02", 0x1002),  # going: no longer up
        ("del", 2, "fe80::216:3eff:fe00:2", 64, 0x80, 253),
        ("link", 3, "g0", "00:16:3e:00:00:01", 0x1002),
        ("del", 3, "2001:db8::5", 64, 0x82, 0),
        ("del", 3, "fe80::216:3eff:fe00:1", 64, 0x80, 253),
        ("gone", 2),
        ("del", 3, "10.1.0.5", 24, 0x80, 0),
        ("gone", 3),
    ]


def test_dump_replies_carry_the_requests_sequence_and_the_multi_flag():
    for label, data in captured():
        for m in parse(data):
            if label.startswith("dump"):
                assert m.flags & NLM_F_MULTI and m.seq in (RTM_GETLINK, RTM_GETADDR)


def test_a_dump_request_is_a_header_and_an_empty_family_message():
    assert dump_request(RTM_GETLINK, 7) == bytes.fromhex(
        "20000000" "1200" "0103" "07000000" "00000000" + "00" * 16)
    assert dump_request(RTM_GETADDR, 8) == bytes.fromhex(
        "18000000" "1600" "0103" "08000000" "00000000" + "00" * 8)
    with pytest.raises(ValueError):
        dump_request(netlink.RTM_NEWADDR, 1)


def test_several_messages_in_one_datagram_keep_their_order_and_headers():
    data = (link(4, 0x1, "eth0", b"\x00\x16\x3e\x01\x02\x03", seq=5, pid=9)
            + address(4, "192.0.2.7", 24, flags=0x80, seq=5, pid=9)
            + message(3, b"\0\0\0\0", flags=NLM_F_DUMP_INTR | NLM_F_MULTI, seq=5, pid=9))
    messages = parse(data)
    assert [(m.type, m.seq, m.pid) for m in messages] == [(16, 5, 9), (20, 5, 9), (3, 5, 9)]
    assert messages[2].flags & NLM_F_DUMP_INTR and messages[2].body == Done(0)
    assert messages[0].body == Link(0, 4, 0x1, "eth0", "00:16:3e:01:02:03")
    assert messages[1].body.text == "192.0.2.7"


@pytest.mark.parametrize("data, body", [
    (message(3, b""), Done(0)),  # older kernels: no payload
    (message(3, b"\xf0\xff\xff\xff"), Done(-16)),
    (message(2, b"\xea\xff\xff\xff" + b"\0" * 16), Error(-22)),
    (message(2, b"\0\0\0\0" + b"\0" * 16), Error(0)),  # an acknowledgement
    (message(1, b""), None),  # NLMSG_NOOP
    (message(24, b"\0" * 12), None),  # RTM_NEWROUTE: not ours
    (link(6, 0, deleted=True), LinkGone(0, 6)),
    (link(6, 0, deleted=True, family=7), LinkGone(7, 6)),  # a bridge port left
    (link(6, 0x1043), Link(0, 6, 0x1043, None, None)),  # a notification without names
])
def test_control_and_other_messages(data, body):
    assert parse(data)[0].body == body


def test_address_details():
    # IFA_FLAGS (32 bits) wins over the header's 8 bits
    assert parse(address(2, "2001:db8::1", 64, flags=0x80, extended_flags=0x840))[0].body.flags \
        == 0x840
    # IFA_ADDRESS alone (IPv6 notifications) is the address
    body = parse(address(2, "2001:db8::1", 64, local=False))[0].body
    assert (body.family, body.text, body.new) == (V6, "2001:db8::1", True)
    # a deletion
    assert parse(address(2, "10.0.0.1", 8, deleted=True))[0].body.new is False
    # IFA_LOCAL is preferred to IFA_ADDRESS (the peer of a point-to-point link)
    assert parse(address(2, "10.0.0.1", 32, peer="10.9.9.9"))[0].body.text == "10.0.0.1"


def test_an_address_of_another_family_is_not_an_ip_address():
    mctp = bytes([45, 0, 0, 0, 3, 0, 0, 0]) + b"\x05\0\x01\0\x08\0\0\0"  # AF_MCTP, one byte
    assert parse(message(20, mctp))[0].body is None


@pytest.mark.parametrize("data, why", [
    (b"\x10\0\0\0", "stray bytes"),
    (b"\x08\0\0\0" + b"\0" * 12, "does not fit"),  # length below the header's
    (b"\x40\0\0\0" + b"\0" * 12, "does not fit"),  # longer than the datagram
    (message(16, b"\0" * 8), "shorter than ifinfomsg"),
    (message(20, b"\0" * 4), "shorter than ifaddrmsg"),
    (message(20, bytes([V4, 24, 0, 0, 2, 0, 0, 0])), "no 4-byte address"),
    (message(20, bytes([V6, 64, 0, 0, 2, 0, 0, 0]) + b"\x08\0\x02\0" + b"\0" * 4),
     "no 16-byte address"),
    (message(16, b"\0" * 16 + b"\x02\0"), "truncated attribute"),
    (message(16, b"\0" * 16 + b"\x09\0\x03\0abcd"), "attribute length"),
    (message(16, b"\0" * 16 + b"\x02\0\x03\0"), "attribute length"),
    (message(2, b"\0\0"), "without an error code"),
])
def test_malformed_datagrams_raise_netlink_error_naming_the_problem(data, why):
    with pytest.raises(NetlinkError, match=why):
        parse(data)


# --- properties ---------------------------------------------------------------------------

indexes = st.integers(1, 2 ** 31 - 1)
macs = st.binary(min_size=6, max_size=6)
names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=15)
v4 = st.binary(min_size=4, max_size=4).map(lambda raw: socket.inet_ntop(V4, raw))
v6 = st.binary(min_size=16, max_size=16).map(lambda raw: socket.inet_ntop(V6, raw))
links = st.builds(lambda i, f, n, m: (link(i, f, n, m), Link(0, i, f, n, ":".join(
    "%02x" % b for b in m))), indexes, st.integers(0, 2 ** 32 - 1), names, macs)
addresses = st.builds(
    lambda i, a, p, f, s, d: (address(i, a, p, scope=s, deleted=d, extended_flags=f),
                              Address(not d, V6 if ":" in a else V4, i, p, f, s,
                                      socket.inet_pton(V6 if ":" in a else V4, a))),
    indexes, st.one_of(v4, v6), st.integers(0, 128), st.integers(0, 2 ** 32 - 1),
    st.integers(0, 255), st.booleans())


@FAST
@given(st.lists(st.one_of(links, addresses), max_size=10))
def test_encoded_records_parse_back_identically(pairs):
    data = b"".join(encoded for encoded, _ in pairs)
    assert [m.body for m in parse(data)] == [record for _, record in pairs]


@FAST
@given(st.binary(max_size=600))
def test_any_bytes_give_records_or_netlink_error(data):
    try:
        parse(data)
    except NetlinkError:
        pass


@FAST
@given(st.sampled_from([data for _, data in captured()]), st.integers(0, 3000),
       st.integers(0, 255), st.integers(0, 3000))
def test_a_real_datagram_damaged_anywhere_gives_records_or_netlink_error(data, at, byte, cut):
    damaged = bytearray(data)
    damaged[at % len(damaged)] = byte
    try:
        parse(bytes(damaged[:cut % (len(damaged) + 1)]))
    except NetlinkError:
        pass


# --- against the kernel -------------------------------------------------------------------

def test_a_live_dump_agrees_with_ip_json():
    require_root("network namespaces")
    require_tool("ip")
    ns = "ovip-n-%d-%s" % (os.getpid(), secrets.token_hex(3))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def ip(*args):
            subprocess.run(["ip", "-n", ns] + list(args), check=True)
        ip("link", "add", "a0", "type", "veth", "peer", "name", "b0")
        ip("link", "set", "a0", "up")
        ip("link", "set", "b0", "up")
        ip("link", "add", "br0", "type", "bridge")
        ip("link", "set", "b0", "master", "br0")
        ip("addr", "add", "198.51.100.4/25", "dev", "a0")
        ip("addr", "add", "2001:db8:9::4/48", "dev", "br0", "nodad")
        script = ("import socket, sys\nfrom ovmd import netlink as n\n"
                  "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)\n"
                  "s.bind((0, %d))\n"
                  "for t in (n.RTM_GETLINK, n.RTM_GETADDR):\n"
                  "    s.send(n.dump_request(t, t))\n"
                  "    while True:\n"
                  "        data = s.recv(65536)\n"
                  "        sys.stdout.write(data.hex() + '\\n')\n"
                  "        if any(m.type == n.NLMSG_DONE for m in n.parse(data)):\n"
                  "            break\n" % GROUPS)
        dump = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", script],
                              capture_output=True, text=True, check=True).stdout
        shown = json.loads(subprocess.run(["ip", "-n", ns, "-json", "addr", "show"],
                                          capture_output=True, text=True, check=True).stdout)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    bodies = [m.body for line in dump.split() for m in parse(bytes.fromhex(line))]
    ours_links = {(b.ifindex, b.name, b.hwaddr) for b in bodies if isinstance(b, Link)}
    ours_addrs = {(b.ifindex, b.text, b.prefixlen) for b in bodies if isinstance(b, Address)}
    theirs_links = {(i["ifindex"], i["ifname"], i["address"]) for i in shown}
    theirs_addrs = {(i["ifindex"], a["local"], a["prefixlen"]) for i in shown
                    for a in i["addr_info"]}
    assert ours_links == theirs_links
    assert ours_addrs == theirs_addrs
    assert {("198.51.100.4", 25), ("2001:db8:9::4", 48)} <= {a[1:] for a in ours_addrs}
