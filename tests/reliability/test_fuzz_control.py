"""Fuzz: the control protocol (docs/protocol.md §3), both framings and the daemon's answers.

1. Requests survive the framing unchanged, whatever their text (undecodable bytes too).
2. Any bytes as an answer: the client returns a triple or raises ``ControlError`` (exit 1).
3. Any request to the daemon's request handlers (the real :class:`~ovmd.daemon.Daemon`
   parts, not started): exactly one answer (none yet for ``--status --wait``), exit 0 or 1,
   the daemon goes on, ``-l`` still answers JSON lines and the disk holds what is served.
4. Any bytes sent to a running ``ovmd``'s control socket: a well-formed answer, and the
   daemon is still there.
"""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from reliability_helpers import crashes

from ovmd.cache import ParamCache
from ovmd.control import ControlError, decode_request, decode_response, encode_request
from ovmd.daemon import Daemon
from ovmd.paths import Paths

FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
SURROGATES = st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF)
arg_text = st.text(alphabet=st.one_of(st.characters(blacklist_characters="\0",
                                                    blacklist_categories=("Cs",)),
                                      SURROGATES), max_size=40)


@FUZZ
@given(args=st.lists(arg_text, max_size=5))
def test_requests_survive_the_framing(figures, args):
    figures.add("fuzz", "control: request framing (hypothesis)", tried=1)
    if args == [""]:
        args = []  # one empty argument and none are the same bytes
    assert decode_request(encode_request(args)) == args


@FUZZ
@given(data=st.one_of(st.binary(max_size=60),
                      st.tuples(st.integers(0, 300), st.binary(max_size=40)).map(
                          lambda t: b"%d %d\n" % (t[0] % 5, t[0]) + t[1])))
def test_any_answer_bytes_are_an_answer_or_a_clear_failure(figures, data):
    figures.add("fuzz", "control: answer framing (hypothesis)", tried=1)
    try:
        code, out, err = decode_response(data)
    except ControlError as error:
        assert error.code == 1 and "\n" not in str(error)
    else:
        assert data.endswith(out + err) and code >= 0


names = st.sampled_from(["get", "-g", "set", "-p", "--set-param", "delete", "-r", "clear",
                         "-x", "list", "-l", "event", "-e", "status", "ping", "nope", "",
                         "\udcff"])
special = st.sampled_from(["VMAPIEvent", "com.x.k", "com.x.k=v", "com.x.k=", "=v", "\u00b2",
                           "0777", "0xZZ", "0x10", "9" * 5000, "k" * 257, "v" * 8193,
                           "com.x.\udcff", "com.oracle.linux.root-password", "a\nb", "json",
                           "wait", "snapshot", "-1"])
requests = st.tuples(names, st.lists(st.one_of(special, arg_text), max_size=3)).map(
    lambda t: [t[0]] + t[1])


class Answer:
    """Stands in for one client connection: the handlers only call ``respond``."""

    def __init__(self):
        self.answers = []

    def respond(self, code, out=b"", err=b""):
        self.answers.append((code, out, err))


@pytest.fixture(scope="module")
def handlers():
    base = Path(tempfile.mkdtemp(prefix="ovfr-", dir="/tmp"))
    daemon = Daemon(Paths(str(base)))
    daemon.cache.load()
    try:
        yield daemon
    finally:
        daemon.cache.close()
        shutil.rmtree(str(base), ignore_errors=True)


@FUZZ
@given(batch=st.lists(requests, min_size=1, max_size=6))
@example(batch=[["set", "com.x.\udcff", "v"], ["-p", "com.x.k=\udcfe"]])  # not UTF-8
@example(batch=[["event", "\u00b2"], ["-e", "9" * 5000], ["-e", "0xZZ"], ["-e", "0777"]])
@example(batch=[["set", "k" * 257, "v"], ["set", "com.x.big", "v" * 8193], ["set", "=v"]])
@example(batch=[["set", "VMAPIEvent", "8"], ["delete", "\udcff"], ["get", "\x1b[2J"]])
def test_any_request_gets_one_answer_and_the_daemon_goes_on(handlers, figures, batch):
    for args in batch:
        conn = Answer()
        handlers.requests.handle(conn, args)
        figures.add("fuzz", "control: any request to the handlers (hypothesis)", tried=1)
        waits = args[:1] == ["status"] and "wait" in args[1:] and \
            handlers.requests.status_waiters
        assert len(conn.answers) == (0 if waits else 1), args
        handlers.requests.status_waiters = []
        for code, out, err in conn.answers:
            assert code in (0, 1, 2)  # 2: bad usage (an unknown event)
            if code:
                assert err.endswith(b"\n") and err.count(b"\n") == 1  # one line
                assert b"internal error" not in err
    conn = Answer()
    handlers.requests.handle(conn, ["list"])
    [(code, out, _)] = conn.answers
    assert code == 0
    listed = {}
    for line in out.decode("utf-8").splitlines():
        listed.update(json.loads(line))
    assert listed == handlers.cache.as_dict()
    assert ParamCache(handlers.paths).load().as_dict() == listed  # what is served is stored


@pytest.fixture
def running(daemons):
    return daemons()


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=200), requests.map(encode_request)))
def test_any_bytes_to_the_control_socket(running, figures, data):
    fields = decode_request(data)
    waits = fields[:1] == ["status"] and "wait" in fields[1:]  # answered when first boot ends
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)  # a failure guard only
        sock.connect(running.paths.control_socket)
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while not waits:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    alive = running.process.poll() is None
    figures.add("fuzz", "control: any bytes to a running ovmd's socket (hypothesis)", tried=1,
                crashes=0 if alive and not crashes(running) else 1)
    if waits:
        assert alive
        return
    code, _, _ = decode_response(answer)
    assert code in (0, 1) and alive
