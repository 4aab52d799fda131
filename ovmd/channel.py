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
import re
from collections import deque
from typing import Deque, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

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
#: The largest event number ``ovmd -e`` sends (32 bits).
MAX_EVENT = 0xFFFFFFFF
#: Watch token the daemon registers for ``to-guest/last-write``.
WATCH_TOKEN = "ovmd-to-guest"
#: How many messages one :meth:`MessageChannel.fetch` returns at most.
DEFAULT_BATCH = 1000
#: A message with more value pieces is malformed (the host writes pieces of up to 2048
#: bytes, so a value of at most 8192 bytes has five at most); bounds the reads per message.
MAX_PIECES = 256

#: A message node's name: a decimal number from 1, without leading zeros (ASCII digits
#: only: ``str.isdigit`` also accepts ``²`` and other digits ``int`` refuses).
_MESSAGE_NAME = re.compile(r"[1-9][0-9]{0,18}\Z")
_PIECE_NAME = re.compile(r"(0|[1-9][0-9]{0,8})\Z")
#: ``last-write`` and a ``VMAPIEvent`` value: decimal (leading zeros allowed), or 0x hex.
_DECIMAL = re.compile(r"[0-9]{1,20}\Z")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,16}\Z")


def printable(text: str, limit: Optional[int] = None) -> str:
    """``text`` safe for a log line: control characters, lone surrogates (bytes that were
    not UTF-8) and other unprintable characters escaped as ``\\xNN``/``\\uNNNN``; cut
    to ``limit`` characters (marked ``...``)."""
    if limit is not None and len(text) > limit:
        return printable(text[:limit]) + "..."
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def parse_number(text: str) -> Optional[int]:
    """A ``last-write`` counter or an event value: decimal digits (``0777`` is 777) or
    ``0x`` hex, at most 20 digits; None for anything else (``0xZZ``, ``²``, ``1e5``)."""
    text = text.strip()
    if _DECIMAL.match(text):
        return int(text, 10)
    if _HEX.match(text):
        return int(text, 16)
    return None


class UnknownEvent(ValueError):
    """``ovmd -e`` named no event: the message says which ones there are."""


def event_number(event: str) -> int:
    """The ``VMAPIEvent`` value ``ovmd -e EVENT`` sends: an event's name (any case) or a
    number 0..MAX_EVENT; :class:`UnknownEvent` for anything else."""
    name = event.strip().lower()
    number = EVENTS.get(name, parse_number(name))
    if number is None or number > MAX_EVENT:
        raise UnknownEvent("unknown event %r (one of %s, or a number 0..%d)"
                           % (event, ", ".join(EVENTS), MAX_EVENT))
    return number


def event_names(value: str) -> List[str]:
    """Oracle's event names set in a ``VMAPIEvent`` value ([] if it is not a number)."""
    bits = parse_number(value)
    if bits is None:
        return []
    return [name for name, bit in EVENTS.items() if bits & bit]


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
    """Validate one message against Oracle's limits; returns (key, value) as UTF-8.

    Keys and values are UTF-8 text: a string holding bytes that were not UTF-8 (lone
    surrogates, as ``surrogateescape`` decodes them) is refused.
    """
    if not isinstance(key, str) or not key:
        raise MessageError("the key is empty")
    try:
        raw_key = key.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError("key %r is not valid UTF-8" % key) from None
    if len(raw_key) > MAX_KEY_BYTES:
        raise MessageError("key %r is %d bytes long; the limit is %d bytes"
                           % (key[:40] + "...", len(raw_key), MAX_KEY_BYTES))
    if "\0" in key or "\n" in key:
        raise MessageError("key %r contains a NUL or newline character" % key)
    try:
        raw_value = value.encode("utf-8")
    except UnicodeEncodeError:
        raise MessageError("the value of %r is not valid UTF-8" % key) from None
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
    if not _DECIMAL.match(text.strip()):
        return None
    return int(text.strip(), 10)


def read_message(client, base: str, box: str, number: int) -> Optional[Message]:
    """Read message ``number`` from ``box``; None if it does not exist.

    Raises :class:`MessageError` for a malformed message (a key that is not UTF-8,
    missing, non-numeric or too many pieces, bad encoding, broken limits).
    """
    from .xenstore import XenStoreError

    node = box_path(base, box, number)
    try:
        raw_key = client.read_bytes(node)
        children = client.directory(node)
    except XenStoreError as err:
        if err.name == "ENOENT":
            return None
        raise
    try:
        key = raw_key.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError("the key of message %d is not valid UTF-8 (%r)"
                           % (number, raw_key[:40].decode("utf-8", "replace"))) from None
    if len(children) > MAX_PIECES:
        raise MessageError("message %d (key %r) has %d value pieces; the limit is %d"
                           % (number, key, len(children), MAX_PIECES))
    if not all(_PIECE_NAME.match(c) for c in children):
        raise MessageError("message %d (key %r) has non-numeric value pieces" % (number, key))
    indexes = sorted(int(c) for c in children)
    if indexes != list(range(len(indexes))):
        raise MessageError("message %d (key %r) is missing value pieces (has %s)"
                           % (number, key, printable(",".join(map(str, indexes)), 80)
                              or "none"))
    raw = b""
    for index in indexes:
        raw += client.read_bytes("%s/%d" % (node, index))
        if len(raw) > MAX_VALUE_BYTES:
            raise MessageError("the value of message %d (key %r) is at least %d bytes long; "
                               "the limit is %d bytes" % (number, key, len(raw),
                                                          MAX_VALUE_BYTES))
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
        if _MESSAGE_NAME.match(name):
            numbers.append(int(name))
        elif name != LAST_WRITE:
            strays.append(name)
    numbers.sort()
    return numbers, strays


class MessageChannel:
    """The guest end: fetch host messages, acknowledge them, send messages back.

    ``client`` is a connected :class:`ovmd.xenstore.XenStoreClient` whose relative paths
    resolve in this guest's domain home. The channel remembers the highest counter it has
    read (``last_read``); the host's counter going backwards (after a resume) makes it
    rescan the existing nodes, which is normal.

    The work of one :meth:`fetch` is bounded whatever the counter says: the numbers to
    read come from what ``to-guest`` holds (one listing), never from a numeric range, and
    at most ``batch`` messages are read. A bad message is an error of that message only
    (logged without its value, deleted if the guest may); only a broken connection
    (:class:`~ovmd.xenstore.ConnectionClosedError`) leaves :meth:`fetch`.
    """

    def __init__(self, client, base: str = CHANNEL_DIR, batch: int = DEFAULT_BATCH) -> None:
        self.client = client
        self.base = base
        self.batch = batch
        self.last_read: Optional[int] = None  # None: nothing known yet, scan at start
        self._plan: Deque[int] = deque()
        self._sent: Optional[int] = None
        self._warned_counter = False
        #: numbers or stray names already warned about (each is warned about once)
        self._warned: Dict[object, bool] = {}

    # --- receiving -----------------------------------------------------------------
    def watch(self) -> None:
        self.client.watch(box_path(self.base, TO_GUEST, LAST_WRITE), WATCH_TOKEN)

    def fetch(self) -> List[Message]:
        """Pending host messages in order (at most ``batch``); not yet deleted.

        Malformed messages are logged (key and reason, never the value) and deleted here:
        they are not accepted, so nothing is lost by removing them. A message XenStore
        refuses to show (``EACCES``) is logged and skipped. Call again while
        :attr:`has_more` is true.
        """
        from .xenstore import ConnectionClosedError, XenStoreError

        if not self._plan:
            self._plan_more()
        messages: List[Message] = []
        while self._plan and len(messages) < self.batch:
            number = self._plan.popleft()
            try:
                message = read_message(self.client, self.base, TO_GUEST, number)
            except ConnectionClosedError:
                raise
            except XenStoreError as err:
                self._warn_once(number, "cannot read host message %d (%s); skipped it: the "
                                "host must grant the guest read and write access to "
                                "to-guest/%d" % (number, err.name, number))
                self._delete(number)
                continue
            except (MessageError, ValueError) as err:  # ValueError: UnicodeError and kin
                log.warning("skipping host message %d: %s", number, printable(str(err), 300))
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
        """Forget the read position (after a reconnect, or a failed store): the next
        fetch rescans what ``to-guest`` holds."""
        self.last_read = None
        self._plan.clear()
        self._sent = None

    def _warn_once(self, what: object, message: str) -> None:
        if what in self._warned:
            return
        if len(self._warned) >= 10000:  # a host writing endless bad nodes: start again
            self._warned.clear()
        self._warned[what] = True
        log.warning("%s", message)

    def _delete(self, number: int) -> None:
        from .xenstore import ConnectionClosedError, XenStoreError

        try:
            self.client.rm(box_path(self.base, TO_GUEST, number))
        except ConnectionClosedError:
            raise
        except XenStoreError as err:
            if err.name != "ENOENT":
                self._warn_once(("rm", number), "cannot delete host message %d (%s); the "
                                "host must grant the guest write access to to-guest/<N>"
                                % (number, err.name))

    def _plan_more(self) -> None:
        """Plan the next messages from one listing of ``to-guest`` and the counter."""
        counter = read_counter(self.client, self.base, TO_GUEST)
        numbers, strays = self._list()
        for name in strays:
            self._delete_stray(name)
        if counter is None:
            if not self._warned_counter:
                log.warning("to-guest/last-write is not a number; reading every message node")
                self._warned_counter = True
            fresh = [n for n in numbers if self.last_read is None or n > self.last_read]
            self._plan.extend(fresh)
            self.last_read = max(numbers + [self.last_read or 0])
            return
        self._warned_counter = False
        last = self.last_read
        if last is None:
            planned = [n for n in numbers if n <= counter]
        elif counter < last:
            log.info("host message counter went back from %d to %d (domain resumed); "
                     "rescanning", last, counter)
            planned = [n for n in numbers if counter < n <= last] + \
                [n for n in numbers if n <= counter]
        else:
            planned = [n for n in numbers if last < n <= counter]
        self._plan.extend(planned)
        self.last_read = counter

    def _list(self) -> Tuple[List[int], List[str]]:
        """The message numbers and stray names ``to-guest`` holds. A server that cannot
        list a directory this large (``E2BIG``, no DIRECTORY_PART) gets the next
        ``batch`` numbers tried instead."""
        from .xenstore import XenStoreError

        try:
            return message_numbers(self.client, self.base, TO_GUEST)
        except XenStoreError as err:
            if err.name != "E2BIG":
                raise
        start = (self.last_read or 0) + 1
        return list(range(start, start + self.batch)), []

    def _delete_stray(self, name: str) -> None:
        from .xenstore import ConnectionClosedError, XenStoreError

        shown = printable(name, 64)
        try:
            self.client.rm(box_path(self.base, TO_GUEST, name))
        except ConnectionClosedError:
            raise
        except (XenStoreError, ValueError) as err:  # ValueError: not even a valid path
            self._warn_once(("stray", name), "cannot delete to-guest/%s (not a message "
                            "number): %s" % (shown, printable(str(err), 200)))
            return
        log.warning("deleted to-guest/%s: not a message number (messages are numbered from "
                    "1, without leading zeros)", shown)

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
        log.debug("sent message %d (%s) to the host", number, printable(key))
        return number


def ovmapi_loaded(root: str = "/") -> Optional[str]:
    """The path that shows Oracle's ``ovmapi`` kernel module is present, if any."""
    from .paths import join_root

    for path in ("/sys/module/ovmapi", "/dev/ovmapi"):
        located = join_root(root, path)
        if os.path.exists(located):
            return located
    return None
