"""``ovmd-xenstored`` over its sockets, spoken to with raw protocol bytes.

These tests frame requests themselves (ovmd.xenstore.protocol) rather than use our
client library, so the server is checked against the wire protocol (docs/protocol.md),
including what libxenstore does: header and body in separate writes, several requests
in one write, req_id 0.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Deque, Tuple

import pytest
from testlib import REPO, bin_path, start_xenstored

from ovmd.xenstore.protocol import HEADER, Op, Packet, PacketParser, encode, join_strings

TO_GUEST = "control/oracle-vmapi/to-guest"
FROM_GUEST = "control/oracle-vmapi/from-guest"


class RawConnection:
    """A unix-socket XenStore connection that frames requests by hand."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.parser = PacketParser()
        self.packets: Deque[Packet] = deque()
        self.events: Deque[Tuple[str, str]] = deque()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def next_packet(self) -> Packet:
        """The next packet in arrival order, events included."""
        while not self.packets:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            self.packets.extend(self.parser.feed(data))
        return self.packets.popleft()

    def reply(self) -> Packet:
        """The next reply; watch events met on the way are queued in ``events``."""
        while True:
            packet = self.next_packet()
            if packet.type != Op.WATCH_EVENT:
                return packet
            self.events.append(_event(packet))

    def event(self) -> Tuple[str, str]:
        while not self.events:
            packet = self.next_packet()
            assert packet.type == Op.WATCH_EVENT, "expected an event, got %r" % (packet,)
            self.events.append(_event(packet))
        return self.events.popleft()

    def request(self, type_: int, payload: bytes, tx_id: int = 0, req_id: int = 0) -> Packet:
        self.send(encode(type_, req_id, tx_id, payload))
        return self.reply()

    def ok(self, type_: int, *strings: str, tx_id: int = 0) -> bytes:
        reply = self.request(type_, join_strings(*strings), tx_id)
        assert reply.type == type_, "%s failed: %r" % (Op(type_).name, reply.payload)
        return reply.payload

    def error(self, type_: int, *strings: str, tx_id: int = 0) -> str:
        reply = self.request(type_, join_strings(*strings), tx_id)
        assert reply.type == Op.ERROR, "expected an error, got %r" % (reply,)
        assert reply.payload.endswith(b"\0") and reply.payload.count(b"\0") == 1
        return reply.payload[:-1].decode("ascii")

    def write(self, path: str, value: bytes, tx_id: int = 0) -> Packet:
        return self.request(Op.WRITE, path.encode() + b"\0" + value, tx_id)

    def read(self, path: str, tx_id: int = 0) -> bytes:
        return self.ok(Op.READ, path, tx_id=tx_id)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def _event(packet: Packet) -> Tuple[str, str]:
    path, token, rest = packet.payload.split(b"\0")
    assert rest == b""
    return path.decode(), token.decode()


@pytest.fixture
def connect(xenstored):
    opened = []

    def open_(domid: int = 0) -> RawConnection:
        path = xenstored.dom0_socket if domid == 0 else xenstored.guest_socket(domid)
        conn = RawConnection(path)
        opened.append(conn)
        return conn

    yield open_
    for conn in opened:
        conn.close()


class TestFraming:
    def test_header_and_body_in_separate_writes(self, connect):
        dom0 = connect()
        payload = b"/split\0value"
        message = encode(Op.WRITE, 0, 0, payload)
        dom0.send(message[:16])
        dom0.send(message[16:])
        assert dom0.reply() == Packet(Op.WRITE, 0, 0, b"OK\0")
        message = encode(Op.READ, 0, 0, b"/split\0")
        for i in range(len(message)):  # one byte at a time, header split too
            dom0.send(message[i:i + 1])
        assert dom0.reply() == Packet(Op.READ, 0, 0, b"value")

    def test_several_requests_in_one_write_are_answered_in_order(self, connect):
        dom0 = connect()
        dom0.send(encode(Op.WRITE, 7, 0, b"/m\0one")
                  + encode(Op.READ, 8, 0, b"/m\0")
                  + encode(Op.READ, 9, 0, b"/missing\0"))
        assert dom0.reply() == Packet(Op.WRITE, 7, 0, b"OK\0")
        assert dom0.reply() == Packet(Op.READ, 8, 0, b"one")
        assert dom0.reply() == Packet(Op.ERROR, 9, 0, b"ENOENT\0")

    def test_oversized_header_drops_only_that_connection(self, xenstored, connect):
        bystander, guest = connect(), connect(1)
        bystander.ok(Op.WRITE, "/before")
        bad = connect()
        bad.send(HEADER.pack(Op.WRITE, 0, 0, 4097) + b"x" * 100)
        assert bad.closed_by_server()
        assert bystander.write("/after", b"still").type == Op.WRITE
        assert bystander.read("/after") == b"still"
        assert guest.read("name") == b"guest1"
        assert connect().read("/after") == b"still"
        assert xenstored.process.poll() is None

    def test_read_reply_has_no_trailing_nul_and_empty_values_are_empty(self, connect):
        dom0 = connect()
        dom0.write("/empty", b"")
        assert dom0.request(Op.READ, b"/empty\0") == Packet(Op.READ, 0, 0, b"")
        dom0.write("/nul", b"a\0b")
        assert dom0.read("/nul") == b"a\0b"

    def test_directory_reply_and_leaf(self, connect):
        dom0 = connect()
        dom0.write("/dir/x", b"")
        dom0.write("/dir/y", b"")
        assert dom0.ok(Op.DIRECTORY, "/dir") == b"x\0y\0"
        assert dom0.request(Op.DIRECTORY, b"/dir/x\0").payload == b""

    @pytest.mark.parametrize("type_", [20, 23, 99, Op.WATCH_EVENT, Op.ERROR])
    def test_unknown_types_are_enosys(self, connect, type_):
        reply = connect().request(type_, b"x\0", req_id=5)
        assert reply == Packet(Op.ERROR, 5, 0, b"ENOSYS\0")

    def test_error_replies_echo_req_id_and_tx_id(self, connect):
        dom0 = connect()
        tx = int(dom0.ok(Op.TRANSACTION_START, "")[:-1])
        reply = dom0.request(Op.READ, b"/nope\0", tx_id=tx, req_id=42)
        assert reply == Packet(Op.ERROR, 42, tx, b"ENOENT\0")

    @pytest.mark.parametrize("payload", [b"", b"/a", b"/a\0b\0"])
    def test_malformed_single_argument_is_einval(self, connect, payload):
        assert connect().request(Op.READ, payload).payload == b"EINVAL\0"

    def test_big_directory_is_e2big_and_directory_part_pages_it(self, connect):
        dom0 = connect()
        names = ["n%03d-%s" % (i, "x" * 60) for i in range(100)]  # > 6 kB of names
        tx = int(dom0.ok(Op.TRANSACTION_START, "")[:-1])
        for name in names:
            dom0.ok(Op.MKDIR, "/big/" + name, tx_id=tx)
        dom0.ok(Op.TRANSACTION_END, "T", tx_id=tx)
        assert dom0.error(Op.DIRECTORY, "/big") == "E2BIG"
        listed, offset = [], 0
        while True:
            payload = dom0.ok(Op.DIRECTORY_PART, "/big", str(offset))
            _, _, rest = payload.partition(b"\0")
            final = rest.endswith(b"\0\0") or rest == b"\0"
            body = rest[:-1] if final else rest
            listed += [n.decode() for n in body.split(b"\0")[:-1]]
            if final:
                break
            offset += len(body)
        assert listed == names


class TestRequests:
    def test_get_domain_path_and_relative_reads(self, connect):
        guest = connect(1)
        assert guest.ok(Op.GET_DOMAIN_PATH, "2") == b"/local/domain/2\0"
        assert guest.read("domid") == b"1"
        assert connect().read("name") == b"Domain-0"

    def test_set_and_get_perms(self, connect):
        dom0 = connect()
        dom0.ok(Op.WRITE, "/p")
        dom0.ok(Op.SET_PERMS, "/p", "n1", "r2")
        assert dom0.ok(Op.GET_PERMS, "/p") == b"n1\0r2\0"
        assert dom0.error(Op.SET_PERMS, "/p", "x1") == "EINVAL"

    @pytest.mark.parametrize("type_,args", [
        (Op.INTRODUCE, ("5", "0", "1")), (Op.RELEASE, ("2",)), (Op.RESUME, ("2",)),
        (Op.SET_TARGET, ("1", "2")), (Op.IS_DOMAIN_INTRODUCED, ("2",)),
        (Op.CONTROL, ("check",)),
    ])
    def test_privileged_requests_are_eacces_for_guests(self, connect, type_, args):
        assert connect(1).error(type_, *args) == "EACCES"

    def test_domain_requests_from_dom0(self, xenstored, connect):
        dom0 = connect()
        assert dom0.ok(Op.IS_DOMAIN_INTRODUCED, "1") == b"T\0"
        assert dom0.ok(Op.IS_DOMAIN_INTRODUCED, "9") == b"F\0"
        assert dom0.ok(Op.RESUME, "1") == b"OK\0"
        assert dom0.error(Op.RESUME, "9") == "ENOENT"
        assert dom0.error(Op.RELEASE, "0") == "EINVAL"
        assert dom0.ok(Op.SET_TARGET, "1", "2") == b"OK\0"
        assert dom0.error(Op.INTRODUCE, "5", "0", "0") == "EINVAL"

    def test_control_harmless_commands(self, connect):
        dom0 = connect()
        assert dom0.ok(Op.CONTROL, "check") == b"OK\0"
        assert b"print" in dom0.ok(Op.CONTROL, "help")
        assert dom0.error(Op.CONTROL, "live-update", "-s") == "EINVAL"

    def test_release_fires_release_domain_and_drops_the_guest(self, xenstored, connect):
        dom0, guest2 = connect(), connect(2)
        assert guest2.read("domid") == b"2"
        dom0.ok(Op.WATCH, "@releaseDomain", "rel")
        assert dom0.event() == ("@releaseDomain", "rel")
        dom0.send(encode(Op.RELEASE, 0, 0, b"2\0"))
        assert dom0.next_packet() == Packet(Op.WATCH_EVENT, 0, 0, b"@releaseDomain\0rel\0")
        assert dom0.next_packet() == Packet(Op.RELEASE, 0, 0, b"OK\0")
        assert guest2.closed_by_server()
        late = RawConnection(xenstored.guest_socket(2))
        try:
            assert late.closed_by_server()
        finally:
            late.close()
        assert dom0.ok(Op.IS_DOMAIN_INTRODUCED, "2") == b"F\0"

    def test_introduce_fires_introduce_domain_and_opens_a_guest_socket(self, xenstored, connect):
        dom0 = connect()
        dom0.ok(Op.WATCH, "@introduceDomain", "intro")
        assert dom0.event() == ("@introduceDomain", "intro")
        dom0.ok(Op.INTRODUCE, "5", "1234", "7")
        assert dom0.event() == ("@introduceDomain", "intro")
        guest5 = RawConnection(xenstored.guest_socket(5))
        try:
            assert guest5.ok(Op.GET_DOMAIN_PATH, "5") == b"/local/domain/5\0"
            assert guest5.error(Op.READ, "anything") == "EACCES"  # no home yet: / is n0
        finally:
            guest5.close()

    def test_reset_watches_drops_watches_and_transactions(self, connect):
        dom0 = connect()
        dom0.ok(Op.WATCH, "/r", "t")
        dom0.event()
        tx = int(dom0.ok(Op.TRANSACTION_START, "")[:-1])
        dom0.ok(Op.RESET_WATCHES)
        assert dom0.error(Op.READ, "/r", tx_id=tx) == "ENOENT"
        assert dom0.write("/r", b"1").type == Op.WRITE
        assert not dom0.events


class TestWatchEvents:
    def test_watch_ack_comes_before_the_initial_event(self, connect):
        dom0 = connect()
        dom0.send(encode(Op.WATCH, 0, 0, join_strings("/nothing", "tok")))
        assert dom0.next_packet() == Packet(Op.WATCH, 0, 0, b"OK\0")
        assert dom0.next_packet() == Packet(Op.WATCH_EVENT, 0, 0, b"/nothing\0tok\0")

    def test_events_a_request_causes_precede_its_reply(self, connect):
        dom0 = connect()
        dom0.ok(Op.WATCH, "/w", "t")
        dom0.event()
        dom0.send(encode(Op.WRITE, 0, 0, b"/w/x\0v"))
        assert dom0.next_packet() == Packet(Op.WATCH_EVENT, 0, 0, b"/w/x\0t\0")
        assert dom0.next_packet() == Packet(Op.WRITE, 0, 0, b"OK\0")

    def test_guest_relative_watch_sees_host_messages(self, connect):
        dom0, guest = connect(), connect(1)
        guest.ok(Op.WATCH, TO_GUEST + "/last-write", "lw")
        assert guest.event() == (TO_GUEST + "/last-write", "lw")
        dom0.write("/local/domain/1/%s/1" % TO_GUEST, b"com.example.key")
        dom0.write("/local/domain/1/%s/1/0" % TO_GUEST, b"value")
        dom0.write("/local/domain/1/%s/last-write" % TO_GUEST, b"1")
        assert guest.event() == (TO_GUEST + "/last-write", "lw")
        assert guest.read(TO_GUEST + "/last-write") == b"1"

    def test_transaction_events_fire_at_commit(self, connect):
        watcher, writer = connect(), connect()
        writer.ok(Op.MKDIR, "/tx")
        writer.ok(Op.MKDIR, "/marker")
        watcher.ok(Op.WATCH, "/tx", "t")
        watcher.ok(Op.WATCH, "/marker", "m")
        assert [watcher.event(), watcher.event()] == [("/tx", "t"), ("/marker", "m")]
        tx = int(writer.ok(Op.TRANSACTION_START, "")[:-1])
        writer.write("/tx/a", b"1", tx_id=tx)
        writer.write("/marker", b"outside the transaction")
        writer.ok(Op.TRANSACTION_END, "T", tx_id=tx)
        # The marker's event comes first: the transaction's write fired only at commit.
        assert [watcher.event(), watcher.event()] == [("/marker", "m"), ("/tx/a", "t")]

    def test_guest_gets_no_events_for_nodes_it_cannot_read(self, connect):
        guest1, guest2 = connect(1), connect(2)
        guest1.ok(Op.WATCH, "/local/domain/2/data", "spy")
        assert guest1.event() == ("/local/domain/2/data", "spy")  # registration fires
        guest1.ok(Op.WATCH, "data", "mine")
        assert guest1.event() == ("data", "mine")
        guest2.write("data/secret", b"x")
        guest1.write("data/own", b"y")  # this event proves the spy event was never sent
        assert guest1.event() == ("data/own", "mine")


class TestTransactionsOverTheWire:
    def test_commit_conflict_and_abort(self, connect):
        a, b = connect(), connect()
        a.write("/c", b"1")
        tx = int(a.ok(Op.TRANSACTION_START, "")[:-1])
        assert a.read("/c", tx_id=tx) == b"1"
        a.write("/c", b"2", tx_id=tx)
        b.write("/c", b"3")
        assert a.error(Op.TRANSACTION_END, "T", tx_id=tx) == "EAGAIN"
        assert a.error(Op.READ, "/c", tx_id=tx) == "ENOENT"
        assert b.read("/c") == b"3"
        tx = int(a.ok(Op.TRANSACTION_START, "")[:-1])
        a.write("/c", b"4", tx_id=tx)
        a.ok(Op.TRANSACTION_END, "F", tx_id=tx)
        assert b.read("/c") == b"3"

    def test_transaction_end_needs_t_or_f(self, connect):
        dom0 = connect()
        tx = int(dom0.ok(Op.TRANSACTION_START, "")[:-1])
        assert dom0.error(Op.TRANSACTION_END, "X", tx_id=tx) == "EINVAL"
        assert dom0.error(Op.TRANSACTION_END, "T") == "ENOENT"
        assert dom0.ok(Op.TRANSACTION_END, "T", tx_id=tx) == b"OK\0"


class TestGuestPermissions:
    def test_guest_cannot_read_or_write_another_domains_nodes(self, connect):
        guest1 = connect(1)
        assert guest1.error(Op.READ, "/local/domain/2/name") == "EACCES"
        assert guest1.error(Op.WRITE, "/local/domain/2/data/x") == "EACCES"
        assert guest1.error(Op.DIRECTORY, "/local/domain/2") == "EACCES"
        assert guest1.error(Op.RM, "/local/domain/2/" + FROM_GUEST) == "EACCES"
        assert guest1.error(Op.READ, "/local/domain/0/name") == "EACCES"
        assert guest1.error(Op.WRITE, "name") == "EACCES"

    def test_guest_reads_and_deletes_messages_and_writes_replies(self, connect):
        dom0, guest = connect(), connect(1)
        dom0.write("/local/domain/1/%s/1" % TO_GUEST, b"com.example.key")
        dom0.write("/local/domain/1/%s/1/0" % TO_GUEST, b"piece")
        assert guest.read(TO_GUEST + "/1") == b"com.example.key"
        assert guest.ok(Op.RM, TO_GUEST + "/1") == b"OK\0"
        assert dom0.error(Op.READ, "/local/domain/1/%s/1/0" % TO_GUEST) == "ENOENT"
        guest.write(FROM_GUEST + "/1", b"reply.key")
        guest.write(FROM_GUEST + "/last-write", b"1")
        assert dom0.read("/local/domain/1/%s/1" % FROM_GUEST) == b"reply.key"
        assert dom0.ok(Op.GET_PERMS, "/local/domain/1/%s/1" % FROM_GUEST) == b"n1\0"

    def test_guest_cannot_delete_a_message_the_host_kept_read_only(self, connect):
        dom0, guest = connect(), connect(1)
        dom0.write("/local/domain/1/%s/2" % TO_GUEST, b"k")
        dom0.ok(Op.SET_PERMS, "/local/domain/1/%s/2" % TO_GUEST, "n0", "r1")
        assert guest.error(Op.RM, TO_GUEST + "/2") == "EACCES"
        assert dom0.read("/local/domain/1/%s/2" % TO_GUEST) == b"k"


class TestProcess:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_stops_cleanly_and_removes_its_sockets(self, signum):
        socket_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
        server = start_xenstored(socket_dir, {3: "three"})
        try:
            conn = RawConnection(server.dom0_socket)
            assert conn.read("/local/domain/3/name") == b"three"
            server.process.send_signal(signum)
            assert server.process.wait(10) == 0
            conn.close()
            assert not os.path.exists(server.dom0_socket)
            assert not os.path.exists(server.guest_socket(3))
        finally:
            server.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)

    def test_runs_as_a_module_and_prints_ready(self):
        socket_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
        process = subprocess.Popen(
            [sys.executable, "-m", "ovmd.xenstore.server", "--socket-dir", str(socket_dir),
             "--quiet"], cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        try:
            assert process.stdout.readline() == "ready\n"
            conn = RawConnection(str(socket_dir / "socket"))
            assert conn.read("/local/domain/0/domid") == b"0"
            conn.close()
        finally:
            process.terminate()
            process.wait(10)
            shutil.rmtree(socket_dir, ignore_errors=True)
        assert process.returncode == 0

    def test_help_and_bad_domain_argument(self):
        command = bin_path("ovmd-xenstored")
        helped = subprocess.run([command, "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and "--domain" in helped.stdout
        bad = subprocess.run([command, "--socket-dir", "/tmp/unused", "--domain", "x:y"],
                             capture_output=True, text=True)
        assert bad.returncode == 2 and "ID[:NAME[:UUID]]" in bad.stderr
        bad_uuid = subprocess.run([command, "--socket-dir", "/tmp/unused", "--domain",
                                   "1:guest1:not-a-uuid"], capture_output=True, text=True)
        assert bad_uuid.returncode == 2 and "'not-a-uuid' is not a UUID" in bad_uuid.stderr

    def test_a_domain_given_a_uuid_is_that_vm(self):
        socket_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
        vm_uuid = "0004fb00-0006-0000-4ea4-7f5c0ba2b2c3"  # as Oracle VM Manager names VMs
        server = start_xenstored(socket_dir, {1: "guest1:" + vm_uuid})
        try:
            conn = RawConnection(server.guest_socket(1))
            try:
                assert conn.read("vm") == ("/vm/" + vm_uuid).encode()
                assert conn.read("/vm/%s/uuid" % vm_uuid) == vm_uuid.encode()
            finally:
                conn.close()
        finally:
            server.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)

    def test_refuses_a_socket_another_server_listens_on(self, xenstored):
        process = subprocess.run(
            [bin_path("ovmd-xenstored"), "--socket-dir", str(xenstored.socket_dir)],
            capture_output=True, text=True, timeout=10)
        assert process.returncode == 1
        assert "another server is listening" in process.stderr
        conn = RawConnection(xenstored.dom0_socket)
        try:
            assert conn.read("/local/domain/1/domid") == b"1"
        finally:
            conn.close()

    def test_verbose_log_names_paths_but_never_values(self):
        socket_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
        server = start_xenstored(socket_dir, {1: "guest1"}, extra_args=["--verbose"])
        try:
            conn = RawConnection(server.dom0_socket)
            conn.write("/local/domain/1/control/oracle-vmapi/to-guest/1/0", b"S3cret-pw")
            assert conn.read("/local/domain/1/control/oracle-vmapi/to-guest/1/0") == b"S3cret-pw"
            conn.close()
            assert server.stop() == 0
            log = server.process.stderr.read()
        finally:
            server.stop()
            shutil.rmtree(socket_dir, ignore_errors=True)
        assert "WRITE tx=0 '/local/domain/1/control/oracle-vmapi/to-guest/1/0'" in log
        assert "S3cret" not in log
