"""XenStore client library: the lowest layer of ovmd (bytes <-> requests, replies, events).

Usage::

    from ovmd.xenstore import XenStoreClient, WatchEvent, XenStoreError
    with XenStoreClient.open() as client:        # $XENSTORED_PATH, the socket, /dev/xen/xenbus
        client.write("data/greeting", "hello")
        client.watch("control/oracle-vmapi/to-guest/last-write", "msg")
        event = client.wait_event(timeout=5)

Concurrency model: single-threaded, no threads, one request in flight per connection.

* A request method frames and checks the request (path rules, 4096-byte payload limit)
  before sending it, then reads packets until the reply with its ``req_id`` arrives. A
  server sends the ``WATCH_EVENT``s a request causes *before* that request's reply, so
  any event met while waiting is queued, never lost and never mistaken for the reply.
* The daemon's event loop puts :meth:`XenStoreClient.fileno` in its ``selectors``
  selector and calls :meth:`~XenStoreClient.receive_events` (one non-blocking read)
  when it is readable. Before each ``select()`` it drains
  :meth:`~XenStoreClient.pending_events`: events queued during its own requests were
  already read from the descriptor, so the selector will not report them again.
* Blocking callers (the CLIs) use :meth:`~XenStoreClient.wait_event`, which waits with
  ``poll()`` on the descriptor and a deadline: no polling loop, no sleeps.

Why not threads or asyncio: XenStore traffic is a handful of small messages, so a reader
thread would add locking, shutdown and fork hazards (the daemon forks module runners)
for no throughput gain; asyncio would force ``async`` onto every caller, including
short-lived CLIs whose start-up time matters. A plain file descriptor plus an event
queue serves both: blocking calls for scripts, a selectable fd for the daemon's loop.
Because every request is answered before the next is sent, replies cannot be confused;
a reply whose ``req_id`` is not the one awaited (left over from an interrupted request)
is dropped, except that WATCH/UNWATCH replies with ``req_id`` 0 are accepted (older
guest kernels answer them that way on ``/dev/xen/xenbus``).

Errors are :class:`XenStoreError` with the XenStore name in ``.name``; a lost or broken
connection (EOF, bad framing, reply timeout) raises :class:`ConnectionClosedError`, after
which the client is closed and the caller reconnects and re-reads state.
"""
from __future__ import annotations

from .client import Transaction, WatchEvent, XenStoreClient
from .errors import ConnectionClosedError, InvalidPathError, ProtocolError, XenStoreError

__all__ = [
    "ConnectionClosedError",
    "InvalidPathError",
    "ProtocolError",
    "Transaction",
    "WatchEvent",
    "XenStoreClient",
    "XenStoreError",
]
