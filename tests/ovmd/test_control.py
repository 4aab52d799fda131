"""The control socket (docs/protocol.md): framing, both ends over a real unix socket.

A :class:`ControlServer` runs in a selector loop on a thread, as in the daemon; clients are
:class:`ControlClient` or raw sockets that split their requests as they like.
"""
from __future__ import annotations

import os
import selectors
import shutil
import socket
import tempfile
import threading

import pytest

from ovmd import control
from ovmd.control import (
    ControlClient,
    ControlError,
    ControlServer,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    peer_uid,
)

NOBODY = 65534
needs_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch uid")


@pytest.fixture
def socket_dir():
    # unix socket paths are limited to 108 bytes, and another uid must be able to reach it
    directory = tempfile.mkdtemp(prefix="ovmd-ctl-", dir="/tmp")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class ServerThread:
    """A ControlServer in a selector loop on its own thread; ``requests`` records them."""

    def __init__(self, path, handler=None):
        self.requests = []
        self.handler = handler or (lambda conn, args: conn.respond(0, b"answered\n"))
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self.selector.register(self._wake_r, selectors.EVENT_READ, None)
        self.server = ControlServer(path, self._handle, self.selector)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _handle(self, conn, args):
        self.requests.append(args)
        self.handler(conn, args)

    def _run(self):
        while True:
            for key, mask in self.selector.select():
                if key.data is None:  # woken to stop
                    return
                key.data(mask)

    def stop(self):
        self._wake_w.send(b"x")
        self.thread.join(30)
        self.server.close()
        self._wake_r.close()
        self._wake_w.close()


@pytest.fixture
def serve(socket_dir):
    servers = []

    def start(handler=None):
        server = ServerThread(os.path.join(socket_dir, "run", "control.sock"), handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def raw_call(path, data, chunk=None):
    """Send ``data`` (in ``chunk``-byte writes), shut down writing, read to EOF."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)  # a failure guard only
        sock.connect(path)
        step = chunk or len(data) or 1
        try:
            for start in range(0, len(data), step):
                sock.sendall(data[start:start + step])
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server stopped reading; its answer (if any) is still to be read
        answer = b""
        while True:
            part = sock.recv(65536)
            if not part:
                return answer
            answer += part


# --- requests: what the handler receives ---------------------------------------------------

@pytest.mark.parametrize("args", [
    ("ping",),
    ("get", "com.oracle.linux.network.hostname"),
    ("set", "com.example.key", ""),                  # an empty last argument is kept
    ("set", "com.example.key", "a=b\nc d"),          # '=' and newlines are plain bytes
    ("set", "com.example.key", "caf\u00e9 \udce9"),  # UTF-8, and undecodable bytes kept
    ("set", "com.example.key", "v" * 200000),       # many reads on the server's side
    ("status", "json", "wait"),
    (),                                             # the empty request
])
def test_a_request_reaches_the_handler_unchanged(serve, args):
    server = serve()
    assert ControlClient(server.server.path, timeout=30).call(*args) == (0, b"answered\n", b"")
    assert server.requests == [list(args)]


@pytest.mark.parametrize("chunk", [1, 3, 7, None])
def test_a_request_in_any_number_of_writes_is_one_request(serve, chunk):
    server = serve()
    answer = raw_call(server.server.path, b"set\0com.example.key\0value", chunk=chunk)
    assert decode_response(answer) == (0, b"answered\n", b"")
    assert server.requests == [["set", "com.example.key", "value"]]


@pytest.mark.parametrize("size, answer", [
    (1 << 20, (0, b"answered\n", b"")),                       # the limit itself is fine
    ((1 << 20) + 1, (1, b"", b"ovmd: request too large\n")),  # one byte more is not
])
def test_the_request_size_limit(serve, size, answer):
    server = serve()
    assert decode_response(raw_call(server.server.path, b"x" * size)) == answer
    assert len(server.requests) == (1 if answer[0] == 0 else 0)


@pytest.mark.parametrize("args, length", [
    (("set", "k", "x" * (2 << 20)), 6 + (2 << 20)),       # a 2 MiB value
    (("set", "k" * ((1 << 20) - 5), "x"), (1 << 20) + 1),  # one byte over, in the key
    (("x" * ((1 << 20) + 1),), (1 << 20) + 1),
])
def test_a_request_over_the_limit_names_the_limit_and_sends_nothing(serve, args, length):
    server = serve()
    with pytest.raises(ControlError) as info:
        ControlClient(server.server.path, timeout=30).call(*args)
    assert info.value.code == control.EXIT_FAILURE
    assert str(info.value) == ("ovmd: the request is %d bytes long; the daemon takes at most "
                               "1048576 bytes per request" % length)
    assert server.requests == []


@pytest.mark.parametrize("args, timeout", [
    (("get", "k"), control.QUICK_TIMEOUT),
    (("-g", "k"), control.QUICK_TIMEOUT),
    (("list",), control.QUICK_TIMEOUT),
    (("status",), control.QUICK_TIMEOUT),
    (("status", "json"), control.QUICK_TIMEOUT),
    (("status", "wait"), control.WAIT_TIMEOUT),
    (("status", "json", "wait"), control.WAIT_TIMEOUT),
    (("script", "cleanup"), control.RUN_TIMEOUT),
    (("seal",), control.RUN_TIMEOUT),  # answered when its cleanup run ends
    (("unknown",), control.QUICK_TIMEOUT),
    ((), control.QUICK_TIMEOUT),
])
def test_every_request_has_a_timeout(args, timeout):
    assert control.request_timeout(args) == timeout
    assert timeout > 0


def test_a_daemon_that_never_answers_is_a_timeout_not_a_hang(serve):
    held = []
    server = serve(lambda conn, args: held.append(conn))  # never answered
    with pytest.raises(ControlError) as info:
        ControlClient(server.server.path, timeout=0.2).call("get", "k")
    assert info.value.code == control.EXIT_FAILURE
    assert str(info.value) == ("ovmd: the daemon did not answer within 0.2 s (it may be "
                               "busy or stuck; see its log)")
    assert server.requests == [["get", "k"]]


# --- answers: what the client returns ------------------------------------------------------

@pytest.mark.parametrize("answer", [
    (0, b"pong\n", b""),
    (1, b"", b"ovmd: no parameter 'x' in the cache\n"),
    (0, b"7 9\nlooks like a header\n", b"and stderr\n"),  # stdout is counted, not parsed
    (0, b"", b"ovmd: stored locally; queued\n"),
    (2, b"status: done (degraded)\n", b""),
    (0, b"v" * 300000, b"tail"),
])
def test_an_answer_reaches_the_client_unchanged(serve, answer):
    server = serve(lambda conn, args: conn.respond(*answer))
    assert ControlClient(server.server.path, timeout=30).call("x") == answer


def test_an_answer_can_come_later_and_the_client_waits_for_it(serve):
    held = []
    taken = threading.Event()
    events = []

    def handler(conn, args):
        if args == ["status", "wait"]:
            held.append(conn)  # answered later, as --status --wait is
            taken.set()
        else:
            events.append("released")
            held.pop().respond(0, b"done\n")
            conn.respond(0)

    server = serve(handler)
    path = server.server.path
    waiter = threading.Thread(target=lambda: events.append(
        ControlClient(path, timeout=30).call("status", "wait")))
    waiter.start()
    assert taken.wait(30)  # the server holds the request (a failure guard only)
    ControlClient(path, timeout=30).call("release")
    waiter.join(30)
    assert events == ["released", (0, b"done\n", b"")]  # it returned only after the release


# --- framing, both directions --------------------------------------------------------------

@pytest.mark.parametrize("args, wire", [
    (["list"], b"list"),
    (["get", "k"], b"get\0k"),
    (["set", "k", ""], b"set\0k\0"),
    (["set", "k", "caf\udce9"], b"set\0k\0caf\xe9"),
    ([], b""),
])
def test_request_encoding(args, wire):
    assert encode_request(args) == wire
    assert decode_request(wire) == args


@pytest.mark.parametrize("answer, wire", [
    ((0, b"", b""), b"0 0\n"),
    ((0, b"pong\n", b""), b"0 5\npong\n"),
    ((1, b"", b"no\n"), b"1 0\nno\n"),
    ((3, b"a\nb", b"c"), b"3 3\na\nbc"),
])
def test_response_encoding(answer, wire):
    assert encode_response(*answer) == wire
    assert decode_response(wire) == answer


@pytest.mark.parametrize("wire", [
    b"",                 # nothing at all
    b"0 3",              # no end of header
    b"0\nabc",           # one field
    b"0 1 2\nabc",       # three fields
    b"x 1\na",           # not a number
    b"-1 0\n",           # not a plain number
    b"0 -1\n",
    b"\n",
])
def test_malformed_answers_are_a_failure(wire):
    with pytest.raises(ControlError) as info:
        decode_response(wire)
    assert info.value.code == control.EXIT_FAILURE
    assert "malformed answer" in str(info.value)


@pytest.mark.parametrize("wire, got, wanted", [
    (b"0 10\nabc", 3, 10),  # the daemon died mid-send
    (b"0 1\n", 0, 1),
])
def test_a_truncated_answer_is_a_failure(wire, got, wanted):
    with pytest.raises(ControlError) as info:
        decode_response(wire)
    assert info.value.code == control.EXIT_FAILURE
    assert "cut short (%d of %d bytes" % (got, wanted) in str(info.value)


# --- exit codes ----------------------------------------------------------------------------

def test_the_exit_codes():
    assert (control.EXIT_OK, control.EXIT_FAILURE, control.EXIT_USAGE,
            control.EXIT_NOT_RUNNING, control.EXIT_PERMISSION) == (0, 1, 2, 3, 4)


def stale_socket(path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.close()  # the file stays, nobody listens


def garbage_server(path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        while conn.recv(65536):
            pass
        conn.sendall(b"this is not an answer")
        conn.close()
        listener.close()

    threading.Thread(target=answer, daemon=True).start()


@pytest.mark.parametrize("make, code, message", [
    (lambda path, serve: None, control.EXIT_NOT_RUNNING, "is not running"),
    (lambda path, serve: stale_socket(path), control.EXIT_NOT_RUNNING, "is not running"),
    (lambda path, serve: garbage_server(path), control.EXIT_FAILURE, "malformed answer"),
])
def test_client_errors_and_their_exit_codes(socket_dir, serve, make, code, message):
    path = os.path.join(socket_dir, "control.sock")
    make(path, serve)
    with pytest.raises(ControlError) as info:
        ControlClient(path, timeout=30).call("list")
    assert info.value.code == code and message in str(info.value)
    assert "\n" not in str(info.value)  # one line


# --- the peer credentials rule -------------------------------------------------------------

def test_peer_uid_is_the_uid_at_the_other_end():
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with left, right:
        assert peer_uid(left) == os.getuid()


def test_the_server_answers_only_uids_it_allows(serve, caplog):
    server = serve()
    assert server.server.allowed_uids == {0, os.getuid()}
    server.server.allowed_uids = {os.getuid() + 1}  # as if we were another user
    with caplog.at_level("WARNING", logger="ovmd.control"):
        with pytest.raises(ControlError) as info:
            ControlClient(server.server.path, timeout=30).call("list")
    assert info.value.code == control.EXIT_PERMISSION
    assert server.requests == []
    assert "refused a control connection from uid %d" % os.getuid() in caplog.text


def in_child_as_nobody(work):
    """Run ``work()`` in a forked child as uid/gid 65534; returns what it wrote back."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.write(write_fd, work(write_fd))
        finally:
            os._exit(0)
    os.close(write_fd)
    return pid, read_fd


@needs_root
def test_the_server_refuses_another_uid_even_through_open_file_modes(serve):
    server = serve()
    path = server.server.path
    os.chmod(os.path.dirname(path), 0o755)  # open the file-system gate on purpose
    os.chmod(path, 0o777)

    def connect(_fd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(path)
            try:
                sock.sendall(b"list")
                sock.shutdown(socket.SHUT_WR)
                return b"answer:" + sock.recv(100)
            except OSError as err:
                return b"error:%d" % err.errno

    pid, read_fd = in_child_as_nobody(connect)
    with os.fdopen(read_fd, "rb") as pipe:
        outcome = pipe.read()
    os.waitpid(pid, 0)
    assert outcome in (b"answer:", b"error:104", b"error:32")  # closed without an answer
    assert server.requests == []


@needs_root
def test_the_client_refuses_a_daemon_running_as_another_uid(socket_dir):
    os.chown(socket_dir, NOBODY, NOBODY)
    path = os.path.join(socket_dir, "control.sock")

    def fake_daemon(ready_fd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            os.chmod(path, 0o777)
            listener.listen(1)  # SO_PEERCRED reports the uid that called listen()
            os.write(ready_fd, b"listening\n")
            conn, _ = listener.accept()
            with conn:
                try:
                    while conn.recv(65536):
                        pass
                    conn.sendall(b"0 4\npong")
                except OSError:
                    pass
        return b"done\n"

    pid, read_fd = in_child_as_nobody(fake_daemon)
    with os.fdopen(read_fd, "rb") as pipe:
        assert pipe.readline() == b"listening\n"  # the event: it listens now
        with pytest.raises(ControlError) as info:
            ControlClient(path, timeout=30).call("ping")
        pipe.read()
    os.waitpid(pid, 0)
    assert info.value.code == control.EXIT_PERMISSION
    assert "owned by uid %d" % NOBODY in str(info.value)
