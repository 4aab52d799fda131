"""``ovmd-xenstored``: a development XenStore server on unix sockets.

The demo and the tests need a XenStore without Xen. This server keeps the store in
memory (:mod:`ovmd.xenstore.store` holds the semantics) and speaks the wire protocol
(docs/protocol.md) on unix sockets laid out under ``--socket-dir DIR``:

* ``DIR/socket``: privileged (dom0) connections, as xenstored's own socket; Debian's
  ``xenstore-*`` tools use it with ``XENSTORED_PATH=DIR/socket``;
* ``DIR/domain/<ID>``: connections that act as guest ``ID`` (relative paths resolve
  to ``/local/domain/<ID>``, permissions are enforced for that domid), one socket per
  ``--domain ID[:NAME]`` and per domain introduced later with ``INTRODUCE``.

It is one single-threaded ``selectors`` loop, prints ``ready`` once it listens, and
stops cleanly (removing its sockets) on SIGTERM or SIGINT. Run it as ``ovmd-xenstored``
or ``python -m ovmd.xenstore.server``.

:class:`RequestHandler` turns one request into store calls and a reply without any I/O;
:class:`DevXenStoreServer` does the sockets.
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import selectors
import signal
import socket
import stat
import sys
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .errors import ProtocolError, XenStoreError
from .protocol import MAX_PAYLOAD, Op, Packet, PacketParser, encode
from .store import Session, Store, StoreListener

log = logging.getLogger(__name__)

#: A reply: message type, payload, and watch events to send *after* it (path, token).
Reply = Tuple[int, bytes, List[Tuple[str, str]]]

_OK = b"OK\0"
_PRIVILEGED = 1  # only dom0 may send this request (xenstored's XS_FLAG_PRIV)
_NO_TX = 2       # the header's tx_id is ignored (xenstored's XS_FLAG_NOTID)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _strings(payload: bytes) -> List[str]:
    """The NUL-terminated strings of a payload; bytes after the last NUL are ignored
    (xenstored's ``get_strings``)."""
    return [_text(part) for part in payload.split(b"\0")[:-1]]


def _onearg(payload: bytes) -> str:
    """The single argument of a request: exactly one NUL, at the end (else EINVAL)."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        raise XenStoreError("EINVAL", "expected one NUL-terminated argument")
    return _text(payload[:-1])


def _args(payload: bytes, count: int, exact: bool = False) -> List[str]:
    strings = _strings(payload)
    if len(strings) < count or (exact and len(strings) != count):
        raise XenStoreError("EINVAL", "expected %d arguments" % count)
    return strings


def _atoi(text: str) -> int:
    """C ``atoi`` as xenstored uses it for domids: leading digits, else 0."""
    text = text.lstrip(" \t\n")
    digits = ""
    for char in text:
        if not ("0" <= char <= "9"):
            break
        digits += char
    return int(digits) if digits else 0


def _nul_list(strings: Sequence[str]) -> bytes:
    return b"".join(_raw(s) + b"\0" for s in strings)


def event_payload(path: str, token: str) -> bytes:
    """A ``WATCH_EVENT`` payload: ``path\\0token\\0``."""
    return _raw(path) + b"\0" + _raw(token) + b"\0"


class RequestHandler:
    """Answers requests the way xenstored does, given a :class:`Store`."""

    _CONTROL_HELP = (
        ("check", ""),
        ("help", ""),
        ("log", "[on|off|+<switch>|-<switch>]"),
        ("print", "<string>"),
    )

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ops: Dict[int, Tuple[Callable[[Session, int, bytes], Reply], int]] = {
            Op.CONTROL: (self._control, _PRIVILEGED),
            Op.DIRECTORY: (self._directory, 0),
            Op.READ: (self._read, 0),
            Op.GET_PERMS: (self._get_perms, 0),
            Op.WATCH: (self._watch, _NO_TX),
            Op.UNWATCH: (self._unwatch, _NO_TX),
            Op.TRANSACTION_START: (self._transaction_start, 0),
            Op.TRANSACTION_END: (self._transaction_end, 0),
            Op.INTRODUCE: (self._introduce, _PRIVILEGED),
            Op.RELEASE: (self._release, _PRIVILEGED),
            Op.GET_DOMAIN_PATH: (self._get_domain_path, 0),
            Op.WRITE: (self._write, 0),
            Op.MKDIR: (self._mkdir, 0),
            Op.RM: (self._rm, 0),
            Op.SET_PERMS: (self._set_perms, 0),
            Op.IS_DOMAIN_INTRODUCED: (self._is_domain_introduced, _PRIVILEGED),
            Op.RESUME: (self._resume, _PRIVILEGED),
            Op.SET_TARGET: (self._set_target, _PRIVILEGED),
            Op.RESET_WATCHES: (self._reset_watches, 0),
            Op.DIRECTORY_PART: (self._directory_part, 0),
        }

    def handle(self, session: Session, packet: Packet) -> Reply:
        """Process one request; watch events it causes reach ``session.deliver`` (of
        every session) before this returns, i.e. before the reply is queued."""
        entry = self._ops.get(packet.type)
        try:
            if entry is None:
                raise XenStoreError("ENOSYS", "unknown message type %d" % packet.type)
            func, flags = entry
            if flags & _PRIVILEGED and not session.privileged:
                raise XenStoreError("EACCES", "privileged request")
            tx_id = 0 if flags & _NO_TX else packet.tx_id
            self.store.transaction(session, tx_id)  # ENOENT for an unknown transaction
            reply_type, payload, after = func(session, tx_id, packet.payload)
            if len(payload) > MAX_PAYLOAD:
                raise XenStoreError("E2BIG", "reply of %d bytes" % len(payload))
            return reply_type, payload, after
        except XenStoreError as err:
            log.debug("d%d %s -> %s (%s)", session.domid, _op_name(packet.type), err.name,
                      err.detail)
            return Op.ERROR, err.name.encode("ascii") + b"\0", []
        except Exception:  # a bug here must not take every other connection down
            log.exception("d%d %s: internal error", session.domid, _op_name(packet.type))
            return Op.ERROR, b"EIO\0", []

    # Each method below returns a Reply for one request type.

    def _directory(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        children = self.store.directory(session, _onearg(payload), tx_id)
        return Op.DIRECTORY, _nul_list(children), []

    def _directory_part(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        path, offset = _args(payload, 2, exact=True)
        return Op.DIRECTORY_PART, self.store.directory_part(session, path, _atoi(offset), tx_id), []

    def _read(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        return Op.READ, self.store.read(session, _onearg(payload), tx_id), []

    def _get_perms(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        return Op.GET_PERMS, _nul_list(self.store.get_perms(session, _onearg(payload), tx_id)), []

    def _write(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        end = payload.find(b"\0")
        if end < 0:
            raise XenStoreError("EINVAL", "WRITE without a path")
        self.store.write(session, _text(payload[:end]), payload[end + 1:], tx_id)
        return Op.WRITE, _OK, []

    def _mkdir(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        self.store.mkdir(session, _onearg(payload), tx_id)
        return Op.MKDIR, _OK, []

    def _rm(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        self.store.rm(session, _onearg(payload), tx_id)
        return Op.RM, _OK, []

    def _set_perms(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        strings = _args(payload, 2)
        self.store.set_perms(session, strings[0], strings[1:], tx_id)
        return Op.SET_PERMS, _OK, []

    def _watch(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        path, token = _args(payload, 2, exact=True)
        initial = self.store.watch(session, path, token)
        return Op.WATCH, _OK, [initial]

    def _unwatch(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        path, token = _args(payload, 2, exact=True)
        self.store.unwatch(session, path, token)
        return Op.UNWATCH, _OK, []

    def _reset_watches(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        self.store.reset_watches(session)
        return Op.RESET_WATCHES, _OK, []

    def _transaction_start(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        new_id = self.store.transaction_start(session, tx_id)
        return Op.TRANSACTION_START, b"%d\0" % new_id, []

    def _transaction_end(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        try:
            arg = _onearg(payload)
        except XenStoreError:
            arg = None
        if arg not in ("T", "F"):
            raise XenStoreError("EINVAL", "TRANSACTION_END takes T or F")
        self.store.transaction_end(session, tx_id, arg == "T")
        return Op.TRANSACTION_END, _OK, []

    def _get_domain_path(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        path = self.store.get_domain_path(_atoi(_onearg(payload)))
        return Op.GET_DOMAIN_PATH, _raw(path) + b"\0", []

    def _is_domain_introduced(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        answer = self.store.is_domain_introduced(_atoi(_onearg(payload)))
        return Op.IS_DOMAIN_INTRODUCED, b"T\0" if answer else b"F\0", []

    def _introduce(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        domid, _mfn, port = _args(payload, 3)[:3]
        if _atoi(port) <= 0:
            raise XenStoreError("EINVAL", "bad event channel port %r" % port)
        domid_value = _atoi(domid)
        if domid_value == 0:
            return Op.INTRODUCE, _OK, []  # dom0 is always there
        self.store.introduce(domid_value)
        return Op.INTRODUCE, _OK, []

    def _release(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        self.store.release(_atoi(_onearg(payload)))
        return Op.RELEASE, _OK, []

    def _resume(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        self.store.resume(_atoi(_onearg(payload)))
        return Op.RESUME, _OK, []

    def _set_target(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        domid, target = _args(payload, 2)[:2]
        self.store.set_target(_atoi(domid), _atoi(target))
        return Op.SET_TARGET, _OK, []

    def _control(self, session: Session, tx_id: int, payload: bytes) -> Reply:
        """The harmless part of xenstored's ``CONTROL`` commands; others are EINVAL."""
        strings = _strings(payload)
        if not strings:
            raise XenStoreError("EINVAL", "CONTROL without a command")
        command, args = strings[0], strings[1:]
        if command == "check" and not args:
            return Op.CONTROL, _OK, []
        if command == "print" and len(args) == 1:
            log.info("control: %s", args[0])
            return Op.CONTROL, _OK, []
        if command == "help" and not args:
            text = "".join("%-15s %s\n" % entry for entry in self._CONTROL_HELP)
            return Op.CONTROL, _raw(text) + b"\0", []
        if command == "log":
            if not args:
                return Op.CONTROL, b"Log switch settings:\n\0", []
            if len(args) == 1:
                return Op.CONTROL, _OK, []
        raise XenStoreError("EINVAL", "unsupported CONTROL command %r" % command)


def _op_name(type_: int) -> str:
    try:
        return Op(type_).name
    except ValueError:
        return "type-%d" % type_


class _Connection:
    """One accepted socket: its parser, its session and its pending output."""

    def __init__(self, server: "DevXenStoreServer", sock: socket.socket, domid: int,
                 privileged: bool) -> None:
        self.server = server
        self.sock = sock
        self.parser = PacketParser()
        self.out = bytearray()
        self.closed = False
        self.session = server.store.open_session(domid, privileged, self.deliver)
        self.name = "d%d/fd%d" % (domid, sock.fileno())

    def deliver(self, path: str, token: str) -> None:
        payload = event_payload(path, token)
        if len(payload) > MAX_PAYLOAD or self.closed:
            return  # xenstored does not send over-long events either
        self.out += encode(Op.WATCH_EVENT, 0, 0, payload)
        self.server.mark_dirty(self)

    def on_ready(self, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self.read()
        if mask & selectors.EVENT_WRITE and not self.closed:
            self.server.mark_dirty(self)

    def read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:
            log.debug("%s: read failed: %s", self.name, err)
            self.server.close_connection(self)
            return
        if not data:
            log.debug("%s: closed by peer", self.name)
            self.server.close_connection(self)
            return
        try:
            packets = self.parser.feed(data)
        except ProtocolError as err:
            log.warning("%s: dropping connection: %s", self.name, err.detail)
            self.server.close_connection(self)
            return
        for packet in packets:
            if self.closed:
                return
            self.process(packet)

    def process(self, packet: Packet) -> None:
        reply_type, payload, after = self.server.handler.handle(self.session, packet)
        if log.isEnabledFor(logging.DEBUG):
            # Paths and sizes only: values may be secrets (root passwords).
            log.debug("%s: %s tx=%d %s -> %s %d bytes", self.name, _op_name(packet.type),
                      packet.tx_id, _describe(packet), _op_name(reply_type), len(payload))
        self.out += encode(reply_type, packet.req_id, packet.tx_id, payload)
        for path, token in after:
            self.deliver(path, token)
        self.server.mark_dirty(self)

    def flush(self) -> bool:
        """Send what the socket takes; True when nothing is left."""
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError as err:
                log.debug("%s: write failed: %s", self.name, err)
                self.server.close_connection(self)
                return True
            del self.out[:sent]
        return True


def _describe(packet: Packet) -> str:
    """The path (first string) of a request, never its value."""
    first = packet.payload.split(b"\0", 1)[0]
    return repr(_text(first[:120]))


class DevXenStoreServer(StoreListener):
    """The sockets of ``ovmd-xenstored`` around a :class:`Store`."""

    def __init__(self, socket_dir: Path,
                 domains: Optional[Dict[int, Optional[str]]] = None,
                 vm_uuids: Optional[Dict[int, str]] = None) -> None:
        self.socket_dir = Path(socket_dir)
        self.store = Store(self)
        self.handler = RequestHandler(self.store)
        self.selector = selectors.DefaultSelector()
        self.connections: List[_Connection] = []
        self._listeners: Dict[Path, socket.socket] = {}
        self._dirty: Dict[_Connection, None] = {}
        self._stop_requested = False
        self._wakeup_r: Optional[socket.socket] = None
        self._wakeup_w: Optional[socket.socket] = None
        self._initial_domains = dict(domains or {})
        self._vm_uuids = dict(vm_uuids or {})

    @property
    def dom0_socket(self) -> Path:
        return self.socket_dir / "socket"

    def guest_socket(self, domid: int) -> Path:
        return self.socket_dir / "domain" / str(domid)

    # -- set-up and tear-down ---------------------------------------------------------

    def start(self) -> None:
        """Create the domains and listen on every socket."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        for end in (self._wakeup_r, self._wakeup_w):
            end.setblocking(False)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, self._on_wakeup)
        self._listen(self.dom0_socket, 0, True)
        for domid, name in sorted(self._initial_domains.items()):
            # introduces it, which creates its socket
            self.store.add_domain(domid, name, self._vm_uuids.get(domid))

    def _listen(self, path: Path, domid: int, privileged: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            os.chmod(str(path), 0o600)
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._listeners[path] = sock
        self.selector.register(sock, selectors.EVENT_READ,
                               lambda mask: self._accept(sock, domid, privileged))
        log.debug("listening on %s as d%d", path, domid)

    def close(self) -> None:
        """Close every connection and listener and remove the sockets."""
        for conn in list(self.connections):
            conn.flush()
            self.close_connection(conn)
        for path, sock in list(self._listeners.items()):
            self.selector.unregister(sock)
            sock.close()
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        self._listeners.clear()
        try:
            (self.socket_dir / "domain").rmdir()
        except OSError:
            pass
        for end in (self._wakeup_r, self._wakeup_w):
            if end is not None:
                try:
                    self.selector.unregister(end)
                except (KeyError, ValueError):
                    pass
                end.close()
        self._wakeup_r = self._wakeup_w = None
        self.selector.close()

    # -- the loop ---------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        """Stop on SIGTERM and SIGINT; the wake-up socket interrupts the select."""
        assert self._wakeup_w is not None, "start() first"
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    def _on_wakeup(self, mask: int) -> None:
        assert self._wakeup_r is not None
        try:
            while self._wakeup_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def serve_forever(self) -> None:
        while not self._stop_requested:
            for key, mask in self.selector.select():
                key.data(mask)
                if self._stop_requested:
                    break
            self._flush_dirty()

    def mark_dirty(self, conn: _Connection) -> None:
        self._dirty[conn] = None

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, {}
        for conn in dirty:
            if conn.closed:
                continue
            done = conn.flush()
            if conn.closed:
                continue
            events = selectors.EVENT_READ if done else selectors.EVENT_READ | selectors.EVENT_WRITE
            self.selector.modify(conn.sock, events, conn.on_ready)

    def _accept(self, listener: socket.socket, domid: int, privileged: bool) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as err:  # e.g. out of file descriptors: keep serving the others
            log.error("accept failed: %s", err)
            return
        if not privileged and not self.store.is_domain_introduced(domid):
            log.info("refusing a connection for released domain %d", domid)
            sock.close()
            return
        sock.setblocking(False)
        conn = _Connection(self, sock, domid, privileged)
        self.connections.append(conn)
        self.selector.register(sock, selectors.EVENT_READ, conn.on_ready)
        log.debug("%s: connected", conn.name)

    def close_connection(self, conn: _Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.store.close_session(conn.session)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self.connections.remove(conn)
        self._dirty.pop(conn, None)

    # -- StoreListener ----------------------------------------------------------------

    def domain_introduced(self, domid: int) -> None:
        path = self.guest_socket(domid)
        if path not in self._listeners:
            self._listen(path, domid, False)

    def domain_released(self, domid: int) -> None:
        for conn in list(self.connections):
            if conn.session.domid == domid and not conn.session.privileged:
                self.close_connection(conn)


def _remove_stale_socket(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse to steal a live one."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "exists and is not a socket", str(path))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise OSError(errno.EADDRINUSE, "another server is listening on", str(path))
    finally:
        probe.close()


def _parse_domain(spec: str) -> Tuple[int, Optional[str], Optional[str]]:
    domid_text, _, rest = spec.partition(":")
    name, _, vm_uuid = rest.partition(":")
    try:
        domid = int(domid_text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r: expected ID[:NAME[:UUID]], e.g. 1:guest1" % spec)
    if not 0 < domid < 0x7FF0:
        raise argparse.ArgumentTypeError("%r: a guest domid is between 1 and 32751" % spec)
    if vm_uuid:
        try:
            vm_uuid = str(uuid.UUID(vm_uuid))
        except ValueError:
            raise argparse.ArgumentTypeError("%r: %r is not a UUID (e.g. %s)"
                                             % (spec, vm_uuid, uuid.uuid4()))
    return domid, (name or None), (vm_uuid or None)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovmd-xenstored",
        description="Development XenStore server: the XenStore protocol in memory on unix "
                    "sockets. DIR/socket is privileged (dom0; XENSTORED_PATH=DIR/socket "
                    "for Debian's xenstore-* tools); DIR/domain/ID acts as guest ID. "
                    "Prints 'ready' when listening; stops on SIGTERM or SIGINT.")
    parser.add_argument("--socket-dir", required=True, type=Path, metavar="DIR",
                        help="directory for the sockets (created if missing)")
    parser.add_argument("--domain", action="append", default=[], type=_parse_domain,
                        metavar="ID[:NAME[:UUID]]",
                        help="create guest ID's home /local/domain/ID as a toolstack does "
                             "(with control/oracle-vmapi/to-guest and from-guest, and vm "
                             "-> /vm/UUID, by default a UUID derived from ID and NAME) and "
                             "its socket DIR/domain/ID; repeatable")
    noise = parser.add_mutually_exclusive_group()
    noise.add_argument("-q", "--quiet", action="store_true", help="log errors only")
    noise.add_argument("-v", "--verbose", action="store_true",
                       help="log every request (paths and sizes, never values) to stderr")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="ovmd-xenstored: %(levelname)s: %(message)s")
    domains: Dict[int, Optional[str]] = {}
    vm_uuids: Dict[int, str] = {}
    for domid, name, vm_uuid in args.domain:
        if domid in domains:
            print("ovmd-xenstored: domain %d given twice" % domid, file=sys.stderr)
            return 2
        domains[domid] = name
        if vm_uuid:
            vm_uuids[domid] = vm_uuid
    server = DevXenStoreServer(args.socket_dir, domains, vm_uuids)
    try:
        server.start()
    except (OSError, XenStoreError) as err:
        print("ovmd-xenstored: cannot start: %s" % err, file=sys.stderr)
        server.close()
        return 1
    server.install_signal_handlers()
    log.info("listening in %s (domains: %s)", args.socket_dir,
             ", ".join("%d" % d for d in sorted(domains)) or "none")
    print("ready", flush=True)
    try:
        server.serve_forever()
    finally:
        server.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
