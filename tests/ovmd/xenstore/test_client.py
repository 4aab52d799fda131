"""XenStoreClient against a scripted peer speaking the wire protocol over a socketpair.

Each test states what the peer answers and checks both what the client returns and the
exact requests that reached the wire (or that nothing did, for requests refused early).
"""
from __future__ import annotations

import selectors
import threading
import time

import pytest
from fake_peer_helpers import error, event, ok, peer_factory, reply, unix_client

from ovmd.xenstore import (
    ConnectionClosedError,
    InvalidPathError,
    WatchEvent,
    XenStoreClient,
    XenStoreError,
)
from ovmd.xenstore.protocol import HEADER, MAX_PAYLOAD, Op, encode, join_strings


@pytest.fixture
def connect():
    """``connect(handlers, **options)`` -> (client, peer); both are shut down afterwards."""
    yield from peer_factory(unix_client)


def answer(payload):
    return lambda request: [reply(request, payload)]


def fail_with(name):
    return lambda request: [error(request, name)]


# -- node operations: what goes on the wire, what comes back ------------------------------

def test_read_sends_path_and_returns_text(connect):
    client, peer = connect({Op.READ: answer(b"hello")})
    assert client.read("/local/domain/1/name") == "hello"
    (request,) = peer.received
    assert (request.type, request.tx_id, request.payload) == (Op.READ, 0, b"/local/domain/1/name\0")


def test_read_keeps_undecodable_bytes_and_read_bytes_returns_them_raw(connect):
    client, _ = connect({Op.READ: answer(b"caf\xe9")})
    text = client.read("data/x")
    assert text == "caf\udce9"
    assert text.encode("utf-8", "surrogateescape") == b"caf\xe9"
    assert client.read_bytes("data/x") == b"caf\xe9"


def test_read_of_an_empty_value_returns_empty_string(connect):
    client, _ = connect({Op.READ: answer(b"")})
    assert client.read("data/empty") == ""


@pytest.mark.parametrize("value, wire", [
    ("v\u00e9", b"data/x\0v\xc3\xa9"),
    (b"\x00\xff", b"data/x\0\x00\xff"),
    ("", b"data/x\0"),
    (b"", b"data/x\0"),
])
def test_write_sends_path_nul_value_without_trailing_nul(connect, value, wire):
    client, peer = connect({Op.WRITE: ok})
    client.write("data/x", value)
    assert [(p.type, p.payload) for p in peer.received] == [(Op.WRITE, wire)]


@pytest.mark.parametrize("method, op", [("mkdir", Op.MKDIR), ("rm", Op.RM)])
def test_mkdir_and_rm_send_the_path(connect, method, op):
    client, peer = connect({op: ok})
    assert getattr(client, method)("/a/b") is None
    assert [(p.type, p.payload) for p in peer.received] == [(op, b"/a/b\0")]


def test_exists_is_true_when_readable_false_on_enoent(connect):
    client, _ = connect({Op.READ: lambda r: [
        reply(r, b"") if r.payload == b"there\0" else error(r, "ENOENT")]})
    assert client.exists("there") is True
    assert client.exists("missing") is False


def test_exists_raises_other_errors(connect):
    client, _ = connect({Op.READ: fail_with("EACCES")})
    with pytest.raises(XenStoreError) as info:
        client.exists("/local/domain/2/secret")
    assert info.value.name == "EACCES"


def test_directory_lists_children_and_a_leaf_has_none(connect):
    client, _ = connect({Op.DIRECTORY: lambda r: [
        reply(r, b"a\0b-c\0d\0" if r.payload == b"/dir\0" else b"")]})
    assert client.directory("/dir") == ["a", "b-c", "d"]
    assert client.directory("/dir/a") == []


def directory_part_server(names, generations):
    """DIRECTORY answers E2BIG; DIRECTORY_PART serves ``names`` two at a time.

    As xenstored does, a part holds whole names; the last one ends with an extra NUL.
    ``generations`` gives the generation to report for each successive part request.
    """
    blob = b"".join(n.encode() + b"\0" for n in names)
    gens = iter(generations)

    def part(request):
        path, offset = request.payload.rstrip(b"\0").split(b"\0")
        offset = int(offset)
        end = offset
        for _ in range(2):
            end = blob.index(b"\0", end) + 1 if end < len(blob) else end
        chunk = blob[offset:end] + (b"\0" if end == len(blob) else b"")
        return [reply(request, next(gens) + b"\0" + chunk)]

    return {Op.DIRECTORY: fail_with("E2BIG"), Op.DIRECTORY_PART: part}


def test_directory_too_large_for_one_reply_is_fetched_in_parts(connect):
    names = ["child-%03d" % i for i in range(7)]
    client, peer = connect(directory_part_server(names, [b"5"] * 100))
    assert client.directory("/big") == names
    offsets = [p.payload.split(b"\0")[1] for p in peer.requests(Op.DIRECTORY_PART)]
    assert offsets == [b"0", b"20", b"40", b"60"]  # 7 names of 10 bytes, two per part


def test_directory_parts_restart_when_the_directory_changes(connect):
    names = ["n%d" % i for i in range(6)]
    # the second part reports another generation: the listing must start again from 0
    client, peer = connect(directory_part_server(names, [b"1", b"2"] + [b"2"] * 100))
    assert client.directory("/big") == names
    offsets = [p.payload.split(b"\0")[1] for p in peer.requests(Op.DIRECTORY_PART)]
    assert offsets == [b"0", b"6", b"0", b"6", b"12"]


def test_directory_too_large_without_directory_part_raises_e2big(connect):
    client, _ = connect({Op.DIRECTORY: fail_with("E2BIG")})  # DIRECTORY_PART -> ENOSYS
    with pytest.raises(XenStoreError) as info:
        client.directory("/big")
    assert info.value.name == "E2BIG"


def test_get_and_set_perms(connect):
    client, peer = connect({Op.GET_PERMS: answer(b"n0\0r1\0"), Op.SET_PERMS: ok})
    assert client.get_perms("/local/domain/1/data") == ["n0", "r1"]
    client.set_perms("/local/domain/1/data", ["n1", "b0"])
    assert peer.requests(Op.SET_PERMS)[0].payload == b"/local/domain/1/data\0n1\0b0\0"


@pytest.mark.parametrize("perms", [[], ["x1"], ["n"], ["r1", "w-2"], ["n0 "]])
def test_malformed_permissions_are_refused_before_sending(connect, perms):
    client, peer = connect({Op.SET_PERMS: ok})
    with pytest.raises(XenStoreError) as info:
        client.set_perms("/a", perms)
    assert info.value.name == "EINVAL"
    client.close()
    peer.join()
    assert peer.received == []


def test_get_domain_path(connect):
    client, peer = connect({Op.GET_DOMAIN_PATH: answer(b"/local/domain/7\0")})
    assert client.get_domain_path(7) == "/local/domain/7"
    assert peer.received[0].payload == b"7\0"


# -- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["ENOENT", "EACCES", "EINVAL", "EAGAIN", "E2BIG", "EPERM"])
def test_error_reply_raises_with_its_name(connect, name):
    client, _ = connect({Op.READ: fail_with(name)})
    with pytest.raises(XenStoreError) as info:
        client.read("/x")
    assert info.value.name == name


def test_unknown_error_name_becomes_einval(connect):
    client, _ = connect({Op.READ: fail_with("EWHATEVER")})
    with pytest.raises(XenStoreError) as info:
        client.read("/x")
    assert info.value.name == "EINVAL"


def test_client_keeps_working_after_an_error_reply(connect):
    client, _ = connect({Op.READ: lambda r: [
        error(r, "ENOENT") if r.payload == b"/gone\0" else reply(r, b"v")]})
    with pytest.raises(XenStoreError):
        client.read("/gone")
    assert client.read("/here") == "v"


def test_oversized_payload_is_refused_before_sending(connect):
    client, peer = connect({Op.WRITE: ok})
    with pytest.raises(XenStoreError) as info:
        client.write("/data/big", b"x" * MAX_PAYLOAD)  # path + NUL + value > 4096
    assert info.value.name == "E2BIG"
    client.write("/data/fits", b"x" * (MAX_PAYLOAD - len("/data/fits\0")))
    assert [p.payload[:10] for p in peer.received] == [b"/data/fits"]


@pytest.mark.parametrize("path", ["", "a//b", "/a/", "a b", "a/b\0c", "caf\u00e9",
                                  "@releaseDomain", "x" * 2049])
def test_invalid_paths_are_refused_before_sending(connect, path):
    client, peer = connect({Op.READ: answer(b"v"), Op.WRITE: ok})
    with pytest.raises(InvalidPathError):
        client.read(path)
    with pytest.raises(InvalidPathError):
        client.write(path, "v")
    assert client.read("/ok") == "v"  # the connection is still in step
    assert [p.payload for p in peer.received] == [b"/ok\0"]


# -- framing on a live connection ---------------------------------------------------------

def test_events_sent_before_the_reply_are_queued_not_mistaken_for_it(connect):
    client, _ = connect({Op.WRITE: lambda r: [
        event("/a/b", "tok1"), event("/a", "tok2"), reply(r)]})
    client.write("/a/b", "1")
    assert client.pending_events() == [WatchEvent("/a/b", "tok1"), WatchEvent("/a", "tok2")]
    assert client.pending_events() == []


def test_reply_split_into_one_byte_writes(connect):
    client, peer = connect({Op.READ: lambda r: [event("/w", "t"), reply(r, b"split value")]},
                           seqpacket=True, chunk=1)
    reads = []
    recv = client.transport.recv
    client.transport.recv = lambda: reads.append(1) or recv()
    assert client.read("/x") == "split value"
    assert client.pending_events() == [WatchEvent("/w", "t")]
    wire_bytes = len(event("/w", "t")) + len(reply(peer.received[0], b"split value"))
    assert len(reads) == wire_bytes  # every byte really arrived in its own read


def test_header_and_body_in_separate_writes(connect):
    def two_writes(request):
        frame = reply(request, b"value")
        return [frame[:HEADER.size], frame[HEADER.size:]]

    client, _ = connect({Op.READ: two_writes}, seqpacket=True)
    assert client.read("/x") == "value"


def test_reply_with_another_req_id_is_dropped(connect):
    client, _ = connect({Op.READ: lambda r: [reply(r, b"stale", req_id=r.req_id + 100),
                                             reply(r, b"fresh")]})
    assert client.read("/x") == "fresh"


def test_requests_use_increasing_nonzero_req_ids(connect):
    client, peer = connect({Op.READ: answer(b"")})
    for _ in range(3):
        client.read("/x")
    ids = [p.req_id for p in peer.received]
    assert 0 not in ids and ids == sorted(set(ids))


def test_reply_of_the_wrong_type_breaks_the_connection(connect):
    client, _ = connect({Op.READ: lambda r: [encode(Op.WRITE, r.req_id, 0, b"OK\0")]})
    with pytest.raises(ConnectionClosedError):
        client.read("/x")
    assert client.closed


def test_garbage_header_breaks_the_connection(connect):
    client, _ = connect({Op.READ: lambda r: [HEADER.pack(Op.READ, r.req_id, 0, MAX_PAYLOAD + 1)]})
    with pytest.raises(ConnectionClosedError) as info:
        client.read("/x")
    assert "protocol error" in str(info.value)
    with pytest.raises(ConnectionClosedError):
        client.read("/x")


def test_peer_closing_raises_connection_closed_for_this_and_later_calls(connect):
    client, peer = connect({Op.READ: answer(b"v")})
    assert client.read("/x") == "v"
    peer.sock.shutdown(2)
    with pytest.raises(ConnectionClosedError):
        client.read("/x")
    with pytest.raises(ConnectionClosedError):
        client.write("/x", "v")
    with pytest.raises(ConnectionClosedError):
        client.fileno()


def test_request_timeout_closes_the_connection(connect):
    client, _ = connect({Op.READ: lambda r: []}, request_timeout=0.05)
    with pytest.raises(ConnectionClosedError) as info:
        client.read("/x")
    assert "no reply" in str(info.value)
    assert client.closed


def test_closed_client_refuses_requests(connect):
    client, _ = connect({})
    client.close()
    with pytest.raises(ConnectionClosedError):
        client.read("/x")


def test_context_manager_closes():
    client, peer = unix_client({})
    with client as entered:
        assert entered is client
    assert client.closed
    peer.join()


# -- watches and events -------------------------------------------------------------------

def test_watch_and_unwatch_send_path_and_token(connect):
    client, peer = connect({Op.WATCH: ok, Op.UNWATCH: ok})
    client.watch("control/oracle-vmapi/to-guest/last-write", "msg")
    client.watch("@releaseDomain", "rel")
    client.unwatch("@releaseDomain", "rel")
    assert [(p.type, p.payload) for p in peer.received] == [
        (Op.WATCH, b"control/oracle-vmapi/to-guest/last-write\0msg\0"),
        (Op.WATCH, b"@releaseDomain\0rel\0"),
        (Op.UNWATCH, b"@releaseDomain\0rel\0"),
    ]


@pytest.mark.parametrize("token", ["bad\0token", "\udce9", b"bytes"])
def test_bad_watch_tokens_are_refused_before_sending(connect, token):
    client, peer = connect({Op.WATCH: ok})
    with pytest.raises(XenStoreError) as info:
        client.watch("/a", token)
    assert info.value.name == "EINVAL"
    client.close()
    peer.join()
    assert peer.received == []


def test_watch_fires_immediately_event_is_delivered(connect):
    client, _ = connect({Op.WATCH: lambda r: [reply(r), event("/a", "t")]})
    client.watch("/a", "t")
    assert client.wait_event(timeout=5) == WatchEvent("/a", "t")


def test_receive_events_does_not_block_when_nothing_arrived(connect):
    client, peer = connect({})
    results = []
    worker = threading.Thread(target=lambda: results.append(client.receive_events()),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)  # a failure guard: a blocking read would never return alone
    if worker.is_alive():
        peer.send(event("/unblock", "t"))  # end the stuck read before failing
    assert results == [[]]


def test_event_loop_selects_the_fd_then_receives_events(connect):
    client, peer = connect({})
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ)
        assert selector.select(timeout=0) == []
        peer.send(event("/a", "1") + event("/b", "2"))
        assert len(selector.select(timeout=5)) == 1
        assert client.receive_events() == [WatchEvent("/a", "1"), WatchEvent("/b", "2")]
        assert selector.select(timeout=0) == []


def test_events_queued_during_a_request_are_not_reported_by_the_selector(connect):
    # Why the daemon must drain pending_events() before select(): these bytes are read.
    client, _ = connect({Op.WRITE: lambda r: [event("/a", "t"), reply(r)]})
    client.write("/a", "1")
    with selectors.DefaultSelector() as selector:
        selector.register(client, selectors.EVENT_READ)
        assert selector.select(timeout=0) == []
    assert client.receive_events() == [WatchEvent("/a", "t")]


def test_receive_events_returns_queued_events_first(connect):
    client, peer = connect({Op.WRITE: lambda r: [event("/first", "t"), reply(r)]})
    client.write("/first", "1")
    peer.send(event("/second", "t"))
    assert client.wait_event(timeout=5) == WatchEvent("/first", "t")
    assert client.wait_event(timeout=5) == WatchEvent("/second", "t")


def test_wait_event_returns_none_after_the_timeout(connect):
    client, _ = connect({})
    deadline = time.monotonic() + 0.2  # taken before the call sets its own, later one
    assert client.wait_event(timeout=0.2) is None
    # ordering, not a duration: the call returned only once its deadline had passed
    assert time.monotonic() >= deadline


def test_wait_event_keeps_the_rest_queued(connect):
    client, peer = connect({})
    peer.send(event("/a", "1") + event("/b", "2"))
    assert client.wait_event(timeout=5) == WatchEvent("/a", "1")
    assert client.pending_events() == [WatchEvent("/b", "2")]


def test_wait_event_assembles_an_event_split_across_reads(connect):
    client, peer = connect({}, seqpacket=True, chunk=3)
    peer.send(event("/split/path", "token"))
    assert client.wait_event(timeout=5) == WatchEvent("/split/path", "token")


def test_malformed_event_is_ignored(connect):
    client, peer = connect({})
    peer.send(encode(Op.WATCH_EVENT, 0, 0, b"only-a-path") + event("/ok", "t"))
    assert client.wait_event(timeout=5) == WatchEvent("/ok", "t")


def test_event_with_empty_token(connect):
    client, peer = connect({})
    peer.send(event("/a", ""))
    assert client.wait_event(timeout=5) == WatchEvent("/a", "")


def test_eof_while_waiting_for_events_raises(connect):
    client, peer = connect({})
    peer.sock.shutdown(2)
    with pytest.raises(ConnectionClosedError):
        client.wait_event(timeout=5)


# -- transactions -------------------------------------------------------------------------

class TransactionServer:
    """Hands out transaction ids; answers END with the next outcome in ``commits``."""

    def __init__(self, commits=()):
        self.commits = list(commits)
        self.next_id = 41
        self.ended = []  # (tx_id, b"T"/b"F")

    def start(self, request):
        assert request.tx_id == 0 and request.payload == b"\0"
        self.next_id += 1
        return [reply(request, b"%d\0" % self.next_id)]

    def end(self, request):
        self.ended.append((request.tx_id, request.payload))
        outcome = self.commits.pop(0) if self.commits and request.payload == b"T\0" else "OK"
        return [reply(request)] if outcome == "OK" else [error(request, outcome)]

    def handlers(self, extra=None):
        handlers = {Op.TRANSACTION_START: self.start, Op.TRANSACTION_END: self.end,
                    Op.READ: answer(b"v"), Op.WRITE: ok}
        handlers.update(extra or {})
        return handlers


def test_transaction_carries_its_id_and_commits_on_exit(connect):
    server = TransactionServer()
    client, peer = connect(server.handlers())
    with client.transaction() as tx:
        assert tx.read("/a") == "v"
        tx.write("/b", "w")
    assert [p.tx_id for p in peer.received if p.type in (Op.READ, Op.WRITE)] == [42, 42]
    assert server.ended == [(42, b"T\0")]
    assert not tx.active


def test_client_operations_accept_tx(connect):
    server = TransactionServer()
    client, peer = connect(server.handlers())
    tx = client.transaction()
    client.write("/b", "w", tx=tx)
    tx.commit()
    assert peer.requests(Op.WRITE)[0].tx_id == 42


def test_transaction_aborts_on_exception_and_reraises_it(connect):
    server = TransactionServer()
    client, _ = connect(server.handlers())
    with pytest.raises(RuntimeError, match="boom"):
        with client.transaction() as tx:
            tx.write("/b", "w")
            raise RuntimeError("boom")
    assert server.ended == [(42, b"F\0")]


def test_commit_conflict_raises_eagain(connect):
    client, _ = connect(TransactionServer(commits=["EAGAIN"]).handlers())
    with pytest.raises(XenStoreError) as info:
        with client.transaction() as tx:
            tx.write("/b", "w")
    assert info.value.name == "EAGAIN"


def test_ended_transaction_cannot_be_used(connect):
    client, peer = connect(TransactionServer().handlers())
    with client.transaction() as tx:
        pass
    with pytest.raises(XenStoreError) as info:
        tx.read("/a")
    assert info.value.name == "EINVAL"
    assert peer.requests(Op.READ) == []


def test_transact_redoes_the_whole_function_on_eagain(connect):
    server = TransactionServer(commits=["EAGAIN", "EAGAIN", "OK"])
    client, peer = connect(server.handlers())
    calls = []

    def body(tx):
        calls.append(tx.id)
        tx.write("/counter", tx.read("/counter") + "1")
        return "done"

    assert client.transact(body, retries=5) == "done"
    assert calls == [42, 43, 44]
    assert [tx for tx, _ in server.ended] == [42, 43, 44]
    assert len(peer.requests(Op.WRITE)) == 3


def test_transact_gives_up_after_the_given_number_of_attempts(connect):
    server = TransactionServer(commits=["EAGAIN"] * 10)
    client, peer = connect(server.handlers())
    calls = []
    with pytest.raises(XenStoreError) as info:
        client.transact(lambda tx: calls.append(tx.id), retries=3)
    assert info.value.name == "EAGAIN"
    assert len(calls) == 3
    assert len(peer.requests(Op.TRANSACTION_START)) == 3


def test_transact_does_not_retry_other_errors(connect):
    server = TransactionServer()
    client, peer = connect(server.handlers({Op.READ: fail_with("EACCES")}))
    with pytest.raises(XenStoreError) as info:
        client.transact(lambda tx: tx.read("/a"), retries=5)
    assert info.value.name == "EACCES"
    assert len(peer.requests(Op.TRANSACTION_START)) == 1
    assert server.ended == [(42, b"F\0")]


def test_transact_retries_eagain_raised_inside_the_function(connect):
    answers = iter([b"EAGAIN", b"v"])

    def read(request):
        value = next(answers)
        return [error(request, "EAGAIN") if value == b"EAGAIN" else reply(request, value)]

    server = TransactionServer()
    client, _ = connect(server.handlers({Op.READ: read}))
    assert client.transact(lambda tx: tx.read("/a")) == "v"
    assert server.ended == [(42, b"F\0"), (43, b"T\0")]


def test_transaction_start_with_a_bad_reply_is_an_error(connect):
    client, _ = connect({Op.TRANSACTION_START: answer(b"nonsense\0")})
    with pytest.raises(XenStoreError):
        client.transaction()


def test_open_with_an_explicit_socket_path(tmp_path):
    import socket
    import threading

    path = str(tmp_path / "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    served = []

    def serve():
        conn, _ = listener.accept()
        with conn:
            data = conn.recv(65536)
            req_id = HEADER.unpack_from(data)[1]
            served.append(data[HEADER.size:])
            conn.sendall(encode(Op.GET_DOMAIN_PATH, req_id, 0, join_strings("/local/domain/0")))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with XenStoreClient.open(path) as client:
        assert client.transport.kind == "unix"
        assert client.get_domain_path(0) == "/local/domain/0"
    thread.join(5)
    listener.close()
    assert served == [b"0\0"]
