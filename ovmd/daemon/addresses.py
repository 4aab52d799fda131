"""The address reporter: tells the host the guest's IP addresses, as they change.

Xen's tools read them under ``attr/vif/<devid>/ipv4|ipv6/<n>``, Oracle VM Manager from the
message ``com.oracle.linux.network.ipaddrs`` (what is reported, and how:
:mod:`ovmd.vifaddrs`, docs/protocol.md). Nothing polls: the kernel says what changed
(rtnetlink notifications on one socket in the daemon's loop), XenStore says when the vifs
change (a watch on ``device/vif``), and while nothing changes the daemon is not woken.
A change arms one timer (:data:`DEBOUNCE`, not moved by later changes, so a burst is
reported once and a stream of changes at least every DEBOUNCE seconds); when it fires,
only what differs from what the host has is written.

One object owns the states. The kernel's view is DUMPING (after the start, an overrun
or a malformed datagram: the table is rebuilt from a dump of the links, then one of the
addresses; nothing is published meanwhile) or LIVE (the table follows the
notifications).

==================================  =====================================================
event                               what happens
==================================  =====================================================
start                               socket bound to the groups; dump: DUMPING
a link or address record            applied to the table (dump replies and notifications
                                    alike, in arrival order); a change arms the timer
                                    when LIVE
the end of the dump                 LIVE, or dump again if the kernel marked the dump
                                    interrupted or notifications were lost meanwhile;
                                    arms the timer
ENOBUFS (the kernel dropped         dump again (once the current dump has ended)
notifications), a malformed
datagram
the kernel refuses the dump         dump again in :data:`DUMP_RETRY` seconds
another error of the socket         warned about; the reporter stops
``device/vif`` watch event          the vif map is re-read at the next publish; arms
                                    the timer
XenStore (re)connected              ``attr/vif`` is read back at the next publish; the
                                    message is sent again, unless the outbox just
                                    delivered it; arms the timer
the timer, DUMPING or no XenStore   nothing: the end of the dump, the connect re-arm it
the timer, LIVE                     vif map read if stale; the changed ``attr/vif`` nodes
                                    written and the gone ones removed (one transaction);
                                    the message sent if its value changed
the connection breaks meanwhile     :meth:`HostLink.lost`: it reconnects (above)
XenStore refuses (``EACCES``, ...)  logged once per distinct refusal; tried again at
                                    the next change
==================================  =====================================================

``REPORT_ADDRESSES=no`` in ``/etc/sysconfig/ovmd`` switches the reporter off.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any, Dict, List, Optional, Tuple

from ..channel import MAX_VALUE_BYTES, MessageError
from ..netlink import (
    GROUPS,
    NLM_F_DUMP_INTR,
    RTM_GETADDR,
    RTM_GETLINK,
    Done,
    Error,
    Message,
    NetlinkError,
    dump_request,
    parse,
)
from ..paths import Paths
from ..sysconfig import SettingError, flag
from ..vifaddrs import (
    ATTR_VIF,
    DEVICE_VIF,
    EMPTY,
    KEY,
    InterfaceTable,
    VifAddresses,
    normalize_mac,
    oracle_value,
    vif_addresses,
    xen_changes,
    xen_nodes,
)
from .hostlink import HostLink
from .loop import EventLoop

log = logging.getLogger(__name__)

#: Seconds from the first change to the report.
DEBOUNCE = 0.25
#: Seconds before a dump the kernel refused is asked for again.
DUMP_RETRY = 1.0
#: The setting in /etc/sysconfig/ovmd that switches the reporter off.
SETTING = "REPORT_ADDRESSES"
WATCH_TOKEN = "ovmd-vifs"
TIMER = "addresses"
DUMP_TIMER = "addresses-dump"
#: Datagrams read per wake-up: more stay readable and wake the loop at once.
_READS_PER_WAKE = 64
_RECV_BYTES = 65536
_DUMP_NAMES = {RTM_GETLINK: "links", RTM_GETADDR: "addresses"}


class AddressReporter:
    """Keeps ``attr/vif`` and the :data:`~ovmd.vifaddrs.KEY` message current."""

    def __init__(self, paths: Paths, loop: EventLoop, link: HostLink,
                 debounce: float = DEBOUNCE) -> None:
        self.paths = paths
        self.loop = loop
        self.link = link
        self.debounce = debounce
        self.table = InterfaceTable()
        self.sock: Optional[socket.socket] = None
        self.port = 0
        self.dumping: List[int] = []  # the dumps still to do; the first one is running
        self.vifs: Dict[str, str] = {}  # devid -> MAC
        self._seq = 0
        self._dump_again = False
        self._vifs_stale = True
        self._xen: Optional[Dict[str, str]] = None  # what attr/vif holds; None: unknown
        self._sent = EMPTY  # the value last handed to the host link
        self._queued = False  # ... and it waits in the outbox
        self._resend = False
        self._refused: Optional[str] = None

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> bool:
        """Start reporting, unless switched off or impossible (logged); call before the
        host link's first connect."""
        try:
            enabled = flag(self.paths, SETTING, True)
        except SettingError as err:
            log.warning("%s; reporting IP addresses, the default", err)
            enabled = True
        if not enabled:
            log.info("not reporting IP addresses to the host (%s=no)", SETTING)
            return False
        try:
            sock = socket.socket(socket.AF_NETLINK,
                                 socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                 socket.NETLINK_ROUTE)
        except OSError as err:
            log.warning("cannot open the kernel's routing socket (%s): not reporting IP "
                        "addresses to the host", err)
            return False
        try:
            sock.bind((0, GROUPS))
        except OSError as err:
            sock.close()
            log.warning("cannot listen to the kernel's address notifications (%s): not "
                        "reporting IP addresses to the host", err)
            return False
        self.sock = sock
        self.port = sock.getsockname()[0]
        self.loop.add_reader(sock, self._on_netlink)
        self.link.add_watch(DEVICE_VIF, WATCH_TOKEN, self._vifs_changed)
        self.link.on_connected(self._connected)
        self._dump()
        return True

    def close(self) -> None:
        self.loop.cancel_timer(TIMER)
        self.loop.cancel_timer(DUMP_TIMER)
        if self.sock is not None:
            self.loop.remove(self.sock)
            self.sock.close()
            self.sock = None

    # --- the kernel's view --------------------------------------------------------------
    def _dump(self) -> None:
        if self.dumping:
            self._dump_again = True  # one dump at a time per socket
            return
        self.table.clear()
        self.dumping = [RTM_GETLINK, RTM_GETADDR]
        self._request_dump()

    def _request_dump(self) -> None:
        assert self.sock is not None
        self._seq += 1
        try:
            self.sock.send(dump_request(self.dumping[0], self._seq))
        except OSError as err:
            self._dump_failed(os.strerror(err.errno) if err.errno else str(err))

    def _dump_failed(self, why: str) -> None:
        log.warning("cannot list the guest's %s (%s); trying again in %.0f s",
                    _DUMP_NAMES[self.dumping[0]], why, DUMP_RETRY)
        self.dumping = []
        self.loop.set_timer(DUMP_TIMER, DUMP_RETRY, self._dump)

    def _on_netlink(self, _mask: int) -> None:
        assert self.sock is not None
        for _ in range(_READS_PER_WAKE):
            try:
                data = self.sock.recv(_RECV_BYTES)
            except BlockingIOError:
                return
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    log.warning("the kernel's routing socket failed (%s): not reporting IP "
                                "address changes any more", err)
                    self.close()
                    return
                log.info("the kernel dropped address notifications (our receive queue was "
                         "full); listing every address again")
                self._dump()
                continue
            try:
                messages = parse(data)
            except NetlinkError as err:
                log.warning("malformed rtnetlink datagram (%s); listing every address again",
                            err)
                self._dump()
                continue
            self._take(messages)

    def _take(self, messages: List[Message]) -> None:
        changed = False
        for message in messages:
            ours = bool(self.dumping) and message.seq == self._seq and message.pid == self.port
            if ours and message.flags & NLM_F_DUMP_INTR:
                self._dump_again = True
            body = message.body
            if ours and (isinstance(body, Done) or isinstance(body, Error) and body.error):
                self._dump_step(body.error)  # the end of our dump, or its refusal
            elif self.table.apply(body):
                changed = True
        if changed and not self.dumping:  # else the end of the dump arms the timer
            self._changed()

    def _dump_step(self, error: int) -> None:
        if error:
            self._dump_failed(os.strerror(-error))
            return
        self.dumping.pop(0)
        if self.dumping:
            self._request_dump()
        elif self._dump_again:
            self._dump_again = False
            self._dump()
        else:
            self._changed()

    # --- XenStore's side ----------------------------------------------------------------
    def _vifs_changed(self) -> None:
        self._vifs_stale = True
        self._changed()

    def _connected(self) -> None:
        self._xen = None
        self._vifs_stale = True
        self._resend = not self._queued  # a queued value was just delivered by the outbox
        self._queued = False
        self._changed()

    def _changed(self) -> None:
        if TIMER not in self.loop.timers:
            self.loop.set_timer(TIMER, self.debounce, self._publish)

    def _publish(self) -> None:
        from ..xenstore import ConnectionClosedError, XenStoreError

        client = self.link.client
        if self.dumping or client is None:
            return  # the end of the dump, or the next connect, publishes
        try:
            if self._vifs_stale:
                self.vifs = read_vifs(client)
                self._vifs_stale = False
            report = vif_addresses(self.table, self.vifs)
        except ConnectionClosedError as err:
            self.link.lost(err)
            return
        except XenStoreError as err:
            self._say_refused("cannot read %s" % DEVICE_VIF, err)
            return
        try:
            self._write_xen(client, xen_nodes(report))
            self._refused = None
        except ConnectionClosedError as err:
            self.link.lost(err)
            return
        except XenStoreError as err:
            self._xen = None
            self._say_refused("cannot write %s" % ATTR_VIF, err)
        self._send(report)

    def _write_xen(self, client: Any, wanted: Dict[str, str]) -> None:
        if self._xen is None:
            self._xen = read_tree(client, ATTR_VIF)
        writes, removals = xen_changes(self._xen, wanted)
        if writes or removals:
            def apply(tx: Any) -> None:
                for path in removals:
                    remove(tx, path)
                for path, value in writes.items():
                    tx.write(path, value)

            client.transact(apply)
        self._xen = dict(wanted)

    def _send(self, report: List[VifAddresses]) -> None:
        value, dropped = oracle_value(report)
        if value == self._sent and (not self._resend or value == EMPTY):
            return
        self._resend = False
        if dropped:
            log.warning("the IP addresses do not fit the %d bytes of one message: %d left "
                        "out of %s", MAX_VALUE_BYTES, dropped, KEY)
        try:
            warning = self.link.send(KEY, value)
        except MessageError as err:
            log.warning("cannot send the IP addresses to the host: %s", err)
            return
        if warning:
            log.warning("%s", warning)
        self._sent = value
        self._queued = (KEY, value) in self.link.outbox
        log.info("IP addresses for the host: %s", "; ".join(
            "vif %s %s %s" % (v.devid, v.mac, _listed(v.ipv4 + v.ipv6)) for v in report)
            or "no vifs")

    def _say_refused(self, what: str, err: OSError) -> None:
        text = "%s: %s" % (what, err)
        if text != self._refused:
            log.warning("%s; the host's view of the IP addresses is not updated until the "
                        "next change", text)
            self._refused = text


def _listed(addresses: Tuple[str, ...], most: int = 8) -> str:
    if len(addresses) > most:
        return "%s... (%d in all)" % (",".join(addresses[:most]), len(addresses))
    return ",".join(addresses) or "none"


def read_vifs(client: Any) -> Dict[str, str]:
    """devid -> MAC of every vif the toolstack lists in ``device/vif``."""
    from ..xenstore import XenStoreError

    try:
        devids = client.directory(DEVICE_VIF)
    except XenStoreError as err:
        if err.name == "ENOENT":
            return {}
        raise
    vifs = {}
    for devid in devids:
        if not devid.isdigit():
            continue
        path = "%s/%s/mac" % (DEVICE_VIF, devid)
        try:
            text = client.read(path)
        except XenStoreError as err:
            if err.name == "ENOENT":
                continue  # the toolstack is still writing it: its watch event follows
            raise
        mac = normalize_mac(text)
        if mac is None:
            log.warning("%s is not a MAC address (%r): not reporting vif %s", path,
                        text[:40], devid)
            continue
        vifs[devid] = mac
    return vifs


def read_tree(client: Any, top: str) -> Dict[str, str]:
    """Every leaf under ``top`` (path -> value); empty if ``top`` does not exist."""
    from ..xenstore import XenStoreError

    leaves = {}
    pending = [top]
    while pending:
        path = pending.pop()
        try:
            children = client.directory(path)
            if children:
                pending.extend("%s/%s" % (path, child) for child in children)
            elif path != top:
                leaves[path] = client.read(path)
        except XenStoreError as err:
            if err.name != "ENOENT":
                raise
    return leaves


def remove(tx: Any, path: str) -> None:
    """Remove a subtree; quietly if it is gone already."""
    from ..xenstore import XenStoreError

    try:
        tx.rm(path)
    except XenStoreError as err:
        if err.name != "ENOENT":
            raise
