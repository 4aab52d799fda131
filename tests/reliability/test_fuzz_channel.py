"""Fuzz: whatever the host leaves under ``to-guest``, the daemon's intake stores every good
message, removes what it may, and never stops (docs/protocol.md §1).

hypothesis draws a whole ``to-guest`` tree: message nodes (canonical numbers and stray
names), keys (UTF-8 or not, too long, control characters, ``VMAPIEvent`` with any value),
value pieces (missing, misnamed, too many, not UTF-8, too long), per-node permissions
(readable and deletable, read-only, unreadable) and a ``last-write`` counter (missing,
behind, ahead, 10^12, not a number). The host is the development XenStore (dom0 writes
the tree); the guest is the daemon's own :class:`~ovmd.daemon.hostlink.HostLink` and
:class:`~ovmd.cache.ParamCache` on a temporary root, draining at start-up as the daemon
does before READY=1. The oracle is an independent reading of docs/protocol.md below.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from daemon_helpers import CHANNEL, GUEST
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import outcome

from ovmd.cache import ParamCache
from ovmd.daemon.hostlink import HostLink
from ovmd.daemon.loop import EventLoop
from ovmd.paths import Paths
from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreClient, XenStoreError

BOX = CHANNEL + "/to-guest"
EXAMPLES = 200

# --- the strategies ------------------------------------------------------------------------

key_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), min_codepoint=1,
                                          max_codepoint=0x2FFF), min_size=1, max_size=24)
keys = st.one_of(
    key_text.map(lambda t: ("com.fuzz." + t).encode("utf-8")),
    st.sampled_from([b"com.fuzz.\x1b[31mred", b"com.fuzz.cr\rlf", b"VMAPIEvent",
                     b"com.fuzz.\xff\xfe", b"", b"k" * 257, b"com.fuzz.new\nline",
                     b"com.fuzz.nul\0", b"com.fuzz.secret-password"]),
)
event_values = st.sampled_from([b"8", b"0x10", b"0777", b"0xZZ", "\u00b2".encode(), b"9" * 5000,
                                b"-1", b" 64 ", b"\xff"])
piece_bytes = st.one_of(
    st.text(min_size=1, max_size=40).map(lambda t: t.encode("utf-8")),
    st.text(min_size=1, max_size=40).map(lambda t: t.encode("utf-8")),
    st.sampled_from([b"\xff", b"\xc3", b"x" * 2048, b""]),
)
node_names = st.one_of(
    st.integers(1, 14).map(str),
    st.sampled_from(["0", "007", "foo", "1a", "99999999999999999999", "-5"]),
)
perms = st.sampled_from(["b", "b", "b", "b", "r", "n"])
counters = st.one_of(st.none(), st.integers(0, 16).map(lambda n: str(n).encode()),
                     st.sampled_from([b"14", b"14", b"1000000000000", b"garbage",
                                      "\u00b2".encode(), b" 5 ", b"\xff", b"0777"]))


@st.composite
def nodes(draw):
    key = draw(keys)
    if key == b"VMAPIEvent":
        value = draw(event_values)
        pieces = [value[i:i + 2048] for i in range(0, len(value), 2048)]
    else:
        pieces = draw(st.lists(piece_bytes, min_size=draw(st.sampled_from([0, 1, 1, 1])),
                               max_size=4))
    names = [str(i) for i in range(len(pieces))]
    twist = draw(st.sampled_from(["", "", "", "gap", "name", "lead", "many", "huge"]))
    if twist == "gap" and len(names) > 1:
        names[-1] = str(len(names))
    elif twist == "name" and names:
        names[0] = "zero"
    elif twist == "lead" and len(names) > 1:
        names[1] = "01"
    elif twist == "many":
        pieces, names = [b"a"] * 300, [str(i) for i in range(300)]
    elif twist == "huge":
        pieces, names = [b"z" * 2048] * 5, [str(i) for i in range(5)]
    return {"name": draw(node_names), "key": key, "pieces": list(zip(names, pieces)),
            "perm": draw(perms)}


@st.composite
def good_nodes(draw):
    """A well-formed message (half of the nodes): what a real host writes."""
    key = draw(key_text.map(lambda t: ("com.fuzz." + t).encode("utf-8")))
    value = draw(st.text(min_size=1, max_size=3000)).encode("utf-8")[:8192] or b"v"
    pieces = [value[i:i + 2048] for i in range(0, len(value), 2048)]
    return {"name": draw(st.integers(1, 14).map(str)), "key": key,
            "pieces": [(str(i), p) for i, p in enumerate(pieces)], "perm": "b"}


trees = st.fixed_dictionaries({
    "nodes": st.lists(st.one_of(good_nodes(), nodes()), max_size=10,
                      unique_by=lambda n: n["name"]),
    "counter": counters,
    "box": st.sampled_from(["r"] * 9 + ["n"]),
})


# --- the oracle: docs/protocol.md, read independently ----------------------------------------

def counter_of(raw):
    if raw is None:
        return 0
    text = raw.decode("utf-8", "replace").strip()
    return int(text) if re.fullmatch(r"[0-9]{1,20}", text) else None


def canonical(name):
    return re.fullmatch(r"[1-9][0-9]{0,18}", name) is not None


def accepted(node):
    """(key, value) if the guest must accept this message, else None."""
    try:
        key = node["key"].decode("utf-8")
    except UnicodeDecodeError:
        return None
    names = [n for n, _ in node["pieces"]]
    if len(names) > 256 or names != [str(i) for i in range(len(names))]:
        return None
    try:
        value = b"".join(p for _, p in node["pieces"]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not key or len(node["key"]) > 256 or "\0" in key or "\n" in key:
        return None
    if not value or len(value.encode()) > 8192:
        return None
    return key, value


def due(tree):
    """The canonical message numbers the guest must handle now, in order."""
    counter = counter_of(tree["counter"])
    numbers = sorted(int(n["name"]) for n in tree["nodes"] if canonical(n["name"]))
    return [n for n in numbers if counter is None or n <= counter]


# --- the host side ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def host_store(tmp_path_factory):
    from testlib import start_xenstored

    socket_dir = Path(tempfile.mkdtemp(prefix="xsf-", dir="/tmp"))
    server = start_xenstored(socket_dir)
    client = XenStoreClient.open(server.dom0_socket)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()
        shutil.rmtree(str(socket_dir), ignore_errors=True)


def write_tree(dom0, tree):
    try:
        dom0.rm(BOX)
    except XenStoreError:
        pass
    HostChannel(dom0, GUEST).prepare(dom0)
    for node in tree["nodes"]:
        path = "%s/%s" % (BOX, node["name"])
        entries = ["n0", "%s%d" % (node["perm"], GUEST)]
        for name, piece in node["pieces"]:
            dom0.write("%s/%s" % (path, name), piece)
            dom0.set_perms("%s/%s" % (path, name), entries)
        dom0.write(path, node["key"])
        dom0.set_perms(path, entries)
    if tree["counter"] is not None:
        dom0.write(BOX + "/last-write", tree["counter"])
    dom0.set_perms(BOX, ["n0", "%s%d" % (tree["box"], GUEST)])


class Counting:
    """Counts the XenStore requests the guest makes (the work of one wake-up)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = XenStoreClient.request

        def request(client, *args, **kwargs):
            self.count += 1
            return original(client, *args, **kwargs)

        monkeypatch.setattr(XenStoreClient, "request", request)


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(tree=trees)
def test_any_to_guest_tree(host_store, monkeypatch, caplog, figures, tree):
    server, dom0 = host_store
    write_tree(dom0, tree)
    base = Path(tempfile.mkdtemp(prefix="ovfz-", dir="/tmp"))
    paths = Paths(str(base))
    requests = Counting(monkeypatch)
    caplog.clear()
    crashed = 1
    try:
        with caplog.at_level(logging.INFO):
            cache = ParamCache(paths).load()
            loop = EventLoop()
            link = HostLink(loop, cache, server.guest_socket(GUEST), lambda keys: None)
            link.connect(drain_all=True)  # never raises, whatever the tree
            link.close()
            loop.close()
            cache.close()
        crashed = 0
        final = ParamCache(paths).load().as_dict()  # what a restarted daemon finds
    finally:
        shutil.rmtree(str(base), ignore_errors=True)
        figures.add("fuzz", "channel: any to-guest tree (hypothesis)", tried=1,
                    crashes=crashed)
    assert not [r for r in caplog.records if r.exc_info or "internal error" in r.getMessage()]
    by_number = {int(n["name"]): n for n in tree["nodes"] if canonical(n["name"])}
    readable = tree["box"] != "n"
    sent = []
    for number in (due(tree) if readable else []):
        node = by_number[number]
        message = accepted(node) if node["perm"] != "n" else None
        if message is not None and message[0] != "VMAPIEvent":
            sent.append(message)
    figures.add("fuzz", "channel: any to-guest tree (hypothesis)", **outcome(sent, final))
    assert final == dict(sent)  # every good message stored, nothing else
    # what the guest may delete of what it handled is gone; the rest is untouched
    left = set(dom0.directory(BOX)) - {"last-write"}
    for node in tree["nodes"]:
        name = node["name"]
        handled = readable and (not canonical(name) or int(name) in due(tree))
        if handled and node["perm"] == "b":
            assert name not in left, name
        elif not handled or node["perm"] == "n":
            assert name in left, name
    # bounded work, whatever the counter: a few requests per node present
    budget = 12 + sum(4 + min(len(n["pieces"]), 257) for n in tree["nodes"])
    assert requests.count <= budget
