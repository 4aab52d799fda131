"""Property-based tests of the framing: the parser and a client fed arbitrary streams.

Whatever bytes arrive, split at whatever points, the parser only ever returns packets or
raises ProtocolError, and the client only ever answers or raises a XenStoreError: no
other exception, no hang. Example counts stay modest so the suite stays fast.
"""
from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ovmd.xenstore import XenStoreClient, XenStoreError
from ovmd.xenstore.errors import ProtocolError
from ovmd.xenstore.protocol import (
    HEADER,
    MAX_PAYLOAD,
    Op,
    Packet,
    PacketParser,
    encode,
    join_strings,
    split_strings,
    validate_path,
)
from ovmd.xenstore.transport import UnixSocketTransport

FAST = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

uint32 = st.integers(0, 2 ** 32 - 1)
packets = st.builds(Packet, st.integers(0, 22), uint32, uint32, st.binary(max_size=300))


def split_at(data: bytes, cuts) -> list:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    points = sorted({c % (len(data) + 1) for c in cuts}) if data else []
    pieces, start = [], 0
    for point in points + [len(data)]:
        pieces.append(data[start:point])
        start = point
    return pieces


def feed_all(parser: PacketParser, pieces) -> list:
    result = []
    for piece in pieces:
        result.extend(parser.feed(piece))
    return result


@FAST
@given(st.lists(packets, max_size=8), st.lists(st.integers(0, 10 ** 6), max_size=30))
def test_encoded_packets_split_anywhere_parse_back_identically(messages, cuts):
    stream = b"".join(encode(*m) for m in messages)
    parser = PacketParser()
    assert feed_all(parser, split_at(stream, cuts)) == messages
    assert parser.buffered == 0


@FAST
@given(st.binary(max_size=2000), st.lists(st.integers(0, 10 ** 6), max_size=30))
def test_any_byte_stream_gives_packets_or_a_protocol_error(stream, cuts):
    parser = PacketParser()
    got = []
    failed = False
    for piece in split_at(stream, cuts):
        try:
            got.extend(parser.feed(piece))
        except ProtocolError:
            failed = True
            break
    assert all(isinstance(p, Packet) and len(p.payload) <= MAX_PAYLOAD for p in got)
    # what came out is never more than what went in
    assert sum(HEADER.size + len(p.payload) for p in got) <= len(stream)
    if failed:  # a broken stream stays broken: it cannot be resynchronised
        with pytest.raises(ProtocolError):
            parser.feed(b"")


@FAST
@given(st.integers(MAX_PAYLOAD + 1, 2 ** 32 - 1), st.binary(max_size=100),
       st.integers(1, HEADER.size))
def test_oversized_length_is_refused_as_soon_as_the_header_is_complete(length, rest, step):
    header = HEADER.pack(Op.READ, 1, 0, length)
    pieces = [header[i:i + step] for i in range(0, HEADER.size, step)]
    parser = PacketParser()
    for piece in pieces[:-1]:
        assert parser.feed(piece) == []
    with pytest.raises(ProtocolError):
        parser.feed(pieces[-1] + rest)


@FAST
@given(st.integers(MAX_PAYLOAD + 1, 4 * MAX_PAYLOAD), st.binary(max_size=1))
def test_encode_refuses_oversized_payloads(size, filler):
    with pytest.raises(XenStoreError) as info:
        encode(Op.WRITE, 1, 0, (filler or b"x") * size)
    assert info.value.name == "E2BIG"


def test_encode_accepts_exactly_the_limit():
    frame = encode(Op.WRITE, 1, 0, b"x" * MAX_PAYLOAD)
    assert len(frame) == HEADER.size + MAX_PAYLOAD


@FAST
@given(st.lists(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                        min_size=1), min_size=1,
                max_size=10))
def test_nul_separated_strings_round_trip(parts):
    assert split_strings(join_strings(*parts)) == parts


path_segment = st.text(
    st.sampled_from("abcxyzABC0189_-@"), min_size=1, max_size=12).filter(
        lambda s: not s.startswith("@"))


@FAST
@given(st.lists(path_segment, min_size=1, max_size=8), st.booleans())
def test_well_formed_paths_are_accepted(segments, absolute):
    path = ("/" if absolute else "") + "/".join(segments)
    assert validate_path(path) == path


@FAST
@given(st.text(max_size=40))
def test_accepted_paths_obey_the_rules(path):
    try:
        validate_path(path)
    except XenStoreError as exc:
        assert exc.name == "EINVAL"
        return
    assert path and "//" not in path and (path == "/" or not path.endswith("/"))
    assert set(path) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_@/-")


# -- the client on a hostile stream -------------------------------------------------------

def frames_for_request(req_id):
    """Mixtures of the reply the client waits for, events, stale replies and garbage."""
    reply = st.builds(lambda p: encode(Op.READ, req_id, 0, p), st.binary(max_size=50))
    err = st.builds(lambda n: encode(Op.ERROR, req_id, 0, n + b"\0"),
                    st.sampled_from([b"ENOENT", b"EACCES", b"BOGUS", b""]))
    ev = st.builds(lambda p: encode(Op.WATCH_EVENT, 0, 0, p), st.binary(max_size=40))
    other = st.builds(encode, st.integers(0, 30), uint32, uint32, st.binary(max_size=40))
    junk = st.binary(max_size=40)
    return st.lists(st.one_of(reply, err, ev, other, junk), max_size=6).map(b"".join)


@FAST
@given(frames_for_request(1), st.lists(st.integers(0, 10 ** 6), max_size=10))
def test_client_answers_or_raises_a_xenstore_error_on_any_stream(stream, cuts):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        for piece in split_at(stream, cuts):
            if piece:
                theirs.send(piece)
        theirs.shutdown(socket.SHUT_WR)  # then EOF: the client can never wait forever
        client = XenStoreClient(UnixSocketTransport(ours, "<fuzz>"), request_timeout=5)
        try:
            value = client.read("/x")  # the first request has req_id 1
        except XenStoreError:
            pass
        else:
            assert isinstance(value, str)
        for event in client.pending_events():
            assert isinstance(event.path, str) and isinstance(event.token, str)
    finally:
        ours.close()
        theirs.close()
