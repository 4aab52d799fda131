"""The reporter's view of the kernel, for what a real kernel will not do on demand: a
dump marked interrupted, a refused dump, a malformed datagram. The routing socket is
replaced by one end of a datagram socketpair (the test plays the kernel on the other);
XenStore is away, so nothing is published. The rest is tested end to end in
test_addresses.py."""
from __future__ import annotations

import socket

import pytest
from rtnetlink_capture import address, link, message

from ovmd.daemon.addresses import DUMP_TIMER, TIMER, AddressReporter
from ovmd.daemon.loop import EventLoop
from ovmd.netlink import NLM_F_DUMP_INTR, NLM_F_MULTI, RTM_GETADDR, RTM_GETLINK, parse
from ovmd.paths import Paths

MAC = b"\x00\x16\x3e\x00\x00\x01"


class AwayLink:
    """A host link that is not connected (the reporter then publishes nothing)."""
    client = None

    def add_watch(self, *args) -> None:
        pass

    def on_connected(self, callback) -> None:
        pass


@pytest.fixture
def kernel(tmp_path):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    loop = EventLoop()
    reporter = AddressReporter(Paths(str(tmp_path)), loop, AwayLink())
    reporter.sock = ours
    yield reporter, theirs
    reporter.close()
    theirs.close()


def request(theirs):
    """The dump the reporter asked for: (type, seq)."""
    (msg,) = parse(theirs.recv(4096))
    return msg.type, msg.seq


def reply(reporter, theirs, *datagrams):
    for data in datagrams:
        theirs.send(data)
    reporter._on_netlink(0)


def done(seq, error=0, flags=NLM_F_MULTI):
    return message(3, error.to_bytes(4, "little", signed=True), flags=flags, seq=seq)


def test_a_dump_is_links_then_addresses_then_live(kernel):
    reporter, theirs = kernel
    reporter._dump()
    assert request(theirs) == (RTM_GETLINK, 1)
    reply(reporter, theirs, link(2, 0x1043, "eth0", MAC, seq=1) + done(1))
    assert request(theirs) == (RTM_GETADDR, 2)
    assert TIMER not in reporter.loop.timers  # nothing is published while dumping
    reply(reporter, theirs, address(2, "10.0.0.1", 24, seq=2), done(2))
    assert reporter.dumping == [] and TIMER in reporter.loop.timers
    assert [a.text for a in reporter.table.addresses.values()] == ["10.0.0.1"]


def test_a_dump_the_kernel_marks_interrupted_is_done_again(kernel):
    reporter, theirs = kernel
    reporter._dump()
    request(theirs)
    reply(reporter, theirs, link(2, 0x1043, "eth0", MAC, seq=1) + done(1))
    request(theirs)
    reply(reporter, theirs, address(2, "10.0.0.1", 24, seq=2, flags=NLM_F_DUMP_INTR),
          address(2, "10.0.0.7", 24) + done(2, flags=NLM_F_DUMP_INTR | NLM_F_MULTI))
    assert request(theirs) == (RTM_GETLINK, 3)  # again, from a clean table
    assert reporter.dumping == [RTM_GETLINK, RTM_GETADDR] and reporter.table.links == {}


def test_notifications_during_a_dump_are_applied_in_order(kernel):
    reporter, theirs = kernel
    reporter._dump()
    request(theirs)
    reply(reporter, theirs, link(2, 0x1043, "eth0", MAC, seq=1),
          address(2, "10.0.0.8", 24, seq=77, pid=4242),  # someone's ip addr add
          done(1))
    request(theirs)
    reply(reporter, theirs, address(2, "10.0.0.8", 24, seq=2) + address(2, "10.0.0.9", 24, seq=2),
          address(2, "10.0.0.9", 24, deleted=True, seq=78, pid=4242), done(2))
    assert [a.text for a in reporter.table.addresses.values()] == ["10.0.0.8"]


def test_a_refused_dump_is_asked_for_again_later(kernel, caplog):
    reporter, theirs = kernel
    reporter._dump()
    request(theirs)
    reply(reporter, theirs, message(2, (-16).to_bytes(4, "little", signed=True) + b"\0" * 16,
                                    seq=1))
    assert reporter.dumping == [] and DUMP_TIMER in reporter.loop.timers
    assert "cannot list the guest's links (Device or resource busy); trying again in 1 s" \
        in caplog.text
    reporter.loop.timers[DUMP_TIMER][1]()
    assert request(theirs) == (RTM_GETLINK, 2)


def test_a_malformed_datagram_starts_a_new_dump(kernel, caplog):
    reporter, theirs = kernel
    reporter._dump()
    request(theirs)
    reply(reporter, theirs, link(2, 0x1043, "eth0", MAC, seq=1) + done(1))
    request(theirs)
    reply(reporter, theirs, address(2, "10.0.0.1", 24, seq=2) + done(2))
    assert reporter.dumping == []
    reply(reporter, theirs, b"\x40\0\0\0" + b"\0" * 12)
    assert "malformed rtnetlink datagram" in caplog.text
    assert request(theirs) == (RTM_GETLINK, 3) and reporter.table.addresses == {}


def test_another_dump_asked_for_during_one_follows_it(kernel):
    reporter, theirs = kernel
    reporter._dump()
    request(theirs)
    reporter._dump()  # an overrun while dumping: a socket runs one dump at a time
    with pytest.raises(BlockingIOError):
        theirs.setblocking(False)
        theirs.recv(4096)
    theirs.setblocking(True)
    reply(reporter, theirs, done(1))
    request(theirs)
    reply(reporter, theirs, done(2))
    assert request(theirs) == (RTM_GETLINK, 3)
