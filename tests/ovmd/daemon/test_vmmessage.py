"""``ovm-vmmessage``, the host side, as a process against the development XenStore;
Debian's xenstore tools check the layout it writes."""
from __future__ import annotations

import json
import subprocess

from daemon_helpers import CHANNEL, wait_consumed
from testlib import bin_path, require_tool


def vmmessage(xenstored, *args, input=None, timeout=60):
    return subprocess.run([bin_path("ovm-vmmessage"), "--xenstore", xenstored.dom0_socket]
                          + list(args), input=input, capture_output=True, text=True,
                          timeout=timeout)


def xs(xenstored, tool, *args):
    return subprocess.run([require_tool(tool)] + list(args), env=xenstored.env,
                          capture_output=True, text=True, timeout=30)


class TestSending:
    def test_layout_and_permissions_by_name(self, xenstored):
        value = "v" * 3000
        result = vmmessage(xenstored, "-d", "guest1", "-k", "com.example.k", "-V", value)
        assert result.returncode == 0, result.stderr
        node = CHANNEL + "/to-guest/1"
        assert xs(xenstored, "xenstore-read", node).stdout.strip() == "com.example.k"
        assert xs(xenstored, "xenstore-list", node).stdout.split() == ["0", "1"]
        assert xs(xenstored, "xenstore-read", node + "/0").stdout.strip() == "v" * 2048
        assert xs(xenstored, "xenstore-read", CHANNEL + "/to-guest/last-write").stdout.strip() \
            == "1"
        # the guest may read and delete its messages, and write its replies
        perms = xs(xenstored, "xenstore-ls", "-p", CHANNEL).stdout
        assert "(n0,b1)" in perms and "(n0,r1)" in perms

    def test_value_from_stdin_keeps_it_off_argv(self, ovmd, xenstored, dom0):
        result = vmmessage(xenstored, "-d", "1", "-k", "com.oracle.linux.root-password",
                           "-V", "-", input="from-stdin\n")
        assert result.returncode == 0, result.stderr
        wait_consumed(dom0, 1)
        assert ovmd.cli("-g", "com.oracle.linux.root-password").stdout == "from-stdin\n"

    def test_batch_in_order_both_shapes(self, ovmd, xenstored, dom0):
        lines = "\n".join([json.dumps({"key": "com.example.a", "value": "1"}),
                           json.dumps({"com.example.b": "2", "com.example.a": "3"}), ""])
        result = vmmessage(xenstored, "-d", "guest1", "--batch", "-", input=lines)
        assert result.returncode == 0, result.stderr
        wait_consumed(dom0, 3)
        assert ovmd.cli("-l").stdout == '{"com.example.a": "3"}\n{"com.example.b": "2"}\n'

    def test_rejects_oversized_and_unknown_domains(self, xenstored):
        big = vmmessage(xenstored, "-d", "1", "-k", "k", "-V", "x" * 8193)
        assert big.returncode == 1 and "8192" in big.stderr and "xxxx" not in big.stderr
        unknown = vmmessage(xenstored, "-d", "nosuch", "-k", "k", "-V", "v")
        assert unknown.returncode == 1 and "no domain named 'nosuch'" in unknown.stderr
        assert vmmessage(xenstored, "-d", "1", "-k", "k").returncode == 2

    def test_guest_can_consume_what_debian_sees(self, ovmd, xenstored, dom0):
        assert vmmessage(xenstored, "-d", "guest1", "-k", "com.a", "-V", "1").returncode == 0
        wait_consumed(dom0, 1)
        assert xs(xenstored, "xenstore-list", CHANNEL + "/to-guest").stdout.split() \
            == ["last-write"]


class TestReading:
    def test_query_list_and_wait(self, ovmd, xenstored):
        missing = vmmessage(xenstored, "-d", "guest1", "-q", "com.guest.a")
        assert missing.returncode == 1
        ovmd.cli("-p", "com.guest.a=1", check=True)
        ovmd.cli("-p", "com.guest.b=2", check=True)
        ovmd.cli("-p", "com.guest.a=3", check=True)
        assert vmmessage(xenstored, "-d", "guest1", "-q", "com.guest.a").stdout == "3\n"
        assert vmmessage(xenstored, "-d", "1", "-l").stdout \
            == '{"com.guest.a": "3"}\n{"com.guest.b": "2"}\n'

        waiter = subprocess.Popen(
            [bin_path("ovm-vmmessage"), "--xenstore", xenstored.dom0_socket, "-d", "guest1",
             "--wait", "com.guest.later", "--timeout", "60"], stdout=subprocess.PIPE, text=True)
        ovmd.cli("-p", "com.guest.later=yes", check=True)
        out, _ = waiter.communicate(timeout=60)
        assert waiter.returncode == 0 and out == "yes\n"

    def test_wait_times_out(self, xenstored):
        result = vmmessage(xenstored, "-d", "guest1", "--wait", "com.never", "--timeout", "0.3")
        assert result.returncode == 1 and "timed out" in result.stderr

    def test_wait_new_ignores_an_older_value(self, ovmd, xenstored):
        ovmd.cli("-p", "com.guest.s=old", check=True)
        result = vmmessage(xenstored, "-d", "guest1", "--wait", "com.guest.s", "--new",
                           "--timeout", "0.5")
        assert result.returncode == 1 and "timed out" in result.stderr
        assert vmmessage(xenstored, "-d", "guest1", "--wait", "com.guest.s").stdout == "old\n"
