"""The host->guest channel end to end: ovmd-xenstored, the real daemon, and two hosts
(our ovm-vmmessage HostChannel, and Debian's xenstore-write/-chmod, independent of our
code)."""
from __future__ import annotations

import json
import subprocess
import threading

import pytest
from daemon_helpers import CHANNEL, GUEST, to_guest_numbers, wait_consumed
from testlib import require_tool, start_xenstored

from ovmd.channel import (
    MessageError,
    check_message,
    event_names,
    parse_number,
    printable,
    split_value,
)
from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreClient


def debian_host(xenstored, *commands):
    """Run Debian's xenstore tools against the dev server's dom0 socket."""
    for argv in commands:
        tool = require_tool(argv[0])
        subprocess.run([tool] + list(argv[1:]), env=xenstored.env, check=True, timeout=30)


def debian_send(xenstored, number, key, pieces, counter=None):
    """Write one message in Oracle's safe order with Debian's tools (no transaction)."""
    node = "%s/to-guest/%d" % (CHANNEL, number)
    commands = []
    for index, piece in enumerate(pieces):
        commands.append(["xenstore-write", "%s/%d" % (node, index), piece])
    commands.append(["xenstore-write", node, key])
    commands.append(["xenstore-chmod", "-r", node, "n0", "b%d" % GUEST])
    commands.append(["xenstore-chmod", "%s/to-guest" % CHANNEL, "n0", "r%d" % GUEST])
    commands.append(["xenstore-write", "%s/to-guest/last-write" % CHANNEL,
                     str(number if counter is None else counter)])
    debian_host(xenstored, *commands)


class TestLimits:
    def test_pieces_are_at_most_2048_bytes_and_never_split_a_character(self):
        raw = ("é" * 3000).encode("utf-8")
        pieces = split_value(raw)
        assert all(len(p) <= 2048 for p in pieces)
        assert b"".join(pieces) == raw
        assert all(p.decode("utf-8") for p in pieces)

    @pytest.mark.parametrize("key,value", [
        ("", "v"), ("k" * 257, "v"), ("k", ""), ("k", "x" * 8193), ("a\nb", "v")])
    def test_out_of_limits_is_rejected_without_showing_the_value(self, key, value):
        with pytest.raises(MessageError) as info:
            check_message(key, value)
        if value:
            assert value[:20] not in str(info.value) or len(value) < 8

    def test_limits_inclusive(self):
        check_message("k" * 256, "x" * 8192)

    @pytest.mark.parametrize("key, value, reason", [
        ("com.x.\udcff", "v", "key 'com.x.\\udcff' is not valid UTF-8"),
        ("com.x.k", "caf\udce9", "the value of 'com.x.k' is not valid UTF-8"),
    ])
    def test_text_that_is_not_utf8_is_refused(self, key, value, reason):
        with pytest.raises(MessageError) as info:
            check_message(key, value)
        assert str(info.value) == reason


class TestValues:
    @pytest.mark.parametrize("text, number", [
        ("8", 8), ("0777", 777), (" 64 ", 64), ("0x10", 16), ("0XfF", 255),
        ("1000000000000", 10 ** 12), ("9" * 20, 10 ** 20 - 1),
        ("9" * 21, None), ("9" * 5000, None),  # more than 20 digits: not a counter
        ("0xZZ", None), ("0x", None), ("\u00b2", None), ("\u0663", None),  # ² and ٣
        ("-1", None), ("1e5", None), ("", None), ("0x" + "f" * 17, None), ("\udcff", None),
    ])
    def test_counters_and_event_values_are_parsed_strictly(self, text, number):
        assert parse_number(text) == number

    @pytest.mark.parametrize("value, names", [
        ("8", ["reconfig"]), ("0x41", ["snapshot", "new-param"]),
        ("0777", ["snapshot", "reconfig"]),  # decimal 777 = 0x309, not octal
        ("0xZZ", []), ("\u00b2", []), ("9" * 5000, []),
    ])
    def test_event_names(self, value, names):
        assert event_names(value) == names

    @pytest.mark.parametrize("text, shown", [
        ("com.example.key", "com.example.key"),
        ("caf\u00e9", "caf\u00e9"),                         # printable non-ASCII kept
        ("cr\rlf\n", "cr\\rlf\\n"),
        ("\x1b[2J", "\\x1b[2J"),
        ("\udcff", "\\udcff"),                             # a byte that was not UTF-8
        ("x" * 70, "x" * 64 + "..."),
    ])
    def test_printable_escapes_what_a_log_line_must_not_hold(self, text, shown):
        assert printable(text, 64) == shown


class TestReceiving:
    @pytest.mark.parametrize("size", [1, 2047, 2048, 2049, 4096, 8192])
    def test_values_in_pieces_arrive_whole(self, ovmd, host, dom0, size):
        value = "".join(chr(ord("a") + i % 26) for i in range(size))
        number = host.send([("com.example.sized", value)])
        wait_consumed(dom0, number)
        result = ovmd.cli("-g", "com.example.sized")
        assert result.returncode == 0
        assert result.stdout == value + "\n"

    def test_messages_waiting_before_start_are_consumed_at_start_up(
            self, ovmd_factory, host, dom0):
        host.send([("com.example.k%d" % i, "v%d" % i) for i in range(20)])
        daemon = ovmd_factory()  # READY=1 means: watch registered, waiting messages stored
        assert to_guest_numbers(dom0) == []
        listed = [json.loads(line) for line in daemon.cli("-l").stdout.splitlines()]
        assert listed == [{"com.example.k%d" % i: "v%d" % i}
                          for i in sorted(range(20), key=lambda i: "com.example.k%d" % i)]

    def test_a_repeated_key_keeps_the_last_value(self, ovmd, host, dom0):
        number = host.send([("com.example.x", "1"), ("com.example.x", "2")])
        wait_consumed(dom0, number)
        assert ovmd.cli("-g", "com.example.x").stdout == "2\n"

    def test_burst_of_10000_messages_none_lost(self, ovmd, host, dom0):
        messages = [("com.example.burst.%05d" % i, "value-%d" % i) for i in range(10000)]
        number = host.send(messages)
        wait_consumed(dom0, number, timeout=120)
        assert to_guest_numbers(dom0) == []
        listed = ovmd.cli("-l").stdout.splitlines()
        assert listed == [json.dumps({k: v}) for k, v in messages]

    def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(
            self, ovmd_factory, xenstored, dom0):
        daemon = ovmd_factory()
        messages = [("com.example.kill.%05d" % i, "v%d" % i) for i in range(4000)]
        sender_client = XenStoreClient.open(xenstored.dom0_socket)
        sender = threading.Thread(target=HostChannel(sender_client, GUEST).send,
                                  args=(messages,))
        sender.start()
        try:
            wait_consumed(dom0, 300)      # the daemon is consuming while the host sends
            daemon.kill()                 # SIGKILL mid-stream
        finally:
            sender.join(120)
            sender_client.close()
        assert to_guest_numbers(dom0), "the burst should still be partly pending"
        restarted = ovmd_factory()
        wait_consumed(dom0, len(messages))
        assert to_guest_numbers(dom0) == []
        listed = restarted.cli("-l").stdout.splitlines()
        assert listed == [json.dumps({k: v}) for k, v in messages]

    def test_counter_reset_after_resume_is_normal(self, ovmd, host, dom0):
        number = host.send([("com.example.before", "1")] * 1 + [("com.example.b2", "2")])
        wait_consumed(dom0, number)
        # after save/restore the toolstack's counter starts again at 0
        dom0.write("%s/to-guest/last-write" % CHANNEL, "0")
        number = host.send([("com.example.after", "3")])
        assert number == 1
        wait_consumed(dom0, number)
        assert ovmd.cli("-g", "com.example.after").stdout == "3\n"
        assert "counter went back" in ovmd.log_text()

    def test_vmapi_event_is_recorded_not_stored(self, ovmd, host, dom0):
        number = host.send([("VMAPIEvent", "8")])
        wait_consumed(dom0, number)
        assert ovmd.cli("-g", "VMAPIEvent").returncode == 1
        status = json.loads(ovmd.cli("--status", "--json").stdout)
        assert status["events"][-1]["names"] == ["reconfig"]


class TestDebianHost:
    """Debian's xenstore-write/-chmod play the host: our code is not on that side."""

    def test_a_message_written_with_debian_tools(self, ovmd, xenstored, dom0):
        value = "p" * 2048 + "q" * 100
        debian_send(xenstored, 1, "com.example.debian", [value[:2048], value[2048:]])
        wait_consumed(dom0, 1)
        assert ovmd.cli("-g", "com.example.debian").stdout == value + "\n"

    def test_oversized_value_is_skipped_deleted_and_not_logged(self, ovmd, xenstored, dom0):
        secret_like = "Z" * 2048
        debian_send(xenstored, 1, "com.example.huge", [secret_like] * 4 + ["Z"])  # 8193 bytes
        debian_send(xenstored, 2, "com.example.after", ["fine"])
        wait_consumed(dom0, 2)
        assert to_guest_numbers(dom0) == []
        assert ovmd.cli("-g", "com.example.huge").returncode == 1
        assert ovmd.cli("-g", "com.example.after").stdout == "fine\n"
        log = ovmd.log_text()
        assert "com.example.huge" in log and "8193" in log
        assert "ZZZZZZZZ" not in log

    def test_malformed_nodes_never_stop_the_channel(self, ovmd, xenstored, dom0):
        node = "%s/to-guest" % CHANNEL
        debian_host(
            xenstored,
            # message 1: pieces 0 and 2, piece 1 missing
            ["xenstore-write", node + "/1/0", "a", node + "/1/2", "c", node + "/1", "com.x.gap"],
            # message 2: a non-numeric piece
            ["xenstore-write", node + "/2/zero", "a", node + "/2", "com.x.named"],
            # message 3: no value at all
            ["xenstore-write", node + "/3", "com.x.empty"],
            # a node that is not a message number
            ["xenstore-write", node + "/junk", "x"],
            ["xenstore-chmod", "-r", node, "n0", "b%d" % GUEST],
        )
        debian_send(xenstored, 4, "com.x.good", ["ok"])
        wait_consumed(dom0, 4)
        for key in ("com.x.gap", "com.x.named", "com.x.empty"):
            assert ovmd.cli("-g", key).returncode == 1
        assert ovmd.cli("-g", "com.x.good").stdout == "ok\n"
        assert to_guest_numbers(dom0) == []
        log = ovmd.log_text()
        assert "missing value pieces" in log and "non-numeric" in log and "empty" in log

    def test_non_numeric_counter_then_recovery(self, ovmd, xenstored, dom0):
        debian_send(xenstored, 1, "com.x.first", ["1"], counter="garbage")
        wait_consumed(dom0, 1, counter=False)
        assert ovmd.cli("-g", "com.x.first").stdout == "1\n"
        debian_send(xenstored, 2, "com.x.second", ["2"])
        wait_consumed(dom0, 2)
        assert ovmd.cli("-g", "com.x.second").stdout == "2\n"
        assert "not a number" in ovmd.log_text()


class TestSending:
    def test_set_param_reaches_the_host_in_pieces(self, ovmd, host, xenstored):
        value = "s" * 5000
        assert ovmd.cli("-p", "com.example.back=" + value).returncode == 0
        assert host.received()["com.example.back"] == value
        node = "%s/from-guest/1" % CHANNEL
        env = xenstored.env
        assert subprocess.run([require_tool("xenstore-read"), node], env=env,
                              capture_output=True, text=True).stdout.strip() == "com.example.back"
        pieces = subprocess.run([require_tool("xenstore-list"), node], env=env,
                                capture_output=True, text=True).stdout.split()
        assert pieces == ["0", "1", "2"]
        assert subprocess.run([require_tool("xenstore-read"), CHANNEL + "/from-guest/last-write"],
                              env=env, capture_output=True, text=True).stdout.strip() == "1"

    def test_oversized_set_param_is_a_clear_cli_error(self, ovmd):
        result = ovmd.cli("-p", "com.example.big=" + "x" * 8193)
        assert result.returncode == 1
        assert "8193 bytes" in result.stderr and "8192" in result.stderr
        assert ovmd.cli("-g", "com.example.big").returncode == 1


class TestOvmapi:
    def test_refuses_to_start_when_oracles_module_is_loaded(self, ovmd_factory, root):
        (root / "sys/module/ovmapi").mkdir(parents=True)  # what a loaded UEK module shows
        daemon = ovmd_factory(start=False)
        daemon.start(wait_ready=False)
        assert daemon.process.wait(20) == 1
        log = daemon.log_text()
        assert "ovmapi" in log and "rmmod ovmapi" in log


class TestReconnect:
    def test_reconnects_after_the_xenstore_server_restarts(self, ovmd, xenstored):
        # The development server keeps its store in memory: a restart is a new, empty
        # store at the same socket, as after xenstored itself is restarted.
        assert xenstored.stop() == 0
        restarted = start_xenstored(xenstored.socket_dir, xenstored.domains)
        xenstored.process = restarted.process  # the fixture stops it at the end
        with XenStoreClient.open(xenstored.dom0_socket) as client:
            number = HostChannel(client, GUEST).send([("com.example.again", "yes")])
            wait_consumed(client, number)  # the daemon's reconnect timer fired
        assert ovmd.cli("-g", "com.example.again").stdout == "yes\n"
        assert ovmd.process.poll() is None
        log = ovmd.log_text()
        assert "lost the XenStore connection" in log and "connected to XenStore again" in log
