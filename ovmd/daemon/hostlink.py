"""The daemon's link to the host over XenStore: messages in, messages out.

In: on every change of ``to-guest/last-write`` (a watch), fetch the pending messages, store
them durably in the :class:`~ovmd.cache.ParamCache`, then delete them from XenStore
(docs/protocol.md); ``VMAPIEvent`` messages are recorded, not stored. Out: send to
``from-guest``, or keep the message in an outbox while XenStore is unreachable.

Other daemon parts share the connection: :meth:`HostLink.add_watch` registers a watch
(again on every connection) whose events are handed to its callback,
:meth:`HostLink.before_intake` callbacks read what they need on each connection before
any host message is taken in, and :meth:`HostLink.on_connected` callbacks run after
each successful (re)connect. :meth:`HostLink.hold_messages` stops the intake (a
template being sealed takes no more params): the host's messages stay in XenStore until
:meth:`HostLink.release_messages`.

What goes wrong, and what happens:

- the connection breaks (EOF, bad framing, no reply): reconnect with a doubling backoff
  (0.1 s to 10 s); the outbox is flushed on reconnect;
- XenStore refuses one request (``EACCES`` on ``to-guest``, say): logged once, and tried
  again on the next event; the connection is fine, so it is kept;
- one message is bad: the channel logs and skips it (:class:`~ovmd.channel.MessageChannel`);
- the cache cannot be written (a full disk): nothing is deleted, so the messages stay in
  XenStore; logged once per episode (a full disk as a full disk), retried with a doubling
  backoff (0.5 s to 30 s) and logged again when storing works again.
"""
from __future__ import annotations

import errno
import logging
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from ..cache import CacheError, ParamCache
from ..channel import Message, MessageChannel, event_names, printable
from .loop import EventLoop, guarded

log = logging.getLogger(__name__)

RECONNECT_FIRST = 0.1
RECONNECT_MAX = 10.0
#: A cache that cannot be written is retried after this many seconds, doubling up to the
#: maximum.
STORE_RETRY_FIRST = 0.5
STORE_RETRY_MAX = 30.0
#: Errors that say the file system is full.
_FULL = (errno.ENOSPC, errno.EDQUOT)
#: Host events kept for ``ovmd --status``.
EVENTS_KEPT = 50
#: Send errors that resending cannot cure: the message is dropped with a warning.
_REFUSED = ("EACCES", "EPERM", "EINVAL", "E2BIG")
_FORBIDDEN = ("EACCES", "EPERM")


class HostLink:
    """The XenStore connection, the intake of host messages and the outbox.

    ``on_stored(keys)`` is called after each batch of messages was stored, with the keys of
    its parameters (none for a batch of events only); then ``on_event(names)`` for each
    ``VMAPIEvent`` of the batch, with the names of its bits.
    """

    def __init__(self, loop: EventLoop, cache: ParamCache, xenstore_path: Optional[str],
                 on_stored: Callable[[List[str]], None],
                 on_event: Optional[Callable[[List[str]], None]] = None) -> None:
        self.loop = loop
        self.cache = cache
        self.xenstore_path = xenstore_path
        self.on_stored = on_stored
        self.on_event = on_event
        self.client: Any = None
        self.channel: Optional[MessageChannel] = None
        self.outbox: Deque[Tuple[str, str]] = deque()
        self.events: Deque[Dict[str, Any]] = deque(maxlen=EVENTS_KEPT)
        self.backoff = RECONNECT_FIRST
        self.store_backoff = STORE_RETRY_FIRST
        #: when the cache stopped accepting writes (monotonic), None while it works
        self.store_failing_since: Optional[float] = None
        self._dirty = False
        #: why the last connect failed, as logged (None: connected, or not tried yet)
        self._unreachable_why: Optional[str] = None
        self._xs_fd: Optional[int] = None
        self._refused: Optional[str] = None  # the XenStore refusal last logged
        self._watches: Dict[str, Tuple[str, Callable[[], None]]] = {}  # token -> path, callback
        self._connected: List[Callable[[], None]] = []
        self._before_intake: List[Callable[[Any], None]] = []
        #: no host message is taken in any more (:meth:`hold_messages`)
        self.holding = False

    @property
    def connected(self) -> bool:
        return self.client is not None

    # --- connection ---------------------------------------------------------------------
    def connect(self, drain_all: bool = False) -> None:
        """Connect, watch, fetch; ``drain_all``: consume every waiting message before
        returning (at start-up, before READY=1). Failures schedule a reconnect."""
        from ..xenstore import XenStoreClient

        try:
            client = XenStoreClient.open(self.xenstore_path, request_timeout=30)
        except OSError as err:
            self._unreachable(err)
            return
        channel = MessageChannel(client)
        try:
            channel.watch()
            for token, (path, _) in self._watches.items():
                client.watch(path, token)
            self.client, self.channel = client, channel
            self._xs_fd = client.fileno()
            self.loop.add_reader(self._xs_fd, self._on_xenstore)
            for before in self._before_intake:
                before(client)
            guarded(self._drain)
            while drain_all and self._dirty and self.client is not None:
                guarded(self._drain)
            if self.channel is not None:
                self._flush_outbox()
        except OSError as err:
            self._disconnect(reconnect=False)
            self._schedule_reconnect("XenStore connection failed (%s)" % err)
            return
        if self.client is None:  # lost again while draining: a reconnect is scheduled
            return
        if self.backoff > RECONNECT_FIRST:
            log.info("connected to XenStore again")
        self.backoff = RECONNECT_FIRST
        self._unreachable_why = None
        for callback in self._connected:
            guarded(callback)

    def add_watch(self, path: str, token: str, callback: Callable[[], None]) -> None:
        """Watch ``path`` on every connection (from the next one on); ``callback()`` for
        its events, the one at registration included. Events are hints: re-read."""
        self._watches[token] = (path, callback)

    def before_intake(self, callback: Callable[[Any], None]) -> None:
        """``callback(client)`` on every connection, before its first host message is
        read; an ``OSError`` it raises fails the connection (it is retried)."""
        self._before_intake.append(callback)

    def hold_messages(self) -> None:
        """Take in no more host messages (they stay in XenStore); sending goes on."""
        if not self.holding:
            log.info("host messages are not read for now: they stay in XenStore")
        self.holding = True
        self._dirty = False

    def release_messages(self) -> None:
        """Take in host messages again, those that came meanwhile first."""
        if self.holding:
            log.info("reading host messages again")
        self.holding = False
        self._dirty = True

    def on_connected(self, callback: Callable[[], None]) -> None:
        """``callback()`` after every successful connect (XenStore may have lost what was
        written before: a resumed domain, a restarted xenstored)."""
        self._connected.append(callback)

    def lost(self, err: OSError) -> None:
        """A part using :attr:`client` found the connection broken: reconnect."""
        log.warning("XenStore error: %s", err)
        self._disconnect()

    def _unreachable(self, err: OSError) -> None:
        """XenStore cannot be reached: say why and what to do, once per reason (warning),
        and retry quietly with the backoff until it can."""
        from ..xenstore.transport import NO_XENSTORE

        why = getattr(err, "detail", "") or str(err)
        if why == self._unreachable_why:
            log.debug("still cannot connect to XenStore (%s); retrying in %.1f s", why,
                      self.backoff)
        else:
            self._unreachable_why = why
            if why.startswith(NO_XENSTORE):
                advice = ("a Xen guest's kernel provides /dev/xen/xenbus (xenfs and the xen "
                          "modules), dom0's xenstored its socket")
            else:
                advice = "xenstored does not answer there yet"
            log.warning("cannot connect to XenStore: %s (%s); retrying every %g s at most, "
                        "host messages wait in XenStore until then", why, advice,
                        RECONNECT_MAX)
        self.loop.set_timer("reconnect", self.backoff, self.connect)
        self.backoff = min(self.backoff * 2, RECONNECT_MAX)

    def _schedule_reconnect(self, why: str) -> None:
        log.warning("%s; retrying in %.1f s", why, self.backoff)
        self.loop.set_timer("reconnect", self.backoff, self.connect)
        self.backoff = min(self.backoff * 2, RECONNECT_MAX)

    def _disconnect(self, reconnect: bool = True) -> None:
        if self._xs_fd is not None:
            self.loop.remove(self._xs_fd)
            self._xs_fd = None
        if self.client is not None:
            self.client.close()
        self.client, self.channel = None, None
        self._dirty = False
        if reconnect and not self.loop.stopping:
            self._schedule_reconnect("lost the XenStore connection")

    def close(self) -> None:
        self._disconnect(reconnect=False)

    # --- intake -------------------------------------------------------------------------
    def work(self) -> bool:
        """The loop's work before each wait: fetch the next batch if one is waiting; True
        while more are (the loop must not sleep)."""
        if self.client is not None and self._take_events():
            self._dirty = True  # queued while another part made requests
        if self._dirty and self.client is not None:
            guarded(self._drain)
        return self._dirty

    def _on_xenstore(self, _mask: int) -> None:
        assert self.client is not None
        try:
            events = self.client.receive_events()
        except OSError as err:
            log.warning("XenStore error: %s", err)
            self._disconnect()
            return
        if self._take_events(events):
            self._drain()

    def _drain(self) -> None:
        """Fetch one batch, store it durably, then delete it from XenStore."""
        from ..xenstore import ConnectionClosedError, XenStoreError

        if self.client is None or self.channel is None:
            return
        if self.holding:  # (sealing) the messages stay in XenStore
            self._dirty = False
            return
        if self.store_failing_since is not None and "retry-store" in self.loop.timers:
            self._dirty = False  # the retry timer drains; until then the messages wait
            return
        self._dirty = False  # also if something below fails unexpectedly: no busy loop
        try:
            messages = self.channel.fetch()
            if messages:
                self._store(messages)
                self.channel.acknowledge(messages)
            self._dirty = self._take_events() or bool(messages) or self.channel.has_more
            self._refused = None
        except CacheError as err:
            self._store_failed(err)
        except ConnectionClosedError as err:
            log.warning("XenStore error: %s", err)
            self._disconnect()
        except XenStoreError as err:
            # a refusal of one request (EACCES on to-guest, say), not a broken connection:
            # said once, tried again on the next event
            if self._refused != str(err):
                log.warning("XenStore refused a request for the host messages: %s; trying "
                            "again on the next change", err)
                self._refused = str(err)
        except OSError as err:
            log.warning("XenStore error: %s", err)
            self._disconnect()

    def _store_failed(self, err: CacheError) -> None:
        """Not stored, so not deleted: the messages stay in XenStore; try again later."""
        if self.store_failing_since is None:
            self.store_failing_since = time.monotonic()
            if err.errno in _FULL:
                log.error("the disk is full: %s; the host messages stay in XenStore until "
                          "they can be stored (retrying, backing off up to %d s)",
                          err, STORE_RETRY_MAX)
            else:
                log.error("%s; the host messages stay in XenStore until they can be stored "
                          "(retrying, backing off up to %d s)", err, STORE_RETRY_MAX)
        else:
            log.debug("still cannot store host messages: %s", err)
        self._dirty = False
        if self.channel is not None:
            self.channel.reset()
        self.loop.set_timer("retry-store", self.store_backoff, self._retry_store)
        self.store_backoff = min(self.store_backoff * 2, STORE_RETRY_MAX)

    def _retry_store(self) -> None:
        self._dirty = True

    def _take_events(self, events: Optional[List[Any]] = None) -> bool:
        """Hand the queued events of other watches to their callbacks; True if any were
        the channel's own."""
        assert self.client is not None
        ours = False
        called = set()
        for event in self.client.pending_events() if events is None else events:
            watch = self._watches.get(event.token)
            if watch is None:
                ours = True
            elif event.token not in called:  # one call per turn: they re-read anyway
                called.add(event.token)
                guarded(watch[1])
        return ours

    def _store(self, messages: List[Message]) -> None:
        params = [(m.key, m.value) for m in messages if not m.is_event]
        self.cache.update(params)  # durable before the caller deletes the nodes
        if self.store_failing_since is not None:
            log.info("storing host messages again, after %.0f s", time.monotonic()
                     - self.store_failing_since)
            self.store_failing_since = None
            self.store_backoff = STORE_RETRY_FIRST
        # after storing: a batch retried records its events once
        events = [self._record_event(m) for m in messages if m.is_event]
        keys = [k for k, _ in params]
        if keys:
            log.info("stored %d parameter(s) from the host%s", len(keys),
                     ": " + ", ".join(printable(k) for k in keys) if len(keys) <= 8 else "")
        guarded(self.on_stored, keys)
        for names in events:  # after the params: an event acts on what came before it
            if self.on_event is not None:
                guarded(self.on_event, names)

    def _record_event(self, message: Message) -> List[str]:
        value = message.value.strip()
        names = event_names(value)
        entry = {"time": time.time(), "event": value[:64], "names": names}
        self.events.append(entry)
        log.info("host event %s%s", printable(value, 64),
                 " (%s)" % ", ".join(names) if names else "")
        return names

    # --- outbox -------------------------------------------------------------------------
    def send(self, key: str, value: str) -> Optional[str]:
        """Send to the host now, or queue until XenStore is back; returns a warning."""
        if self.channel is None:
            self.outbox.append((key, value))
            return "not connected to XenStore: queued for sending"
        try:
            self.channel.send(key, value)
        except OSError as err:
            if getattr(err, "name", None) in _REFUSED:
                return "could not send %s to the host: %s" % (printable(key), err)
            self.outbox.append((key, value))
            self._disconnect()
            return "XenStore connection lost: queued for sending"
        return None

    def _flush_outbox(self) -> None:
        while self.outbox and self.channel is not None:
            key, value = self.outbox.popleft()
            try:
                self.channel.send(key, value)
            except OSError as err:
                if getattr(err, "name", None) in _FORBIDDEN:
                    log.warning("could not send %s to the host: %s", printable(key), err)
                    continue
                self.outbox.appendleft((key, value))
                raise
