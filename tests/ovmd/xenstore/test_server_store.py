"""The development XenStore's store without sockets: tree, permissions, transactions,
watches (ovmd/xenstore/store.py), checked against xenstored's documented behaviour."""
from __future__ import annotations

from typing import List, Tuple

import pytest

from ovmd.xenstore.errors import XenStoreError
from ovmd.xenstore.store import Store

HOME1 = "/local/domain/1"
TO_GUEST1 = HOME1 + "/control/oracle-vmapi/to-guest"
FROM_GUEST1 = HOME1 + "/control/oracle-vmapi/from-guest"


class Recorder:
    """Collects the watch events delivered to one session."""

    def __init__(self) -> None:
        self.events: List[Tuple[str, str]] = []

    def __call__(self, path: str, token: str) -> None:
        self.events.append((path, token))

    def take(self) -> List[Tuple[str, str]]:
        events, self.events = self.events, []
        return events


@pytest.fixture
def store():
    store = Store()
    store.add_domain(1, "guest1")
    store.add_domain(2, "guest2")
    return store


def session(store, domid, recorder=None):
    return store.open_session(domid, domid == 0, recorder or Recorder())


def error_name(func, *args):
    with pytest.raises(XenStoreError) as info:
        func(*args)
    return info.value.name


class TestTree:
    def test_write_creates_missing_parents_and_read_has_no_nul(self, store):
        dom0 = session(store, 0)
        store.write(dom0, "/a/b/c", b"hello")
        assert store.read(dom0, "/a/b/c") == b"hello"
        assert store.read(dom0, "/a/b") == b""
        assert store.directory(dom0, "/a") == ["b"]

    def test_values_may_be_empty_or_binary(self, store):
        dom0 = session(store, 0)
        store.write(dom0, "/v", b"")
        store.write(dom0, "/w", b"a\0b")
        assert store.read(dom0, "/v") == b""
        assert store.read(dom0, "/w") == b"a\0b"

    def test_directory_keeps_creation_order_and_leaf_is_empty(self, store):
        dom0 = session(store, 0)
        for name in ("z", "a", "m"):
            store.write(dom0, "/d/" + name, b"1")
        assert store.directory(dom0, "/d") == ["z", "a", "m"]
        assert store.directory(dom0, "/d/z") == []

    def test_rm_removes_a_subtree(self, store):
        dom0 = session(store, 0)
        store.write(dom0, "/a/b/c", b"1")
        store.write(dom0, "/a/d", b"2")
        store.rm(dom0, "/a/b")
        assert store.directory(dom0, "/a") == ["d"]
        assert not store.exists("/a/b/c")
        assert error_name(store.read, dom0, "/a/b") == "ENOENT"

    def test_rm_of_missing_node_succeeds_only_if_parent_exists(self, store):
        dom0 = session(store, 0)
        store.write(dom0, "/a", b"")
        store.rm(dom0, "/a/missing")  # parent exists: fine
        assert error_name(store.rm, dom0, "/a/missing/deeper") == "ENOENT"

    def test_rm_of_root_is_einval(self, store):
        assert error_name(store.rm, session(store, 0), "/") == "EINVAL"

    def test_mkdir_of_existing_node_keeps_its_value(self, store):
        dom0 = session(store, 0)
        store.write(dom0, "/m", b"keep")
        store.mkdir(dom0, "/m")
        store.mkdir(dom0, "/n/o")
        assert store.read(dom0, "/m") == b"keep"
        assert store.read(dom0, "/n/o") == b""

    def test_relative_paths_resolve_against_the_callers_home(self, store):
        dom0, guest = session(store, 0), session(store, 1)
        store.write(guest, "data/x", b"1")
        assert store.read(dom0, HOME1 + "/data/x") == b"1"
        store.write(dom0, "mine", b"0")
        assert store.exists("/local/domain/0/mine")
        assert store.read(guest, "name") == b"guest1"

    @pytest.mark.parametrize("path", ["", "/a//b", "/a/", "a b", "/a\u00e9", "@foo"])
    def test_invalid_paths_are_einval(self, store, path):
        assert error_name(store.write, session(store, 0), path, b"") == "EINVAL"

    def test_path_length_counts_after_the_domain_home(self, store):
        guest = session(store, 1)
        store.write(guest, "data/" + "x" * (2048 - len("data/")), b"")  # exactly 2048
        assert error_name(store.write, guest, "data/" + "x" * 2044, b"") == "EINVAL"
        dom0 = session(store, 0)
        assert error_name(store.write, dom0, "/" + "y" * 2048, b"") == "EINVAL"

    def test_directory_part_pages_with_a_generation(self, store):
        dom0 = session(store, 0)
        names = ["child%04d-%s" % (i, "p" * 40) for i in range(150)]  # ~7.6 kB of names
        for name in names:
            store.mkdir(dom0, "/big/" + name)
        collected, offset, generations = [], 0, set()
        while True:
            reply = store.directory_part(dom0, "/big", offset)
            assert len(reply) <= 4096
            generation, _, rest = reply.partition(b"\0")
            generations.add(generation)
            final = rest.endswith(b"\0\0") or rest == b"\0"
            body = rest[:-1] if final else rest
            collected += [name.decode() for name in body.split(b"\0")[:-1]]
            if final:
                break
            offset += len(body)
        assert collected == names
        assert len(generations) == 1
        store.mkdir(dom0, "/big/another")
        assert store.directory_part(dom0, "/big", 0).partition(b"\0")[0] not in generations

    def test_directory_part_beyond_the_end_is_an_empty_list(self, store):
        dom0 = session(store, 0)
        store.write(dom0, "/e/x", b"")
        reply = store.directory_part(dom0, "/e", 999)
        assert reply.endswith(b"\0\0") and reply.count(b"\0") == 2


class TestPermissions:
    def test_domain_home_layout_and_permissions(self, store):
        dom0 = session(store, 0)
        perms = {path: store.get_perms(dom0, path) for path in (
            HOME1, HOME1 + "/domid", HOME1 + "/name", TO_GUEST1, FROM_GUEST1, HOME1 + "/data")}
        assert perms == {
            HOME1: ["n0", "r1"], HOME1 + "/domid": ["n0", "r1"], HOME1 + "/name": ["n0", "r1"],
            TO_GUEST1: ["n0", "b1"], FROM_GUEST1: ["n1"], HOME1 + "/data": ["n1"]}
        assert store.read(dom0, HOME1 + "/domid") == b"1"

    def test_new_nodes_inherit_and_unprivileged_creators_own_them(self, store):
        dom0, guest = session(store, 0), session(store, 1)
        store.write(dom0, TO_GUEST1 + "/1", b"key")
        assert store.get_perms(dom0, TO_GUEST1 + "/1") == ["n0", "b1"]
        store.write(guest, FROM_GUEST1 + "/1/0", b"v")
        assert store.get_perms(dom0, FROM_GUEST1 + "/1") == ["n1"]
        store.write(dom0, "/shared/x", b"")
        store.set_perms(dom0, "/shared", ["n0", "w3", "b1"])
        store.write(guest, "/shared/mine", b"")
        assert store.get_perms(dom0, "/shared/mine") == ["n1", "w3", "b1"]

    def test_guest_cannot_read_or_write_another_domains_nodes(self, store):
        guest1 = session(store, 1)
        assert error_name(store.read, guest1, "/local/domain/2/name") == "EACCES"
        assert error_name(store.write, guest1, "/local/domain/2/data/x", b"1") == "EACCES"
        assert error_name(store.directory, guest1, "/local/domain") == "EACCES"
        assert error_name(store.rm, guest1, "/local/domain/2/data") == "EACCES"

    def test_guest_cannot_write_its_read_only_nodes(self, store):
        guest = session(store, 1)
        assert error_name(store.write, guest, "name", b"evil") == "EACCES"
        assert error_name(store.write, guest, "newnode", b"x") == "EACCES"
        assert error_name(store.rm, guest, "control") == "EACCES"

    def test_missing_node_is_enoent_only_where_the_parent_is_readable(self, store):
        guest = session(store, 1)
        assert error_name(store.read, guest, "data/missing") == "ENOENT"
        assert error_name(store.read, guest, "/local/domain/2/data/missing") == "EACCES"

    def test_guest_deletes_the_messages_the_host_gave_it_write_access_to(self, store):
        dom0, guest = session(store, 0), session(store, 1)
        store.write(dom0, TO_GUEST1 + "/1", b"com.example.key")
        store.write(dom0, TO_GUEST1 + "/1/0", b"value")
        assert store.read(guest, "control/oracle-vmapi/to-guest/1/0") == b"value"
        store.rm(guest, "control/oracle-vmapi/to-guest/1")
        assert not store.exists(TO_GUEST1 + "/1")

    def test_guest_cannot_delete_a_message_without_write_access(self, store):
        dom0, guest = session(store, 0), session(store, 1)
        store.write(dom0, TO_GUEST1 + "/2", b"k")
        store.set_perms(dom0, TO_GUEST1 + "/2", ["n0", "r1"])
        assert error_name(store.rm, guest, TO_GUEST1 + "/2") == "EACCES"
        assert store.exists(TO_GUEST1 + "/2")

    def test_set_perms_needs_ownership_and_guests_cannot_give_away_nodes(self, store):
        dom0, guest = session(store, 0), session(store, 1)
        store.write(guest, "data/x", b"")
        store.set_perms(guest, "data/x", ["n1", "r2"])
        assert store.get_perms(dom0, HOME1 + "/data/x") == ["n1", "r2"]
        assert error_name(store.set_perms, guest, "data/x", ["n2"]) == "EPERM"
        assert error_name(store.set_perms, guest, "name", ["n1"]) == "EACCES"
        assert error_name(store.set_perms, dom0, "/x", ["q1"]) == "EINVAL"

    def test_guest2_reads_what_guest1_shares(self, store):
        guest1, guest2 = session(store, 1), session(store, 2)
        store.write(guest1, "data/shared", b"hi")
        store.set_perms(guest1, "data/shared", ["n1", "r2"])
        assert store.read(guest2, HOME1 + "/data/shared") == b"hi"
        assert error_name(store.write, guest2, HOME1 + "/data/shared", b"x") == "EACCES"

    def test_special_nodes_have_dom0_only_permissions(self, store):
        dom0 = session(store, 0)
        assert store.get_perms(dom0, "@releaseDomain") == ["n0"]
        assert error_name(store.read, dom0, "@releaseDomain") == "EINVAL"


class TestWatches:
    def test_watch_returns_the_initial_event_even_for_a_missing_node(self, store):
        dom0 = session(store, 0)
        assert store.watch(dom0, "/nothing/here", "tok") == ("/nothing/here", "tok")

    def test_events_for_node_and_descendants_with_the_changed_path(self, store):
        rec = Recorder()
        dom0 = session(store, 0, rec)
        store.watch(dom0, "/w", "t")
        store.write(dom0, "/w", b"1")
        store.write(dom0, "/w/a/b", b"2")
        store.write(dom0, "/other", b"3")
        store.write(dom0, "/wx", b"4")
        assert rec.take() == [("/w", "t"), ("/w/a/b", "t")]

    def test_relative_watch_gets_relative_paths(self, store):
        rec = Recorder()
        guest = session(store, 1, rec)
        assert store.watch(guest, "control/oracle-vmapi/to-guest/last-write", "lw") == (
            "control/oracle-vmapi/to-guest/last-write", "lw")
        store.write(session(store, 0), TO_GUEST1 + "/last-write", b"1")
        assert rec.take() == [("control/oracle-vmapi/to-guest/last-write", "lw")]

    def test_rm_fires_exact_watches_of_removed_nodes_children_first(self, store):
        rec = Recorder()
        dom0 = session(store, 0, rec)
        store.write(dom0, "/r/a/b", b"")
        store.write(dom0, "/r/c", b"")
        for path in ("/r/a/b", "/r/c", "/r", "/"):
            store.watch(dom0, path, path)
        store.watch(dom0, "/r/never", "never")  # does not exist: no event on rm
        store.rm(dom0, "/r")
        assert rec.take() == [("/r/a/b", "/r/a/b"), ("/r/c", "/r/c"), ("/r", "/r"), ("/r", "/")]

    def test_mkdir_of_existing_node_fires_nothing(self, store):
        rec = Recorder()
        dom0 = session(store, 0, rec)
        store.write(dom0, "/m", b"")
        store.watch(dom0, "/m", "t")
        store.mkdir(dom0, "/m")
        assert rec.take() == []

    def test_guests_only_see_events_for_nodes_they_may_read(self, store):
        rec1, rec2 = Recorder(), Recorder()
        guest1, guest2 = session(store, 1, rec1), session(store, 2, rec2)
        store.watch(guest1, "/local/domain/2/data", "spy")
        store.watch(guest2, "data", "own")
        store.write(guest2, "data/x", b"secret")
        assert rec1.take() == []
        assert rec2.take() == [("data/x", "own")]

    def test_unwatch_and_duplicates(self, store):
        rec = Recorder()
        dom0 = session(store, 0, rec)
        store.watch(dom0, "/u", "t")
        assert error_name(store.watch, dom0, "/u", "t") == "EEXIST"
        store.unwatch(dom0, "/u", "t")
        assert error_name(store.unwatch, dom0, "/u", "t") == "ENOENT"
        store.write(dom0, "/u", b"")
        assert rec.take() == []

    def test_set_perms_fires_for_watchers_that_lose_access(self, store):
        dom0 = session(store, 0)
        rec = Recorder()
        guest = session(store, 1, rec)
        store.write(dom0, "/p/q", b"")
        store.set_perms(dom0, "/p/q", ["n0", "r1"])
        store.watch(guest, "/p/q", "t")
        store.set_perms(dom0, "/p/q", ["n0"])
        assert rec.take() == [("/p/q", "t")]

    def test_release_and_introduce_fire_special_watches_for_dom0_only(self, store):
        rec0, rec1 = Recorder(), Recorder()
        dom0, guest = session(store, 0, rec0), session(store, 1, rec1)
        store.watch(dom0, "@releaseDomain", "rel")
        store.watch(dom0, "@introduceDomain", "intro")
        store.watch(guest, "@releaseDomain", "g")
        store.release(2)
        store.introduce(3)
        assert rec0.take() == [("@releaseDomain", "rel"), ("@introduceDomain", "intro")]
        assert rec1.take() == []
        assert not store.is_domain_introduced(2) and store.is_domain_introduced(3)
        assert error_name(store.release, 2) == "ENOENT"
        assert error_name(store.release, 0) == "EINVAL"


class TestTransactions:
    def test_snapshot_isolation_and_commit(self, store):
        dom0, other = session(store, 0), session(store, 0)
        store.write(dom0, "/t/a", b"old")
        tx = store.transaction_start(dom0)
        store.write(dom0, "/t/b", b"new", tx)
        store.write(other, "/elsewhere", b"x")
        assert error_name(store.read, other, "/t/b") == "ENOENT"
        assert store.read(dom0, "/t/b", tx) == b"new"
        store.transaction_end(dom0, tx, True)
        assert store.read(other, "/t/b") == b"new"
        assert store.directory(other, "/t") == ["a", "b"]
        assert store.read(other, "/elsewhere") == b"x"

    def test_reads_see_the_snapshot_and_a_later_change_conflicts(self, store):
        dom0, other = session(store, 0), session(store, 0)
        tx = store.transaction_start(dom0)
        store.write(other, "/late", b"x")
        assert error_name(store.read, dom0, "/late", tx) == "ENOENT"  # snapshot
        assert error_name(store.transaction_end, dom0, tx, True) == "EAGAIN"

    def test_conflicting_commit_is_eagain_and_the_transaction_is_gone(self, store):
        dom0, other = session(store, 0), session(store, 0)
        store.write(dom0, "/c", b"1")
        tx = store.transaction_start(dom0)
        assert store.read(dom0, "/c", tx) == b"1"
        store.write(dom0, "/d", b"tx", tx)
        store.write(other, "/c", b"2")
        assert error_name(store.transaction_end, dom0, tx, True) == "EAGAIN"
        assert not store.exists("/d")
        assert error_name(store.read, dom0, "/c", tx) == "ENOENT"  # no such transaction

    def test_abort_discards_changes(self, store):
        dom0 = session(store, 0)
        tx = store.transaction_start(dom0)
        store.write(dom0, "/gone", b"x", tx)
        store.transaction_end(dom0, tx, False)
        assert not store.exists("/gone")

    def test_watch_events_fire_at_commit_not_before(self, store):
        rec = Recorder()
        watcher = session(store, 0, rec)
        writer = session(store, 0)
        store.watch(watcher, "/e", "t")
        tx = store.transaction_start(writer)
        store.write(writer, "/e/1", b"", tx)
        store.write(writer, "/e/1", b"again", tx)
        store.rm(writer, "/e/1", tx)
        store.write(writer, "/e/2", b"", tx)
        assert rec.take() == []
        store.transaction_end(writer, tx, True)
        assert rec.take() == [("/e/1", "t"), ("/e/2", "t")]

    def test_nested_start_is_ebusy_and_unknown_id_is_enoent(self, store):
        dom0 = session(store, 0)
        tx = store.transaction_start(dom0)
        assert error_name(store.transaction_start, dom0, tx) == "EBUSY"
        assert error_name(store.transaction_end, dom0, tx + 1, True) == "ENOENT"
        assert error_name(store.transaction_end, dom0, 0, True) == "ENOENT"

    def test_transactions_are_per_connection(self, store):
        dom0, other = session(store, 0), session(store, 0)
        tx = store.transaction_start(dom0)
        assert error_name(store.read, other, "/tool", tx) == "ENOENT"

    def test_guest_transaction_respects_permissions(self, store):
        guest = session(store, 1)
        tx = store.transaction_start(guest)
        assert error_name(store.write, guest, "/local/domain/2/data/x", b"", tx) == "EACCES"
        store.write(guest, "data/ok", b"1", tx)
        store.transaction_end(guest, tx, True)
        assert store.read(guest, "data/ok") == b"1"
