"""Choosing and driving the transports: unix socket and the guest's /dev/xen/xenbus.

A real ``/dev/xen/xenbus`` only exists inside a Xen guest, never on this machine. The
device tests use a fake: a ``SOCK_SEQPACKET`` socketpair whose fd the xenbus transport
reads and writes with ``os.read``/``os.write`` as it does the device, and which, like the
device, returns one whole message per read (see ``fake_peer_helpers.xenbus_client``).
Where the device reports something a socket cannot (an errno from ``write()``), the test
says so and substitutes only that system call.
"""
from __future__ import annotations

import errno
import os
import socket

import pytest
from fake_peer_helpers import event, ok, peer_factory, reply, xenbus_client

from ovmd.xenstore import ConnectionClosedError, WatchEvent, XenStoreClient, XenStoreError
from ovmd.xenstore import transport as transport_module
from ovmd.xenstore.protocol import HEADER_SIZE, MAX_PAYLOAD, Op
from ovmd.xenstore.transport import (
    UnixSocketTransport,
    XenbusTransport,
    candidate_paths,
    open_default,
    open_path,
)


@pytest.fixture
def listening_socket(tmp_path):
    path = str(tmp_path / "socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4)
    yield path
    listener.close()


@pytest.fixture
def device():
    """``device(handlers)`` -> (client, peer) on the fake xenbus device."""
    yield from peer_factory(xenbus_client)


# -- choosing a transport ----------------------------------------------------------------

def test_a_character_device_path_opens_the_xenbus_transport():
    transport = open_path("/dev/null")  # a character device, like /dev/xen/xenbus
    try:
        assert isinstance(transport, XenbusTransport)
        assert transport.kind == "xenbus"
    finally:
        transport.close()


def test_a_socket_path_opens_the_unix_transport(listening_socket):
    transport = open_path(listening_socket)
    try:
        assert isinstance(transport, UnixSocketTransport)
        assert transport.kind == "unix"
    finally:
        transport.close()


def test_a_regular_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConnectionClosedError, match="neither a unix socket"):
        open_path(str(path))


def test_a_missing_path_is_a_connection_error(tmp_path):
    with pytest.raises(ConnectionClosedError, match="cannot reach"):
        XenStoreClient.open(str(tmp_path / "nothing"))


def test_a_socket_nobody_listens_on_is_a_connection_error(tmp_path):
    path = str(tmp_path / "stale")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the socket file stays, nobody listens
    with pytest.raises(ConnectionClosedError, match="cannot connect"):
        open_path(path)


def test_xenstored_path_alone_is_tried_when_set():
    assert candidate_paths({"XENSTORED_PATH": "/tmp/x/socket"}) == ["/tmp/x/socket"]
    assert candidate_paths({}) == ["/var/run/xenstored/socket", "/dev/xen/xenbus"]
    assert candidate_paths({"XENSTORED_PATH": ""}) == ["/var/run/xenstored/socket",
                                                       "/dev/xen/xenbus"]


def test_open_uses_xenstored_path(monkeypatch, listening_socket):
    monkeypatch.setenv("XENSTORED_PATH", listening_socket)
    with XenStoreClient.open() as client:
        assert client.transport.kind == "unix"
        assert client.transport.path == listening_socket


def test_auto_falls_back_from_the_socket_to_the_device(monkeypatch, tmp_path):
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setattr(transport_module, "DEFAULT_SOCKET", str(tmp_path / "no-socket"))
    monkeypatch.setattr(transport_module, "XENBUS_DEVICE", "/dev/null")
    transport = open_default()
    try:
        assert transport.kind == "xenbus" and transport.path == "/dev/null"
    finally:
        transport.close()


def test_auto_prefers_the_socket(monkeypatch, listening_socket):
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setattr(transport_module, "DEFAULT_SOCKET", listening_socket)
    monkeypatch.setattr(transport_module, "XENBUS_DEVICE", "/dev/null")
    transport = open_default()
    try:
        assert transport.kind == "unix"
    finally:
        transport.close()


def test_auto_with_nothing_found_names_every_attempt(monkeypatch, tmp_path):
    monkeypatch.delenv("XENSTORED_PATH", raising=False)
    monkeypatch.setattr(transport_module, "DEFAULT_SOCKET", str(tmp_path / "no-socket"))
    monkeypatch.setattr(transport_module, "XENBUS_DEVICE", str(tmp_path / "no-device"))
    with pytest.raises(ConnectionClosedError) as info:
        open_default()
    assert "no-socket" in str(info.value) and "no-device" in str(info.value)


# -- the xenbus device and its quirks -----------------------------------------------------

def test_operations_over_the_device(device):
    client, peer = device({Op.READ: lambda r: [reply(r, b"guest value")], Op.WRITE: ok})
    client.write("data/x", "v")
    assert client.read("data/x") == "guest value"
    assert [p.type for p in peer.received] == [Op.WRITE, Op.READ]


def test_device_is_never_read_with_zero_length_and_reads_fit_a_whole_message(
        device, monkeypatch):
    lengths = []
    real_read = os.read

    def recording_read(fd, length):
        lengths.append(length)
        return real_read(fd, length)

    monkeypatch.setattr(transport_module.os, "read", recording_read)
    client, peer = device({Op.READ: lambda r: [event("a", "t"), reply(r, b"x" * MAX_PAYLOAD)]})
    assert client.read("data/big") == "x" * MAX_PAYLOAD
    assert client.pending_events() == [WatchEvent("a", "t")]
    assert lengths and min(lengths) >= HEADER_SIZE + MAX_PAYLOAD


def test_watch_reply_with_req_id_zero_is_accepted(device):
    # Older guest kernels answer WATCH (and UNWATCH) themselves, with req_id 0.
    client, peer = device({
        Op.WATCH: lambda r: [reply(r, req_id=0), event("control/x", "tok")],
        Op.UNWATCH: lambda r: [reply(r, req_id=0)],
        Op.READ: lambda r: [reply(r, b"after")],
    })
    client.watch("control/x", "tok")
    assert client.wait_event(timeout=5) == WatchEvent("control/x", "tok")
    client.unwatch("control/x", "tok")
    assert client.read("control/x") == "after"  # still in step afterwards


def test_read_reply_with_req_id_zero_is_not_taken_for_the_reply(device):
    # The req_id 0 allowance is for WATCH/UNWATCH only: a stray READ reply is dropped.
    client, _ = device({Op.READ: lambda r: [reply(r, b"stray", req_id=0), reply(r, b"real")]})
    assert client.read("x") == "real"


def test_each_request_is_one_write_on_the_device(device, monkeypatch):
    writes = []
    real_write = os.write

    def recording_write(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(transport_module.os, "write", recording_write)
    client, peer = device({Op.WRITE: ok})
    client.write("data/x", "value")
    assert len(writes) == 1 and writes[0][HEADER_SIZE:] == b"data/x\0value"


def test_write_errno_from_the_device_becomes_a_xenstore_error(device, monkeypatch):
    # The kernel refuses some requests (e.g. a WATCH it cannot register) through
    # write()'s errno; a socketpair cannot do that, so only os.write is substituted.
    def refusing_write(fd, data):
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST))

    client, _ = device({})
    monkeypatch.setattr(transport_module.os, "write", refusing_write)
    with pytest.raises(XenStoreError) as info:
        client.watch("control/x", "tok")
    assert info.value.name == "EEXIST"
    assert not isinstance(info.value, ConnectionClosedError)
    assert not client.closed


def test_device_gone_is_connection_closed(device):
    client, peer = device({})
    peer.sock.shutdown(socket.SHUT_RDWR)
    peer.join()
    with pytest.raises(ConnectionClosedError):
        client.read("x")
    assert client.closed


def test_closed_xenbus_transport_has_no_fileno():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    transport = XenbusTransport(ours.detach(), "<fake>")
    transport.close()
    transport.close()  # idempotent
    theirs.close()
    with pytest.raises(ConnectionClosedError):
        transport.fileno()
