"""``ovm-vmmessage``: the host side of the channel, for Xen hosts without Oracle VM Manager.

Runs in dom0 (or against the development server's dom0 socket) with absolute paths
``/local/domain/<id>/control/oracle-vmapi/...``. Sending writes exactly Oracle's layout
in the safe order: the value pieces, then ``to-guest/<N>`` (the key name), then
``to-guest/last-write``; it grants the guest read and write access to each message
node (the guest deletes what it has consumed) and write access to ``from-guest``.

Secrets need not be on the command line: ``-V -`` reads the value from stdin, and
``--batch FILE|-`` reads JSON lines.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Dict, Iterable, List, Optional, Tuple

from . import __version__
from .argtypes import seconds
from .channel import (
    CHANNEL_DIR,
    FROM_GUEST,
    LAST_WRITE,
    TO_GUEST,
    MessageError,
    box_path,
    check_message,
    read_counter,
    read_message,
    write_message,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
#: In --batch mode, update last-write after this many messages (and after the last).
LAST_WRITE_EVERY = 16
WAIT_TOKEN = "ovm-vmmessage-wait"


#: Why a message to dom0 is refused.
NOT_A_GUEST = ("domain 0 is the host (dom0), not a guest: give the id or name of a guest "
               "(xl list shows them)")


class VmMessageError(Exception):
    """Something ``ovm-vmmessage`` cannot do; ``exit_code`` is its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def check_guest(client, domid: int) -> None:
    """Refuse a domain that is not a running guest: dom0 (the host has no guest channel)
    or a domain XenStore does not know (nothing would ever read what we write there)."""
    from .xenstore import XenStoreError

    if domid == 0:
        raise VmMessageError(NOT_A_GUEST, EXIT_USAGE)
    try:
        known = client.is_domain_introduced(domid)
    except XenStoreError as err:
        if err.name not in ("ENOSYS", "EACCES", "EPERM", "EINVAL"):
            raise
        # a server without the request: the toolstack writes domid into every guest's home
        known = client.exists("/local/domain/%d/domid" % domid)
    if not known:
        raise VmMessageError("no domain %d: XenStore does not know it (is the guest running? "
                             "xl list shows the ids)" % domid)


def resolve_domain(client, domain: str) -> int:
    """A domain id from an id or a name (``/local/domain/*/name``)."""
    if domain.isdigit():
        return int(domain)
    from .xenstore import XenStoreError

    matches = []
    for domid in client.directory("/local/domain"):
        try:
            if client.read("/local/domain/%s/name" % domid) == domain:
                matches.append(int(domid))
        except XenStoreError:
            continue
    if not matches:
        raise VmMessageError("no domain named %r (looked in /local/domain/*/name)" % domain)
    if len(matches) > 1:
        raise VmMessageError("several domains are named %r: %s; use the id"
                             % (domain, ", ".join(map(str, matches))))
    return matches[0]


class HostChannel:
    """The host end for one domain."""

    def __init__(self, client, domid: int) -> None:
        self.client = client
        self.domid = domid
        self.base = "/local/domain/%d/%s" % (domid, CHANNEL_DIR)

    def prepare(self, tx) -> None:
        """Create the boxes with the permissions the guest needs (idempotent); ``tx`` is
        the client or a transaction."""
        guest = str(self.domid)
        for box, perms in ((TO_GUEST, ["n0", "r" + guest]), (FROM_GUEST, ["n0", "b" + guest])):
            path = box_path(self.base, box)
            if not tx.exists(path):
                tx.mkdir(path)
            tx.set_perms(path, perms)
        tx.set_perms(self.base, ["n0", "r" + guest])

    def send(self, messages: List[Tuple[str, str]]) -> int:
        """Send messages in order; returns the last message number written.

        Oracle's safe order, without a transaction: each message's pieces, then its key
        name, then ``last-write`` (every ``LAST_WRITE_EVERY`` messages and after the
        last). The guest reads only numbers up to ``last-write``, so it never sees half
        a message. (A transaction would conflict with the guest deleting what it has
        consumed, and be redone again and again during a burst.) One sender per domain
        at a time, as with Oracle VM Manager.
        """
        for key, value in messages:
            check_message(key, value)
        self.prepare(self.client)
        counter = read_counter(self.client, self.base, TO_GUEST) or 0
        perms = ["n0", "b%d" % self.domid]
        last_write = box_path(self.base, TO_GUEST, LAST_WRITE)
        for index, (key, value) in enumerate(messages, 1):
            counter += 1
            write_message(self.client, self.base, TO_GUEST, counter, key, value, perms)
            if index % LAST_WRITE_EVERY == 0 or index == len(messages):
                self.client.write(last_write, str(counter))
        return counter

    def received(self, since: int = 0) -> Dict[str, str]:
        """Latest value per key the guest sent (messages numbered above ``since``)."""
        counter = read_counter(self.client, self.base, FROM_GUEST)
        found: Dict[str, str] = {}
        if not counter:
            return found
        for number in range(since + 1, counter + 1):
            try:
                message = read_message(self.client, self.base, FROM_GUEST, number)
            except MessageError:
                continue
            if message is not None:
                found[message.key] = message.value
        return found

    def wait_for(self, key: str, timeout: Optional[float], new_only: bool) -> Optional[str]:
        """Wait (watch, no polling) until the guest has sent ``key``; its latest value."""
        since = (read_counter(self.client, self.base, FROM_GUEST) or 0) if new_only else 0
        watch_path = box_path(self.base, FROM_GUEST, LAST_WRITE)
        self.client.watch(watch_path, WAIT_TOKEN)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                # forget older events *before* re-reading: one that arrives while we
                # read stays queued and wakes wait_event at once
                self.client.pending_events()
                value = self.received(since).get(key)
                if value is not None:
                    return value
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.client.wait_event(remaining)
        finally:
            try:
                self.client.unwatch(watch_path, WAIT_TOKEN)
            except OSError:
                pass


def read_batch(stream) -> Iterable[Tuple[str, str]]:
    """JSON lines: ``{"key": K, "value": V}`` or ``{"K": "V", ...}``."""
    for number, line in enumerate(stream, 1):
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise VmMessageError("line %d is not JSON: %s" % (number, err.msg)) from None
        if not isinstance(item, dict):
            raise VmMessageError("line %d is not a JSON object" % number)
        if set(item) == {"key", "value"}:
            yield str(item["key"]), str(item["value"])
        else:
            for key, value in item.items():
                yield str(key), str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovm-vmmessage",
        description="Send key/value messages to a guest's ovmd through XenStore (dom0), "
        "and read what the guest sent back.",
        epilog="To keep a password off the command line use -V - (value on stdin) or "
        "--batch. Exit codes: 0 ok, 1 failure (or --wait timed out, or -q key not "
        "found), 2 usage error.")
    parser.add_argument("-d", "--domain", required=True, metavar="ID|NAME",
                        help="the guest: a domain id or a name from /local/domain/*/name")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("-k", "--key", help="send one message with this key (needs -V)")
    action.add_argument("--batch", metavar="FILE|-",
                        help="send many messages in order from JSON lines")
    action.add_argument("-q", "--query", metavar="KEY",
                        help="print the latest value the guest sent for KEY")
    action.add_argument("-l", "--list", action="store_true",
                        help="print everything the guest sent (latest per key) as JSON lines")
    action.add_argument("--wait", metavar="KEY", help="wait until the guest sends KEY; "
                        "print its value")
    parser.add_argument("-V", "--value", help="the value to send; '-' reads it from stdin "
                        "(one trailing newline is removed)")
    parser.add_argument("--timeout", type=seconds, metavar="SECS",
                        help="--wait: give up after SECS seconds")
    parser.add_argument("--new", action="store_true",
                        help="--wait: only a message sent after the wait started counts")
    parser.add_argument("--xenstore", metavar="PATH", help="XenStore socket (dom0)")
    parser.add_argument("--version", action="version", version="ovm-vmmessage " + __version__)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    _check_usage(parser, options)
    from .xenstore import XenStoreClient, XenStoreError
    from .xenstore.transport import NO_XENSTORE

    try:
        if options.domain.isdigit() and int(options.domain) == 0:
            raise VmMessageError(NOT_A_GUEST, EXIT_USAGE)
        messages = _messages(options)  # read and checked before anything is written
        with XenStoreClient.open(options.xenstore) as client:
            domid = resolve_domain(client, options.domain)
            check_guest(client, domid)
            return _act(HostChannel(client, domid), options, messages)
    except VmMessageError as err:
        print("ovm-vmmessage: %s" % err, file=sys.stderr)
        return err.exit_code
    except MessageError as err:
        print("ovm-vmmessage: %s" % err, file=sys.stderr)
        return EXIT_FAILURE
    except XenStoreError as err:
        hint = "; run ovm-vmmessage in dom0, where xenstored runs, or give --xenstore PATH" \
            if err.detail.startswith(NO_XENSTORE) else ""
        print("ovm-vmmessage: XenStore: %s%s" % (err.detail or err, hint), file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        print("ovm-vmmessage: %s" % err, file=sys.stderr)
        return EXIT_FAILURE


def _check_usage(parser: argparse.ArgumentParser, options) -> None:
    """Options given where they do nothing are usage errors, not silently ignored."""
    if options.key is not None and options.value is None:
        parser.error("-k KEY needs -V VALUE (or -V - to read the value from stdin)")
    if options.value is not None and options.key is None:
        parser.error("-V goes with -k KEY")
    for given, flag in ((options.new, "--new"), (options.timeout is not None, "--timeout")):
        if given and options.wait is None:
            parser.error("%s goes with --wait KEY" % flag)


def _messages(options) -> List[Tuple[str, str]]:
    """What ``-k``/``-V`` or ``--batch`` send, read (stdin, the file) and checked against
    the channel's limits; [] for the other actions."""
    if options.key is not None:
        value = options.value
        if value == "-":
            value = sys.stdin.read()
            if value.endswith("\n"):
                value = value[:-1]
        messages = [(options.key, value)]
    elif options.batch is not None:
        try:
            stream = sys.stdin if options.batch == "-" else open(options.batch,
                                                                 encoding="utf-8")
        except OSError as err:
            from .oserror import os_reason

            raise VmMessageError("--batch %s: %s" % (options.batch, os_reason(err))) from None
        with stream:
            try:
                messages = list(read_batch(stream))
            except UnicodeDecodeError:
                raise VmMessageError("--batch %s: not UTF-8 text" % options.batch) from None
    else:
        return []
    for key, value in messages:
        check_message(key, value)
    return messages


def _act(channel: HostChannel, options, messages: List[Tuple[str, str]]) -> int:
    if options.key is not None:
        channel.send(messages)
        return EXIT_OK
    if options.batch is not None:
        channel.send(messages)
        print("sent %d message(s)" % len(messages), file=sys.stderr)
        return EXIT_OK
    if options.query is not None:
        value = channel.received().get(options.query)
        if value is None:
            print("ovm-vmmessage: the guest has not sent %r" % options.query, file=sys.stderr)
            return EXIT_FAILURE
        print(value)
        return EXIT_OK
    if options.list:
        for key, value in sorted(channel.received().items()):
            print(json.dumps({key: value}, ensure_ascii=False))
        return EXIT_OK
    value = channel.wait_for(options.wait, options.timeout, options.new)
    if value is None:
        print("ovm-vmmessage: timed out waiting for %r" % options.wait, file=sys.stderr)
        return EXIT_FAILURE
    print(value)
    return EXIT_OK
