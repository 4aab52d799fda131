"""Oracle VM's host<->guest message channel, directly on XenStore (docs/protocol.md).

Oracle's UEK driver ``ovmapi`` implements this channel in the kernel; we speak the same
node layout from user space, so no kernel module is needed::

    control/oracle-vmapi/to-guest/last-write   highest message number the host wrote
    control/oracle-vmapi/to-guest/<N>          the key name
    control/oracle-vmapi/to-guest/<N>/0, /1..  the value, in pieces of at most 2048 bytes
    control/oracle-vmapi/from-guest/...        the same layout, guest -> host

The layout code (:func:`read_message`, :func:`write_message`) serves both ends: the guest
daemon (:class:`MessageChannel`) and the host tool ``ovm-vmmessage``.

A received message is only *fetched* here; the daemon stores it durably and then calls
:meth:`MessageChannel.acknowledge`, which deletes the nodes. A crash in between means the
message is read again at start-up, never lost.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from typing import Deque, Iterable, List, NamedTuple, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

#: Relative to the domain home ``/local/domain/<domid>``.
CHANNEL_DIR = "control/oracle-vmapi"
TO_GUEST = "to-guest"
FROM_GUEST = "from-guest"
LAST_WRITE = "last-write"

PIECE_BYTES = 2048
MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 8192
#: Reserved key: carries an event, not a parameter.
EVENT_KEY = "VMAPIEvent"
#: Oracle's event bits (the value of a ``VMAPIEvent`` message is their sum).
EVENTS = {
    "snapshot": 0x1, "migrate": 0x2, "shutdown": 0x4, "reconfig": 0x8,
    "ip-address": 0x10, "user": 0x20, "new-param": 0x40, "system": 0x80,
}
#: Watch token the daemon registers for ``to-guest/last-write``.
WATCH_TOKEN = "ovmd-to-guest"
#: How many messages one :meth:`MessageChannel.fetch` returns at most.
DEFAULT_BATCH = 1000


class MessageError(ValueError):
    """A message that breaks the channel's limits; the text never contains the value."""


class Message(NamedTuple):
    number: int
    key: str
    value: str

    @property
    def is_event(self) -> bool:
        return self.key == EVENT_KEY

    def __repr__(self) -> str:  # never show the value: it may be a secret
        return "Message(%d, %r, <%d bytes>)" % (self.number, self.key, len(self.value))


def check_message(key: str, value: str) -> Tuple[bytes, bytes]:
    """Validate one message against Oracle's limits; returns (key, value) as UTF-8."""
    if not isinstance(key, str) or not key:
        raise MessageError("the key is empty")
    raw_key = key.encode("utf-8", "surrogateescape")
    if len(raw_key) > MAX_KEY_BYTES:
        raise MessageError("key %r is %d bytes long; the limit is %d bytes"
                           % (key[:40] + "...", len(raw_key), MAX_KEY_BYTES))
    if "\0" in key or "\n" in key:
        raise MessageError("key %r contains a NUL or newline character" % key)
    raw_value = value.encode("utf-8", "surrogateescape")
    if not raw_value:
        raise MessageError("the value of %r is empty; a value must be 1..%d bytes"
                           % (key, MAX_VALUE_BYTES))
    if len(raw_value) > MAX_VALUE_BYTES:
        raise MessageError("the value of %r is %d bytes long; the limit is %d bytes"
                           % (key, len(raw_value), MAX_VALUE_BYTES))
    return raw_key, raw_value


def split_value(raw: bytes, size: int = PIECE_BYTES) -> List[bytes]:
    """Cut a UTF-8 value into pieces of at most ``size`` bytes, never inside a character."""
    pieces = []
    start = 0
    while start < len(raw):
        end = min(start + size, len(raw))
        if end < len(raw):
            while end > start and (raw[end] & 0xC0) == 0x80:  # continuation byte
                end -= 1
            if end == start:
                end = start + size
        pieces.append(raw[start:end])
        start = end
    return pieces


def box_path(base: str, box: str, *parts: object) -> str:
    return "/".join([base, box] + [str(p) for p in parts])


def read_counter(client, base: str, box: str) -> Optional[int]:
    """The box's ``last-write`` counter: 0 if missing, None if not a number."""
    from .xenstore import XenStoreError

    try:
        text = client.read(box_path(base, box, LAST_WRITE))
    except XenStoreError as err:
        if err.name == "ENOENT":
            return 0
        raise
    text = text.strip()
    if not text.isdigit():
        return None
    return int(text)


def read_message(client, base: str, box: str, number: int) -> Optional[Message]:
    """Read message ``number`` from ``box``; None if it does not exist.

    Raises :class:`MessageError` for a malformed message (missing or non-numeric
    pieces, bad encoding, broken limits).
    """
    from .xenstore import XenStoreError

    node = box_path(base, box, number)
    try:
        key = client.read(node)
        children = client.directory(node)
    except XenStoreError as err:
        if err.name == "ENOENT":
            return None
        raise
    if not all(c.isdigit() for c in children):
        raise MessageError("message %d (key %r) has non-numeric value pieces" % (number, key))
    indexes = sorted(int(c) for c in children)
    if indexes != list(range(len(indexes))):
        raise MessageError("message %d (key %r) is missing value pieces (has %s)"
                           % (number, key, ",".join(map(str, indexes)) or "none"))
    raw = b"".join(client.read_bytes("%s/%d" % (node, i)) for i in indexes)
    try:
        value = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("the value of message %d (key %r) is not valid UTF-8"
                           % (number, key)) from None
    check_message(key, value)
    return Message(number, key, value)


def write_message(client, base: str, box: str, number: int, key: str, value: str,
                  perms: Optional[Sequence[str]] = None) -> None:
    """Write message ``number`` in Oracle's safe order: pieces, then the key name.

    The caller writes ``last-write`` afterwards (or does it all in a transaction), so a
    reader that trusts only numbers up to ``last-write`` never sees half a message.
    ``perms`` (e.g. ``["n0", "b5"]``) is applied to the node and every piece.
    """
    raw_key, raw_value = check_message(key, value)
    node = box_path(base, box, number)
    _remove_quietly(client, node)  # stale pieces of an older message would be joined in
    for index, piece in enumerate(split_value(raw_value)):
        client.write("%s/%d" % (node, index), piece)
        if perms:
            client.set_perms("%s/%d" % (node, index), list(perms))
    client.write(node, raw_key)
    if perms:
        client.set_perms(node, list(perms))


def _remove_quietly(client, path: str) -> None:
    from .xenstore import XenStoreError

    try:
        client.rm(path)
    except XenStoreError as err:
        if err.name != "ENOENT":
            raise


def message_numbers(client, base: str, box: str) -> Tuple[List[int], List[str]]:
    """Numeric message nodes present in ``box`` (sorted), and any other stray names."""
    from .xenstore import XenStoreError

    try:
        names = client.directory(box_path(base, box))
    except XenStoreError as err:
        if err.name == "ENOENT":
            return [], []
        raise
    numbers, strays = [], []
    for name in names:
        if name.isdigit():
            numbers.append(int(name))
        elif name != LAST_WRITE:
            strays.append(name)
    numbers.sort()
    return numbers, strays


class MessageChannel:
    """The guest end: fetch host messages, acknowledge them, send messages back.

    ``client`` is a connected :class:`ovmd.xenstore.XenStoreClient` whose relative paths
    resolve in this guest's domain home. The channel remembers the highest number it has
    read (``last_read``); the host's counter going backwards (after a resume) makes it
    rescan the existing nodes, which is normal.
    """

    def __init__(self, client, base: str = CHANNEL_DIR, batch: int = DEFAULT_BATCH) -> None:
        self.client = client
        self.base = base
        self.batch = batch
        self.last_read: Optional[int] = None  # None: nothing known yet, scan at start
        self._plan: Deque[int] = deque()
        self._sent: Optional[int] = None
        self._warned_counter = False

    # --- receiving -----------------------------------------------------------------
    def watch(self) -> None:
        self.client.watch(box_path(self.base, TO_GUEST, LAST_WRITE), WATCH_TOKEN)

    def fetch(self) -> List[Message]:
        """Pending host messages in order (at most ``batch``); not yet deleted.

        Malformed messages are logged (key and reason, never the value) and deleted here:
        they are not accepted, so nothing is lost by removing them. Call again while
        :attr:`has_more` is true.
        """
        if not self._plan:
            self._plan_more()
        messages: List[Message] = []
        while self._plan and len(messages) < self.batch:
            number = self._plan.popleft()
            try:
                message = read_message(self.client, self.base, TO_GUEST, number)
            except MessageError as err:
                log.warning("skipping host message %d: %s", number, err)
                self._delete(number)
                continue
            if message is not None:
                messages.append(message)
        return messages

    @property
    def has_more(self) -> bool:
        return bool(self._plan)

    def acknowledge(self, messages: Iterable[Message]) -> None:
        """Delete messages that have been stored durably."""
        for message in messages:
            self._delete(message.number)

    def reset(self) -> None:
        """Forget the read position (after a reconnect): the next fetch rescans."""
        self.last_read = None
        self._plan.clear()
        self._sent = None

    def _delete(self, number: int) -> None:
        from .xenstore import XenStoreError

        try:
            self.client.rm(box_path(self.base, TO_GUEST, number))
        except XenStoreError as err:
            if err.name != "ENOENT":
                log.warning("cannot delete host message %d (%s); the host must grant the "
                            "guest write access to to-guest/<N>", number, err.name)

    def _plan_more(self) -> None:
        counter = read_counter(self.client, self.base, TO_GUEST)
        if counter is None:
            if not self._warned_counter:
                log.warning("to-guest/last-write is not a number; reading every message node")
                self._warned_counter = True
            self._plan_scan(None)
            return
        self._warned_counter = False
        if self.last_read is None:
            self._plan_scan(counter)
        elif counter < self.last_read:
            log.info("host message counter went back from %d to %d (domain resumed); "
                     "rescanning", self.last_read, counter)
            self._plan_scan(counter, previous=self.last_read)
        elif counter > self.last_read:
            self._plan.extend(range(self.last_read + 1, counter + 1))
            self.last_read = counter

    def _plan_scan(self, counter: Optional[int], previous: int = 0) -> None:
        """Plan from the nodes that exist: those up to ``counter``; after a counter
        reset, the older leftovers in (counter, previous] come first."""
        try:
            numbers, strays = message_numbers(self.client, self.base, TO_GUEST)
        except OSError as err:  # E2BIG: too many nodes for one DIRECTORY reply
            if counter is None or getattr(err, "name", "") != "E2BIG":
                raise
            numbers, strays = list(range(1, max(counter, previous) + 1)), []
        for name in strays:
            log.warning("deleting malformed host message node to-guest/%s "
                        "(not a message number)", name[:64])
            self._delete_name(name)
        if counter is None:
            fresh = [n for n in numbers if self.last_read is None or n > self.last_read]
            self._plan.extend(fresh)
            self.last_read = max(numbers + [self.last_read or 0])
            return
        older = [n for n in numbers if counter < n <= previous]
        self._plan.extend(older + [n for n in numbers if n <= counter])
        self.last_read = counter

    def _delete_name(self, name: str) -> None:
        from .xenstore import XenStoreError

        try:
            self.client.rm(box_path(self.base, TO_GUEST, name))
        except (XenStoreError, ValueError) as err:
            log.warning("cannot delete to-guest/%s: %s", name[:64], err)

    # --- sending -------------------------------------------------------------------
    def send(self, key: str, value: str) -> int:
        """Send one message to the host: pieces, key name, then ``last-write``."""
        check_message(key, value)
        if self._sent is None:
            self._sent = read_counter(self.client, self.base, FROM_GUEST) or 0
        number = self._sent + 1
        write_message(self.client, self.base, FROM_GUEST, number, key, value)
        self.client.write(box_path(self.base, FROM_GUEST, LAST_WRITE), str(number))
        self._sent = number
        log.debug("sent message %d (%s) to the host", number, key)
        return number


def ovmapi_loaded(root: str = "/") -> Optional[str]:
    """The path that shows Oracle's ``ovmapi`` kernel module is present, if any."""
    from .paths import join_root

    for path in ("/sys/module/ovmapi", "/dev/ovmapi"):
        located = join_root(root, path)
        if os.path.exists(located):
            return located
    return None
