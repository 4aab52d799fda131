"""Our client against our development server ``ovmd-xenstored``, as dom0 and as guests.

The ``xenstored`` fixture (tests/conftest.py) starts the server with guests 1 and 2:
``dom0_socket`` is the privileged connection, ``guest_socket(ID)`` acts as guest ID.
Expected behaviour is XenStore's (docs/protocol.md), not whatever the server happens to do.
"""
from __future__ import annotations

import selectors
import subprocess

import pytest
from testlib import require_tool

from ovmd.xenstore import ConnectionClosedError, WatchEvent, XenStoreClient, XenStoreError
from ovmd.xenstore.protocol import MAX_PAYLOAD

TO_GUEST = "control/oracle-vmapi/to-guest"


@pytest.fixture
def dom0(xenstored):
    with XenStoreClient.open(xenstored.dom0_socket, request_timeout=10) as client:
        yield client


@pytest.fixture
def guest1(xenstored):
    with XenStoreClient.open(xenstored.guest_socket(1), request_timeout=10) as client:
        yield client


def error_name(call, *args):
    with pytest.raises(XenStoreError) as info:
        call(*args)
    return info.value.name


def test_open_via_xenstored_path(xenstored, monkeypatch):
    monkeypatch.setenv("XENSTORED_PATH", xenstored.dom0_socket)
    with XenStoreClient.open() as client:
        assert client.transport.kind == "unix"
        assert client.get_domain_path(1) == "/local/domain/1"


def test_write_read_and_empty_values(dom0):
    dom0.write("/test/a", "value \u00e9")
    dom0.write("/test/empty", "")
    dom0.write("/test/raw", b"\xff\x00\x01")
    assert dom0.read("/test/a") == "value \u00e9"
    assert dom0.read("/test/empty") == ""
    assert dom0.read_bytes("/test/raw") == b"\xff\x00\x01"


def test_write_creates_parents_and_rm_removes_the_subtree(dom0):
    dom0.write("/tree/x/y/z", "1")
    assert dom0.exists("/tree/x/y")
    assert dom0.directory("/tree/x") == ["y"]
    dom0.rm("/tree/x")
    assert not dom0.exists("/tree/x/y/z")
    assert dom0.directory("/tree") == []


def test_mkdir_makes_an_empty_node(dom0):
    dom0.mkdir("/made/here")
    assert dom0.read("/made/here") == ""
    assert dom0.directory("/made/here") == []


def test_directory_lists_children(dom0):
    for name in ("b", "a", "c-1"):
        dom0.write("/list/" + name, name)
    assert sorted(dom0.directory("/list")) == ["a", "b", "c-1"]


def test_directory_larger_than_one_reply(dom0):
    names = ["child-with-a-longish-name-%04d" % i for i in range(300)]  # ~9 KB of names
    for name in names:
        dom0.mkdir("/big/" + name)
    assert sorted(dom0.directory("/big")) == names


def test_missing_node_is_enoent(dom0):
    assert error_name(dom0.read, "/no/such/node") == "ENOENT"
    assert dom0.exists("/no/such/node") is False


def test_largest_message_fits_and_larger_is_refused_before_sending(dom0):
    path = "/limits/v"
    value = b"x" * (MAX_PAYLOAD - len(path) - 1)
    dom0.write(path, value)
    assert dom0.read_bytes(path) == value
    assert error_name(dom0.write, path, value + b"x") == "E2BIG"
    assert dom0.read_bytes(path) == value  # the connection is still usable


def test_get_domain_path(dom0, guest1):
    assert dom0.get_domain_path(1) == "/local/domain/1"
    assert dom0.get_domain_path(2) == "/local/domain/2"
    assert guest1.get_domain_path(1) == "/local/domain/1"


def test_permissions_round_trip(dom0):
    dom0.write("/perm/node", "v")
    dom0.set_perms("/perm/node", ["n0", "r1", "b2"])
    assert dom0.get_perms("/perm/node") == ["n0", "r1", "b2"]


def test_guest_home_has_the_toolstack_permissions(dom0):
    assert dom0.get_perms("/local/domain/1") == ["n0", "r1"]


# -- as a guest ---------------------------------------------------------------------------

def test_guest_relative_paths_resolve_to_its_home(dom0, guest1):
    assert guest1.read("name") == "guest1"
    guest1.write("data/greeting", "hello")
    assert dom0.read("/local/domain/1/data/greeting") == "hello"


def test_guest_cannot_read_another_guests_area(guest1):
    assert error_name(guest1.read, "/local/domain/2/name") == "EACCES"


def test_guest_cannot_write_outside_its_writable_area(guest1):
    assert error_name(guest1.write, "control/shutdown", "poweroff") == "EACCES"


def test_guest_may_delete_a_message_the_host_wrote(dom0, guest1):
    dom0.write("/local/domain/1/%s/1" % TO_GUEST, "com.example.key")
    dom0.write("/local/domain/1/%s/1/0" % TO_GUEST, "value")
    assert guest1.read(TO_GUEST + "/1/0") == "value"
    guest1.rm(TO_GUEST + "/1")
    assert not dom0.exists("/local/domain/1/%s/1" % TO_GUEST)


# -- watches ------------------------------------------------------------------------------

def test_watch_fires_at_once_then_on_a_change_by_another_connection(dom0, guest1):
    node = TO_GUEST + "/last-write"
    guest1.watch(node, "msg")
    assert guest1.wait_event(timeout=10) == WatchEvent(node, "msg")  # relative stays relative
    dom0.write("/local/domain/1/" + node, "1")
    assert guest1.wait_event(timeout=10) == WatchEvent(node, "msg")


def test_watch_fires_for_descendants(dom0):
    dom0.mkdir("/w")
    dom0.watch("/w", "tok")
    assert dom0.wait_event(timeout=10) == WatchEvent("/w", "tok")
    other = XenStoreClient.open(dom0.transport.path)
    with other:
        other.write("/w/child", "1")
    assert dom0.wait_event(timeout=10) == WatchEvent("/w/child", "tok")


def test_events_caused_by_our_own_request_are_queued_by_the_time_it_returns(dom0):
    dom0.watch("/own", "t")
    assert dom0.wait_event(timeout=10) == WatchEvent("/own", "t")
    dom0.write("/own", "1")
    # The server sends the event before the reply, so it is already queued...
    assert dom0.pending_events() == [WatchEvent("/own", "t")]
    # ...and the selector will not report it again.
    with selectors.DefaultSelector() as selector:
        selector.register(dom0, selectors.EVENT_READ)
        assert selector.select(timeout=0) == []


def test_event_loop_use_with_a_selector(dom0, guest1):
    guest1.watch("data", "d")
    assert guest1.wait_event(timeout=10) == WatchEvent("data", "d")
    with selectors.DefaultSelector() as selector:
        selector.register(guest1, selectors.EVENT_READ)
        dom0.write("/local/domain/1/data/k", "v")
        assert selector.select(timeout=10)
        assert guest1.receive_events() == [WatchEvent("data/k", "d")]


def test_unwatch_stops_events(dom0, guest1):
    guest1.watch("data", "d")
    assert guest1.wait_event(timeout=10) == WatchEvent("data", "d")
    guest1.unwatch("data", "d")
    dom0.write("/local/domain/1/data/k", "v")
    # A request on the same connection is answered only after anything the write caused.
    assert guest1.read("data/k") == "v"
    assert guest1.receive_events() == []


def test_watching_a_special_path(dom0):
    dom0.watch("@releaseDomain", "rel")
    assert dom0.wait_event(timeout=10) == WatchEvent("@releaseDomain", "rel")


# -- transactions -------------------------------------------------------------------------

def test_transaction_commits_atomically(dom0, xenstored):
    with XenStoreClient.open(xenstored.dom0_socket) as observer:
        with dom0.transaction() as tx:
            tx.write("/tx/a", "1")
            tx.write("/tx/b", "2")
            assert not observer.exists("/tx/a")  # not visible before the commit
        assert observer.read("/tx/a") == "1" and observer.read("/tx/b") == "2"


def test_transaction_aborted_leaves_nothing(dom0):
    with pytest.raises(RuntimeError):
        with dom0.transaction() as tx:
            tx.write("/tx-abort/a", "1")
            raise RuntimeError("changed my mind")
    assert not dom0.exists("/tx-abort/a")


def test_conflicting_commit_raises_eagain(dom0, xenstored):
    dom0.write("/counter", "0")
    with XenStoreClient.open(xenstored.dom0_socket) as rival:
        with pytest.raises(XenStoreError) as info:
            with dom0.transaction() as tx:
                value = int(tx.read("/counter"))
                rival.write("/counter", "10")
                tx.write("/counter", str(value + 1))
    assert info.value.name == "EAGAIN"
    assert dom0.read("/counter") == "10"


def test_transact_redoes_the_work_after_a_conflict(dom0, xenstored):
    dom0.write("/counter", "0")
    attempts = []
    with XenStoreClient.open(xenstored.dom0_socket) as rival:
        def increment(tx):
            attempts.append(1)
            value = int(tx.read("/counter"))
            if len(attempts) == 1:
                rival.write("/counter", "10")  # conflict on the first attempt only
            tx.write("/counter", str(value + 1))
            return value + 1

        assert dom0.transact(increment, retries=3) == 11
    assert len(attempts) == 2
    assert dom0.read("/counter") == "11"


def test_transact_gives_up_after_the_given_attempts(dom0, xenstored):
    dom0.write("/counter", "0")
    attempts = []
    with XenStoreClient.open(xenstored.dom0_socket) as rival:
        def always_conflicting(tx):
            attempts.append(1)
            tx.write("/counter", tx.read("/counter") + "1")
            rival.write("/counter", str(len(attempts)))

        with pytest.raises(XenStoreError) as info:
            dom0.transact(always_conflicting, retries=3)
    assert info.value.name == "EAGAIN"
    assert len(attempts) == 3


def test_guest_transaction_with_relative_paths(dom0, guest1):
    guest1.transact(lambda tx: tx.write("data/tx", "from guest"))
    assert dom0.read("/local/domain/1/data/tx") == "from guest"


# -- the connection -----------------------------------------------------------------------

def test_server_going_away_raises_connection_closed(xenstored):
    client = XenStoreClient.open(xenstored.dom0_socket)
    assert client.get_domain_path(1) == "/local/domain/1"
    xenstored.stop()
    with pytest.raises(ConnectionClosedError):
        client.read("/local/domain/1/name")
    assert client.closed


def test_debian_tools_read_what_our_client_wrote(dom0, xenstored):
    xenstore_read = require_tool("xenstore-read")
    dom0.write("/interop/key", "written by ovmd")
    result = subprocess.run([xenstore_read, "/interop/key"], env=xenstored.env,
                            capture_output=True, text=True, timeout=10, check=True)
    assert result.stdout == "written by ovmd\n"
