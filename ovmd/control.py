"""The daemon's control socket: how ``ovmd -g/-p/-l/-s/--status`` talk to the daemon.

A root-only unix stream socket (``Paths.control_socket``, 0600 in a 0700 directory).
Both ends check the peer's credentials with ``SO_PEERCRED``: the daemon accepts only
uid 0 or its own uid; the client accepts only a daemon running as root or as itself.

Wire format (deliberately trivial, so the CLI's fast path needs no json/struct/socket
module, only ``_socket``)::

    request   command NUL arg NUL arg ...        then the client shuts down writing
    response  b"<exit code> <stdout length>\\n" + stdout bytes + stderr bytes, then EOF

The daemon may answer later (``--status --wait``, ``-s TARGET``): the client simply
blocks in ``recv`` until the answer arrives; nothing polls. Every request has a timeout
(:attr:`Request.timeout`): a daemon that does not answer in time is an error, never a
hang. A request is at most :data:`MAX_REQUEST` bytes; the client refuses a longer one
before sending anything.

:data:`REQUESTS` is the one table of requests: the ``ovmd`` command line (argparse and
its fast path) and the daemon's dispatch all come from it (docs/command-lines.md).
"""
from __future__ import annotations

import _socket
import os

#: Exit codes shared by the daemon's answers and the CLI.
EXIT_OK = 0
EXIT_FAILURE = 1          # key not found, run failed, request refused
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3      # no daemon listening on the control socket
EXIT_PERMISSION = 4       # the control socket or its peer is not trusted

#: The longest request the daemon reads (bytes); a longer one is answered "too large".
MAX_REQUEST = 1 << 20
#: How long the client waits for the answer to a request that answers at once (seconds).
QUICK_TIMEOUT = 30.0
#: ``-s TARGET``: the answer comes when the run ends (at most 300 s per module by
#: default, and up to 600 s for the run lock).
RUN_TIMEOUT = 3 * 3600.0
#: ``--status --wait``: the answer comes when first boot is done or failed.
WAIT_TIMEOUT = 24 * 3600.0


class Request:
    """One request the daemon answers, and the ``ovmd`` flags that send it.

    ``args`` is how many arguments the daemon takes, ``(least, most)`` (``most`` None:
    any number). ``metavar`` names the flag's one argument; a flag without one takes
    none. ``fast``: plain command lines with this flag skip argparse (see
    :mod:`ovmd.cli`). ``pair``: the argument is ``KEY=VALUE``, sent as two arguments.
    ``repeat``: the flag may be given more than once, one request each. ``options``:
    ``(flag, help)`` of the flags that go with this one (``--status --json``), each
    sent as an argument, its name without the dashes (:meth:`option_names`).
    ``timeout``: how long the client waits for the answer (seconds).
    """

    __slots__ = ("name", "flags", "args", "metavar", "help", "fast", "pair", "repeat",
                 "options", "timeout")

    def __init__(self, name: str, flags: tuple[str, ...] = (),
                 args: tuple[int, int | None] = (0, 0), metavar: str | None = None,
                 help: str = "", fast: bool = False, pair: bool = False,
                 repeat: bool = False, options: tuple[tuple[str, str], ...] = (),
                 timeout: float = QUICK_TIMEOUT) -> None:
        self.name = name
        self.flags = flags
        self.args = args
        self.metavar = metavar
        self.help = help
        self.fast = fast
        self.pair = pair
        self.repeat = repeat
        self.options = options
        self.timeout = timeout

    def option_names(self) -> list[str]:
        """The arguments the options are sent as (``--json`` -> ``json``), in order."""
        return [flag.lstrip("-") for flag, _ in self.options]

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag (``--get-param`` -> ``get_param``)."""
        return self.flags[-1].lstrip("-").replace("-", "_")

    def arity_ok(self, count: int) -> bool:
        least, most = self.args
        return count >= least and (most is None or count <= most)

    def __repr__(self) -> str:
        return "Request(%r)" % self.name


#: Every request, in ``ovmd --help`` order.
REQUESTS = (
    Request("set", ("-p", "--set-param"), (1, 2), "KEY=VALUE", fast=True, pair=True,
            repeat=True,
            help="store KEY=VALUE in the cache and send it to the host; with KEY alone the "
                 "value is read from stdin (keeps a secret off the command line)"),
    Request("get", ("-g", "--get-param"), (1, 1), "KEY", fast=True,
            help="print a cached value"),
    Request("delete", ("-r", "--delete-param"), (1, 1), "KEY", fast=True,
            help="delete a cached key"),
    Request("clear", ("-x", "--delete-params"), fast=True,
            help="delete every cached key (secrets included)"),
    Request("list", ("-l", "--list-params"), fast=True,
            help="print the cache as JSON lines, sorted by key"),
    Request("event", ("-e", "--event"), (1, 1), "EVENT", fast=True,
            help="send an event to the host (snapshot, migrate, shutdown, reconfig, "
                 "ip-address, user, new-param, system, or a number)"),
    Request("script", ("-s", "--script"), (1, 1), "TARGET", timeout=RUN_TIMEOUT,
            help="run an ovm-template-config target with the cached params (e.g. cleanup) "
                 "and report each module's result"),
    Request("status", ("--status",), (0, None), fast=True, timeout=WAIT_TIMEOUT,
            help="first-boot status: not-started, waiting-for-params, running, done, failed; "
                 "each module of the last run with its state, reason and warnings",
            options=(("--json", "--status: print JSON (the run report whole, stderr "
                      "excerpts included)"),
                     ("--long", "--status: add each module's stderr excerpt"),
                     ("--wait", "--status: block until the first-boot run is done or "
                      "failed"))),
    # ``ovmd --seal``, which seals a root without a daemon itself; answered when the
    # cleanup run has ended
    Request("seal", timeout=RUN_TIMEOUT),
    Request("ping"),
)

#: Request name or flag (Oracle's flags are accepted as names too: ``call("-l")``) ->
#: :class:`Request`.
REQUEST_NAMES = {name: request for request in REQUESTS
                 for name in (request.name,) + request.flags}


def request_timeout(args: "tuple[str, ...] | list[str]") -> float:
    """How long the client waits for the answer to the request ``args``."""
    request = REQUEST_NAMES.get(args[0]) if args else None
    if request is None:
        return QUICK_TIMEOUT
    if request.name == "status" and "wait" not in args[1:]:
        return QUICK_TIMEOUT
    return request.timeout


class ControlError(Exception):
    """The daemon could not be reached; ``code`` is the CLI exit code to use."""

    def __init__(self, message: str, code: int = EXIT_NOT_RUNNING) -> None:
        super().__init__(message)
        self.code = code


def peer_uid(sock) -> int:
    """The uid of the process at the other end of a connected unix socket."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(raw[4:8], "little" if _little_endian() else "big")


def _little_endian() -> bool:
    import sys

    return sys.byteorder == "little"


def encode_request(args: list[str]) -> bytes:
    return "\0".join(args).encode("utf-8", "surrogateescape")


def decode_request(data: bytes) -> list[str]:
    return data.decode("utf-8", "surrogateescape").split("\0") if data else []


def encode_response(code: int, out: bytes = b"", err: bytes = b"") -> bytes:
    return b"%d %d\n" % (code, len(out)) + out + err


def decode_response(data: bytes) -> tuple[int, bytes, bytes]:
    head, sep, rest = data.partition(b"\n")
    fields = head.split()
    if not sep or len(fields) != 2 or not all(f.isdigit() and f.isascii() and len(f) <= 12
                                              for f in fields):
        raise ControlError("ovmd: malformed answer from the daemon", EXIT_FAILURE)
    length = int(fields[1])
    if len(rest) < length:
        raise ControlError("ovmd: the daemon's answer was cut short (%d of %d bytes of "
                           "output); see the daemon's log" % (len(rest), length), EXIT_FAILURE)
    return int(fields[0]), rest[:length], rest[length:]


class ControlClient:
    """Send one request to the running daemon and return its answer.

    ``timeout``: seconds to wait for the answer; None takes the request's own
    (:func:`request_timeout`).
    """

    def __init__(self, path: str, timeout: float | None = None) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, *args: str) -> tuple[int, bytes, bytes]:
        data = encode_request(list(args))
        if len(data) > MAX_REQUEST:
            raise ControlError("ovmd: the request is %d bytes long; the daemon takes at most "
                               "%d bytes per request" % (len(data), MAX_REQUEST), EXIT_FAILURE)
        timeout = self.timeout if self.timeout is not None else request_timeout(args)
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        chunks: list[bytes] = []
        try:
            sock.settimeout(timeout)
            try:
                sock.connect(self.path)
            except (FileNotFoundError, ConnectionRefusedError):
                raise ControlError("ovmd: the ovmd daemon is not running (no listener on %s); "
                                   "start it with `systemctl start ovmd` or `ovmd`"
                                   % self.path) from None
            except PermissionError:
                raise ControlError("ovmd: permission denied on %s: run as root" % self.path,
                                   EXIT_PERMISSION) from None
            uid = peer_uid(sock)
            if uid not in (0, os.getuid()):
                raise ControlError("ovmd: refusing to talk to %s: it is owned by uid %d, "
                                   "not root" % (self.path, uid), EXIT_PERMISSION)
            try:
                sock.sendall(data)
                sock.shutdown(_socket.SHUT_WR)
            except (ConnectionResetError, BrokenPipeError):
                pass  # the daemon stopped reading: its answer (if any) says why
            _receive(sock, chunks)
        except _socket.timeout:
            raise ControlError("ovmd: the daemon did not answer within %g s (it may be busy "
                               "or stuck; see its log)" % timeout, EXIT_FAILURE) from None
        except ConnectionResetError:
            if not chunks:
                raise ControlError("ovmd: the daemon closed the connection without answering "
                                   "(only root and the daemon's own user may use %s)"
                                   % self.path, EXIT_PERMISSION) from None
        except OSError as err:
            raise ControlError("ovmd: lost the connection to the daemon: %s" % err.strerror,
                               EXIT_FAILURE) from None
        finally:
            sock.close()
        if not chunks:
            raise ControlError("ovmd: the daemon closed the connection without answering "
                               "(only root and the daemon's own user may use %s)" % self.path,
                               EXIT_PERMISSION)
        return decode_response(b"".join(chunks))

    def list_params(self) -> "list[tuple[str, str]]":
        """The daemon's cache as (key, value) pairs, sorted by key."""
        import json

        code, out, err = self.call("list")
        if code != EXIT_OK:
            raise ControlError(err.decode("utf-8", "replace").strip() or "ovmd: list failed",
                               code)
        pairs = []
        for line in out.decode("utf-8", "surrogateescape").splitlines():
            if line.strip():
                pairs.extend(json.loads(line).items())
        return pairs


def _receive(sock, chunks: list[bytes]) -> None:
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        chunks.append(chunk)


# --- server side (imported by the daemon only) --------------------------------------


class ControlConnection:
    """One accepted client; the handler answers it now or later with :meth:`respond`."""

    def __init__(self, sock, uid: int) -> None:
        self.sock = sock
        self.uid = uid
        self.buffer = bytearray()
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def respond(self, code: int, out: bytes = b"", err: bytes = b"") -> None:
        if self.closed:
            return
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(10)
            self.sock.sendall(encode_response(code, out, err))
        except OSError:
            pass  # the client went away; nothing to do
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()


class ControlServer:
    """The listening socket; plugs into the daemon's selector loop."""

    def __init__(self, path: str, handler, selector, root: str | None = None) -> None:
        import socket

        from .fsutil import ensure_private_dir

        self.path = path
        self.handler = handler
        self.selector = selector
        self.allowed_uids = {0, os.getuid()}
        self.connections: dict[int, ControlConnection] = {}
        ensure_private_dir(os.path.dirname(path), root)
        try:
            os.unlink(path)  # we hold the pid-file lock: a leftover socket is stale
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        self.sock = sock
        selector.register(sock, 1, self._accept)  # 1 == selectors.EVENT_READ

    def _accept(self, _mask: int) -> None:
        import logging

        log = logging.getLogger(__name__)
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                log.warning("control socket accept failed: %s", err)
                return
            uid = peer_uid(conn)
            if uid not in self.allowed_uids:
                log.warning("refused a control connection from uid %d (only root and uid %d "
                            "may use %s)", uid, os.getuid(), self.path)
                conn.close()
                continue
            conn.setblocking(False)
            connection = ControlConnection(conn, uid)
            self.connections[conn.fileno()] = connection
            self.selector.register(conn, 1, lambda mask, c=connection: self._read(c))

    def _read(self, connection: ControlConnection) -> None:
        try:
            data = connection.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
            connection.buffer.clear()
            self._forget(connection)
            connection.close()
            return
        if data:
            connection.buffer += data
            if len(connection.buffer) > MAX_REQUEST:
                self._forget(connection)
                connection.respond(EXIT_FAILURE, err=b"ovmd: request too large\n")
            return
        self._forget(connection)  # EOF: the request is complete
        self.handler(connection, decode_request(bytes(connection.buffer)))

    def _forget(self, connection: ControlConnection) -> None:
        fd = connection.fileno()
        if self.connections.pop(fd, None) is not None:
            try:
                self.selector.unregister(connection.sock)
            except (KeyError, ValueError):
                pass

    def close(self) -> None:
        for connection in list(self.connections.values()):
            self._forget(connection)
            connection.close()
        try:
            self.selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
