"""Control requests: the number of arguments is checked from the table before a handler
runs, and a bug in a handler is an internal error, not a usage error.

The dispatch tests build the daemon's parts without starting it (no socket, no XenStore)
and answer over a real socket pair, read with the client's own decoder.
"""
from __future__ import annotations

import inspect
import logging
import socket

import pytest

from ovmd.control import REQUEST_NAMES, REQUESTS, ControlClient, ControlConnection, decode_response
from ovmd.daemon import Daemon
from ovmd.daemon.requests import ControlRequests
from ovmd.paths import Paths


@pytest.fixture
def requests(tmp_path):
    """The daemon's request handlers, dispatching for a daemon that is not started."""
    return Daemon(Paths(str(tmp_path))).requests


def ask(requests, *args: str):
    """(code, stdout, stderr) of one request, answered over a socket pair."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        requests.handle(ControlConnection(ours, 0), list(args))
        data = b""
        while True:
            chunk = theirs.recv(65536)
            if not chunk:
                break
            data += chunk
    return decode_response(data)


class TestDispatch:
    def test_a_known_request_is_answered(self, requests):
        assert ask(requests, "ping") == (0, b"pong\n", b"")
        assert ask(requests, "-l") == (0, b"", b"")  # Oracle's flags work as names

    @pytest.mark.parametrize("args", [["get"], ["get", "a", "b"], ["ping", "x"],
                                      ["set", "k", "v", "w"], ["-g"], ["list", "x"]])
    def test_the_wrong_number_of_arguments_is_refused_before_the_handler(self, requests,
                                                                         args):
        def must_not_run(*_args):
            raise AssertionError("handler called")

        requests.handlers[REQUEST_NAMES[args[0]].name] = must_not_run
        assert ask(requests, *args) == (1, b"", b"ovmd: wrong number of arguments\n")

    def test_unknown_and_empty_requests(self, requests):
        assert ask(requests, "bogus") == (1, b"", b"ovmd: unknown request 'bogus'\n")
        assert ask(requests) == (1, b"", b"ovmd: empty request\n")

    def test_a_type_error_inside_a_handler_is_an_internal_error(self, requests, caplog):
        """A faulty handler is injected here (no real handler has this bug): the TypeError
        it raises must be reported as a bug, with its traceback in the log, not as
        "wrong number of arguments"; and the next request is served."""
        def buggy_get(conn, key):
            return len(key) + None  # TypeError: a bug, the arity was right

        requests.handlers["get"] = buggy_get
        with caplog.at_level(logging.ERROR):
            code, out, err = ask(requests, "get", "com.example.k")
        assert code == 1 and out == b""
        assert err.startswith(b"ovmd: internal error in request get: TypeError")
        assert b"wrong number" not in err
        assert err.count(b"\n") == 1 and err.endswith(b"\n")
        record = next(r for r in caplog.records if "internal error" in r.getMessage())
        assert record.exc_info is not None and record.exc_info[0] is TypeError
        assert ask(requests, "ping") == (0, b"pong\n", b"")

    def test_an_os_error_in_a_handler_says_what_failed(self, requests):
        def full_disk(conn):
            raise OSError(28, "No space left on device")

        requests.handlers["clear"] = full_disk
        assert ask(requests, "clear") == (
            1, b"", b"ovmd: clear failed: [Errno 28] No space left on device\n")


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.name)
def test_each_handler_takes_the_table_s_number_of_arguments(request_):
    handler = getattr(ControlRequests, "_" + request_.name)
    signature = inspect.signature(handler)
    least, most = request_.args

    def binds(count: int) -> bool:
        try:
            signature.bind(None, None, *["x"] * count)  # self, the connection, arguments
        except TypeError:
            return False
        return True

    assert binds(least) and (least == 0 or not binds(least - 1))
    if most is None:
        assert binds(least + 5)
    else:
        assert binds(most) and not binds(most + 1)
    for count in range(0, (most if most is not None else least + 5) + 2):
        assert request_.arity_ok(count) == binds(count)


def test_the_running_daemon_checks_the_number_of_arguments(ovmd):
    client = ControlClient(ovmd.paths.control_socket)
    assert client.call("get", "a", "b") == (1, b"", b"ovmd: wrong number of arguments\n")
    assert client.call("ping") == (0, b"pong\n", b"")
