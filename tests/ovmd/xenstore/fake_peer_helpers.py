"""A scripted XenStore peer for the client's unit tests (not a test module itself).

The peer speaks the real wire protocol on one end of a ``socket.socketpair()`` from a
thread: for every request it decodes, it calls the test's handler for that message type
and writes back whatever packets the handler returns, optionally cut into small writes.
With ``SOCK_SEQPACKET`` every write is one record and every read returns at most one
record, so "a reply split into 1-byte writes" really reaches the client as 1-byte reads,
and a pair behaves like ``/dev/xen/xenbus``, which returns whole messages per read.
"""
from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, List, Optional

from ovmd.xenstore.client import XenStoreClient
from ovmd.xenstore.protocol import Op, Packet, PacketParser, encode, join_strings
from ovmd.xenstore.transport import UnixSocketTransport, XenbusTransport

Handler = Callable[[Packet], List[bytes]]


def reply(request: Packet, payload: bytes = b"OK\0", req_id: Optional[int] = None) -> bytes:
    """The framed reply to ``request`` (same type, req_id and tx_id)."""
    return encode(request.type, request.req_id if req_id is None else req_id,
                  request.tx_id, payload)


def error(request: Packet, name: str) -> bytes:
    return encode(Op.ERROR, request.req_id, request.tx_id, name.encode("ascii") + b"\0")


def event(path: str, token: str) -> bytes:
    return encode(Op.WATCH_EVENT, 0, 0, join_strings(path, token))


class FakePeer:
    """Answers requests on ``sock`` from a thread; ``received`` lists what it was sent."""

    def __init__(self, sock: socket.socket, handlers: Dict[int, Handler],
                 chunk: Optional[int] = None) -> None:
        self.sock = sock
        self.handlers = handlers
        self.chunk = chunk
        self.received: List[Packet] = []
        self.failure: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send(self, data: bytes) -> None:
        """Write raw bytes, in ``chunk``-sized writes if set."""
        step = self.chunk or len(data) or 1
        for start in range(0, len(data), step):
            self.sock.sendall(data[start:start + step])

    def _run(self) -> None:
        parser = PacketParser()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return
                for packet in parser.feed(data):
                    self.received.append(packet)
                    handler = self.handlers.get(packet.type)
                    replies = handler(packet) if handler else [error(packet, "ENOSYS")]
                    for data_out in replies:
                        self.send(data_out)
        except OSError:
            return  # the client closed its end while we were writing
        except BaseException as exc:  # reported by join()
            self.failure = exc
        finally:
            self.sock.close()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "fake peer did not finish"
        if self.failure is not None:
            raise self.failure

    def requests(self, op: int) -> List[Packet]:
        return [p for p in self.received if p.type == op]


def ok(request: Packet) -> List[bytes]:
    return [reply(request)]


def unix_client(handlers: Dict[int, Handler], *, seqpacket: bool = False,
                chunk: Optional[int] = None, **client_args):
    """A client on a unix-socket transport, and the fake peer at the other end."""
    kind = socket.SOCK_SEQPACKET if seqpacket else socket.SOCK_STREAM
    ours, theirs = socket.socketpair(socket.AF_UNIX, kind)
    peer = FakePeer(theirs, handlers, chunk)
    client = XenStoreClient(UnixSocketTransport(ours, "<socketpair>"), **client_args)
    return client, peer


def xenbus_client(handlers: Dict[int, Handler], **client_args):
    """A client on the xenbus transport over a fake device.

    A real ``/dev/xen/xenbus`` exists only inside a Xen guest, never here; the fake is a
    ``SOCK_SEQPACKET`` socketpair, whose fd the transport reads and writes with
    ``os.read``/``os.write`` exactly as it does the device, and which like the device
    returns one whole message per read.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    peer = FakePeer(theirs, handlers)
    transport = XenbusTransport(ours.detach(), "<fake xenbus>")
    return XenStoreClient(transport, **client_args), peer


def peer_factory(opener):
    """Body of a fixture yielding ``make(handlers, **options)`` -> (client, peer), where
    ``opener`` is :func:`unix_client` or :func:`xenbus_client`; every pair made is shut
    down afterwards."""
    made = []

    def make(handlers, **options):
        pair = opener(handlers, **options)
        made.append(pair)
        return pair

    try:
        yield make
    finally:
        for client, peer in made:
            client.close()
            peer.join()
