"""The XenStore client: requests and replies, watch events, transactions.

One connection, one thread, one request in flight (see the package docstring for why).
A request is framed and checked (path rules, payload size) before a byte is sent; then
packets are read until the matching reply, and every ``WATCH_EVENT`` met on the way is
queued, because a server sends the events a request causes *before* its reply.
"""
from __future__ import annotations

import collections
import logging
import re
import select
import time
from typing import Callable, Deque, List, NamedTuple, Optional, TypeVar, Union

from .errors import ConnectionClosedError, ProtocolError, XenStoreError
from .protocol import (
    Op,
    Packet,
    PacketParser,
    decode_error,
    encode,
    join_strings,
    split_strings,
    validate_path,
)
from .transport import Transport, open_default, open_path

log = logging.getLogger(__name__)

T = TypeVar("T")
TxArg = Union["Transaction", int, None]

#: Default number of attempts of :meth:`XenStoreClient.transact`.
DEFAULT_TRANSACTION_ATTEMPTS = 5
#: How often a growing directory may restart a DIRECTORY_PART listing.
_DIRECTORY_PART_RESTARTS = 10
_PERM = re.compile(r"[nrwb][0-9]+\Z")
_MAX_POLL_MS = 2 ** 31 - 1  # poll() takes a C int


class WatchEvent(NamedTuple):
    """A fired watch: the path that changed (as registered: relative stays relative)."""

    path: str
    token: str


def _encode_value(value: Union[str, bytes]) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    return bytes(value)


def _path_payload(path: str, *, watch: bool = False) -> bytes:
    return join_strings(validate_path(path, watch=watch))


def _check_token(token: str) -> str:
    if isinstance(token, str) and "\0" not in token:
        try:
            token.encode("utf-8")  # lone surrogates cannot go on the wire
            return token
        except UnicodeEncodeError:
            pass
    raise XenStoreError("EINVAL", "watch token must be UTF-8 text without NUL: %r" % (token,))


def _strip_nul(payload: bytes) -> str:
    return payload.rstrip(b"\0").decode("utf-8", "surrogateescape")


class XenStoreClient:
    """A connection to a XenStore server (unix socket or ``/dev/xen/xenbus``).

    Blocking use: call the operations; each returns when its reply has arrived. Event-loop
    use: register :meth:`fileno` with a selector, call :meth:`receive_events` when it is
    readable, and call :meth:`pending_events` before every ``select()``: events that
    arrived during a request were already read from the connection and are only queued.
    """

    def __init__(self, transport: Transport, *, request_timeout: Optional[float] = None) -> None:
        self.transport = transport
        self.request_timeout = request_timeout
        self._parser = PacketParser()
        self._events: Deque[WatchEvent] = collections.deque()
        self._next_req_id = 1
        self._closed: Optional[str] = None

    @classmethod
    def open(cls, path: Optional[str] = None, *,
             request_timeout: Optional[float] = None) -> "XenStoreClient":
        """Connect: ``path`` (a socket or the xenbus device), else ``$XENSTORED_PATH``,
        else ``/var/run/xenstored/socket``, else ``/dev/xen/xenbus``.

        ``request_timeout`` (seconds) bounds the wait for each reply; on expiry the
        connection is closed and :class:`ConnectionClosedError` raised.
        """
        transport = open_path(path) if path is not None else open_default()
        return cls(transport, request_timeout=request_timeout)

    # -- connection ---------------------------------------------------------------------

    def fileno(self) -> int:
        self._check_open()
        return self.transport.fileno()

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def close(self) -> None:
        if self._closed is None:
            self._closed = "connection closed by the client"
            self.transport.close()

    def __enter__(self) -> "XenStoreClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return "<XenStoreClient %s%s>" % (self.transport, " closed" if self.closed else "")

    def _check_open(self) -> None:
        if self._closed is not None:
            raise ConnectionClosedError(self._closed)

    def _fail(self, detail: str) -> ConnectionClosedError:
        """Close a connection that can no longer be trusted and return the error to raise."""
        if self._closed is None:
            self._closed = detail
            self.transport.close()
        log.warning("XenStore connection %s lost: %s", self.transport.path, detail)
        return ConnectionClosedError(detail)

    # -- reading packets ----------------------------------------------------------------

    def _wait_readable(self, deadline: Optional[float]) -> bool:
        """Wait with ``poll()`` until readable (True) or ``deadline`` has passed (False)."""
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN)
        while True:
            if deadline is None:
                millis = -1
            else:
                remaining = deadline - time.monotonic()
                millis = max(0, min(_MAX_POLL_MS, int(remaining * 1000 + 0.999)))
            if poller.poll(millis):
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _read_packets(self, deadline: Optional[float]) -> Optional[List[Packet]]:
        """Wait until readable (up to the monotonic ``deadline``), then read once.

        Returns ``None`` if the deadline passed with nothing read, else the whole packets
        now complete (possibly none: a split read).
        """
        self._check_open()
        if not self._wait_readable(deadline):
            return None
        try:
            data = self.transport.recv()
        except ConnectionClosedError as exc:
            raise self._fail(exc.detail) from exc
        if not data:
            raise self._fail("xenstored closed the connection (%s)" % self.transport.path)
        try:
            return self._parser.feed(data)
        except ProtocolError as exc:
            raise self._fail("protocol error: %s" % exc.detail) from exc

    def _queue_event(self, packet: Packet) -> None:
        fields = split_strings(packet.payload)
        if len(fields) < 2:
            log.warning("ignoring malformed watch event %r", packet.payload[:80])
            return
        self._events.append(WatchEvent(fields[0], fields[1]))

    def _ingest(self, packets: List[Packet], op: Optional[int] = None,
                req_id: Optional[int] = None) -> Optional[Packet]:
        """Queue events; return the reply to (``op``, ``req_id``) if it is among ``packets``."""
        reply = None
        for packet in packets:
            if packet.type == Op.WATCH_EVENT:
                self._queue_event(packet)
            elif op is not None and reply is None and self._is_reply(packet, op, req_id):
                if packet.type not in (op, Op.ERROR):
                    raise self._fail("reply of type %d to a request of type %d"
                                     % (packet.type, op))
                reply = packet
            else:
                # A reply to a request abandoned earlier (e.g. interrupted): not ours.
                log.debug("dropping unexpected packet type %d req_id %d",
                          packet.type, packet.req_id)
        return reply

    @staticmethod
    def _is_reply(packet: Packet, op: int, req_id: Optional[int]) -> bool:
        if packet.req_id == req_id:
            return True
        # Older guest kernels answer WATCH/UNWATCH on /dev/xen/xenbus with req_id 0.
        return packet.req_id == 0 and op in (Op.WATCH, Op.UNWATCH)

    # -- requests -----------------------------------------------------------------------

    def request(self, op: int, payload: bytes, tx: TxArg = None) -> bytes:
        """Send one request and return its reply payload; an ERROR reply raises.

        The message is framed first, so an oversized payload raises ``E2BIG`` without
        anything being sent.
        """
        self._check_open()
        tx_id = _tx_id(tx, self)
        req_id = self._next_req_id
        self._next_req_id = req_id % 0xFFFFFFFF + 1  # 1..2**32-1: 0 stays distinguishable
        frame = encode(op, req_id, tx_id, payload)
        try:
            self.transport.send(frame)
        except ConnectionClosedError as exc:
            raise self._fail(exc.detail) from exc
        deadline = None if self.request_timeout is None else time.monotonic() + self.request_timeout
        while True:
            packets = self._read_packets(deadline)
            if packets is None:
                raise self._fail("no reply to request type %d within %s s"
                                 % (op, self.request_timeout))
            reply = self._ingest(packets, op, req_id)
            if reply is not None:
                break
        if reply.type == Op.ERROR:
            raise decode_error(reply.payload)
        return reply.payload

    def read_bytes(self, path: str, *, tx: TxArg = None) -> bytes:
        return self.request(Op.READ, _path_payload(path), tx)

    def read(self, path: str, *, tx: TxArg = None) -> str:
        """A node's value as text (UTF-8; undecodable bytes kept as surrogates)."""
        return self.read_bytes(path, tx=tx).decode("utf-8", "surrogateescape")

    def write(self, path: str, value: Union[str, bytes], *, tx: TxArg = None) -> None:
        """Set a node's value (empty allowed); missing parents are created."""
        self.request(Op.WRITE, _path_payload(path) + _encode_value(value), tx)

    def mkdir(self, path: str, *, tx: TxArg = None) -> None:
        self.request(Op.MKDIR, _path_payload(path), tx)

    def rm(self, path: str, *, tx: TxArg = None) -> None:
        """Remove a node and its whole subtree."""
        self.request(Op.RM, _path_payload(path), tx)

    def exists(self, path: str, *, tx: TxArg = None) -> bool:
        try:
            self.read_bytes(path, tx=tx)
        except XenStoreError as exc:
            if exc.name == "ENOENT":
                return False
            raise
        return True

    def directory(self, path: str, *, tx: TxArg = None) -> List[str]:
        """Names of a node's children (``[]`` for a leaf).

        A listing too large for one reply (``E2BIG``) is fetched in parts with
        DIRECTORY_PART, as libxenstore does.
        """
        payload = _path_payload(path)
        try:
            return split_strings(self.request(Op.DIRECTORY, payload, tx))
        except XenStoreError as exc:
            if exc.name != "E2BIG":
                raise
        return self._directory_part(path, tx)

    def _directory_part(self, path: str, tx: TxArg) -> List[str]:
        for _ in range(_DIRECTORY_PART_RESTARTS):
            names = bytearray()
            generation = None
            while True:
                try:
                    reply = self.request(Op.DIRECTORY_PART, join_strings(path, str(len(names))), tx)
                except XenStoreError as exc:
                    if exc.name == "ENOSYS":
                        raise XenStoreError(
                            "E2BIG", "directory %s is too large and the server has no "
                            "DIRECTORY_PART" % path) from exc
                    raise
                gen, sep, chunk = reply.partition(b"\0")
                if not sep or not chunk.endswith(b"\0"):  # parts hold whole names
                    raise ProtocolError("malformed DIRECTORY_PART reply for %s" % path)
                if generation is not None and gen != generation:
                    break  # the directory changed between parts: start again
                generation = gen
                names += chunk
                # The last part ends with an extra NUL (an empty name).
                if len(names) <= 1 or names[-2] == 0:
                    return split_strings(bytes(names[:-1]))
        raise XenStoreError("EAGAIN", "directory %s kept changing while being listed" % path)

    def get_perms(self, path: str, *, tx: TxArg = None) -> List[str]:
        """Permission entries such as ``['n0', 'r1']`` (owner and default first)."""
        return split_strings(self.request(Op.GET_PERMS, _path_payload(path), tx))

    def set_perms(self, path: str, perms: List[str], *, tx: TxArg = None) -> None:
        perms = list(perms)
        if not perms:
            raise XenStoreError("EINVAL", "set_perms(%s) needs at least the owner entry" % path)
        for perm in perms:
            if not isinstance(perm, str) or not _PERM.match(perm):
                raise XenStoreError("EINVAL", "invalid permission %r (expected n|r|w|b + domid)"
                                    % (perm,))
        self.request(Op.SET_PERMS, _path_payload(path) + join_strings(*perms), tx)

    def is_domain_introduced(self, domid: int) -> bool:
        """Whether XenStore knows domain ``domid`` (a running guest, or dom0); dom0 only."""
        reply = self.request(Op.IS_DOMAIN_INTRODUCED, join_strings(str(int(domid))))
        return _strip_nul(reply) == "T"

    def get_domain_path(self, domid: int) -> str:
        """The home of a domain, e.g. ``/local/domain/1``."""
        return _strip_nul(self.request(Op.GET_DOMAIN_PATH, join_strings(str(int(domid)))))

    # -- watches ------------------------------------------------------------------------

    def watch(self, path: str, token: str) -> None:
        """Watch a node and its subtree; it fires once at once, then on every change."""
        self.request(Op.WATCH, _path_payload(path, watch=True) + join_strings(_check_token(token)))

    def unwatch(self, path: str, token: str) -> None:
        self.request(Op.UNWATCH,
                     _path_payload(path, watch=True) + join_strings(_check_token(token)))

    def pending_events(self) -> List[WatchEvent]:
        """Events already received (queued during requests), without reading."""
        events = list(self._events)
        self._events.clear()
        return events

    def receive_events(self) -> List[WatchEvent]:
        """Read what is readable now, without blocking, and return all queued events."""
        packets = self._read_packets(time.monotonic())
        if packets:
            self._ingest(packets)
        return self.pending_events()

    def wait_event(self, timeout: Optional[float] = None) -> Optional[WatchEvent]:
        """The next event, waiting up to ``timeout`` seconds (``None``: forever).

        Returns ``None`` on timeout. Further events stay queued (:meth:`pending_events`).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._events:
            packets = self._read_packets(deadline)
            if packets is None:
                return None
            self._ingest(packets)
        return self._events.popleft()

    # -- transactions -------------------------------------------------------------------

    def transaction(self) -> "Transaction":
        """Start a transaction; as a context manager it commits on exit, aborts on error."""
        reply = self.request(Op.TRANSACTION_START, b"\0")
        text = _strip_nul(reply)
        if not text.isdigit() or int(text) == 0:
            raise ProtocolError("TRANSACTION_START answered %r" % reply[:40])
        return Transaction(self, int(text))

    def transact(self, fn: Callable[["Transaction"], T],
                 retries: int = DEFAULT_TRANSACTION_ATTEMPTS) -> T:
        """Run ``fn(tx)`` in a transaction and commit it, redoing it whole on ``EAGAIN``.

        At most ``retries`` attempts; then the last ``EAGAIN`` is raised. Returns what
        ``fn`` returned in the attempt that committed.
        """
        if retries < 1:
            raise ValueError("retries must be at least 1")
        for attempt in range(1, retries + 1):
            try:
                with self.transaction() as tx:
                    return fn(tx)
            except XenStoreError as exc:
                if exc.name != "EAGAIN":
                    raise
                if attempt == retries:
                    raise XenStoreError(
                        "EAGAIN", "transaction still conflicting after %d attempts" % retries
                    ) from exc
                log.debug("transaction conflict (attempt %d of %d), redoing it", attempt, retries)
        raise AssertionError("unreachable")


def _tx_id(tx: TxArg, client: XenStoreClient) -> int:
    if tx is None:
        return 0
    if isinstance(tx, Transaction):
        if tx.client is not client:
            raise ValueError("transaction belongs to another connection")
        if not tx.active:
            raise XenStoreError("EINVAL", "transaction %d has already ended" % tx.id)
        return tx.id
    return int(tx)


class Transaction:
    """An open XenStore transaction: the client's node operations, inside it.

    ``commit()`` raises ``EAGAIN`` if another writer got there first; the transaction is
    then gone and must be redone whole (:meth:`XenStoreClient.transact` does that).
    """

    def __init__(self, client: XenStoreClient, tx_id: int) -> None:
        self.client = client
        self.id = tx_id
        self.active = True

    def read(self, path: str) -> str:
        return self.client.read(path, tx=self)

    def read_bytes(self, path: str) -> bytes:
        return self.client.read_bytes(path, tx=self)

    def write(self, path: str, value: Union[str, bytes]) -> None:
        self.client.write(path, value, tx=self)

    def mkdir(self, path: str) -> None:
        self.client.mkdir(path, tx=self)

    def rm(self, path: str) -> None:
        self.client.rm(path, tx=self)

    def exists(self, path: str) -> bool:
        return self.client.exists(path, tx=self)

    def directory(self, path: str) -> List[str]:
        return self.client.directory(path, tx=self)

    def get_perms(self, path: str) -> List[str]:
        return self.client.get_perms(path, tx=self)

    def set_perms(self, path: str, perms: List[str]) -> None:
        self.client.set_perms(path, perms, tx=self)

    def _end(self, commit: bool) -> None:
        payload = b"T\0" if commit else b"F\0"
        tx_id = _tx_id(self, self.client)  # raises if already ended
        self.active = False
        self.client.request(Op.TRANSACTION_END, payload, tx_id)

    def commit(self) -> None:
        self._end(True)

    def abort(self) -> None:
        self._end(False)

    def __enter__(self) -> "Transaction":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.active:
            return  # ended explicitly inside the block
        if exc_type is None:
            self.commit()
            return
        try:
            self.abort()
        except XenStoreError as abort_error:  # keep the original exception
            log.debug("aborting transaction %d failed: %s", self.id, abort_error)

    def __repr__(self) -> str:
        return "<Transaction %d%s>" % (self.id, "" if self.active else " ended")
