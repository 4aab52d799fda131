"""Debian's xenstore-utils, an independent real client, against ``ovmd-xenstored``.

The tools reach the privileged socket through ``XENSTORED_PATH`` (docs/protocol.md). Their
output and exit codes are libxenstore's view of our server; the watch sequences are the
events a real toolstack and guest would see.
"""
from __future__ import annotations

import re
import socket
import subprocess
from typing import List

import pytest
from testlib import require_tool

from ovmd.xenstore.protocol import Op, PacketParser, encode

HOME1 = "/local/domain/1"
TO_GUEST1 = HOME1 + "/control/oracle-vmapi/to-guest"


def tool(xenstored, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([require_tool(name)] + list(args), env=xenstored.env,
                            capture_output=True, text=True, timeout=30)
    if check:
        assert result.returncode == 0, "%s %s: %s" % (name, args, result.stderr)
    return result


def lines(result: subprocess.CompletedProcess) -> List[str]:
    return result.stdout.splitlines()


class Watcher:
    """``xenstore-watch -n COUNT PATH``: started, then awaited until it registered."""

    def __init__(self, xenstored, path: str, count: int) -> None:
        self.process = subprocess.Popen(
            [require_tool("xenstore-watch"), "-n", str(count), path], env=xenstored.env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # The first event is the one every watch fires on registration: once it is
        # printed the watch is in place, so later writes cannot be missed.
        self.first = self.process.stdout.readline().rstrip("\n")

    def rest(self) -> List[str]:
        out, err = self.process.communicate(timeout=30)
        assert self.process.returncode == 0, err
        return out.splitlines()


def test_write_read_and_exists(xenstored):
    tool(xenstored, "xenstore-write", "/test/a", "hello world", "/test/b", "")
    assert lines(tool(xenstored, "xenstore-read", "/test/a", "/test/b")) == ["hello world", ""]
    assert tool(xenstored, "xenstore-exists", "/test/a").returncode == 0
    assert tool(xenstored, "xenstore-exists", "/test/nope", check=False).returncode == 1
    missing = tool(xenstored, "xenstore-read", "/test/nope", check=False)
    assert missing.returncode == 1 and "/test/nope" in missing.stderr


def test_relative_paths_are_dom0s_home(xenstored):
    tool(xenstored, "xenstore-write", "mykey", "v")
    assert lines(tool(xenstored, "xenstore-read", "/local/domain/0/mykey")) == ["v"]


def test_list_and_ls_show_the_guest_home_as_a_toolstack_made_it(xenstored):
    assert lines(tool(xenstored, "xenstore-list", HOME1)) == [
        "vm", "domid", "name", "control", "data", "attr"]
    assert lines(tool(xenstored, "xenstore-ls", "-f", "-p", HOME1 + "/control")) == [
        HOME1 + '/control/oracle-vmapi = ""   (n0,r1)',
        TO_GUEST1 + ' = ""   (n0,b1)',
        HOME1 + '/control/oracle-vmapi/from-guest = ""   (n1)',
    ]
    assert lines(tool(xenstored, "xenstore-read", HOME1 + "/name", "/local/domain/2/domid")) == [
        "guest1", "2"]


def test_the_vm_path_is_as_libxl_writes_it(xenstored):
    """``vm`` names the VM's directory ``/vm/<uuid>``, which holds its ``uuid`` and
    ``name``; dom0 owns them, the guest may read them (libxl's read-only set)."""
    home = lines(tool(xenstored, "xenstore-ls", "-f", "-p", HOME1))
    vm_path = lines(tool(xenstored, "xenstore-read", HOME1 + "/vm"))[0]
    assert re.fullmatch(r"/vm/[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", vm_path), vm_path
    assert home[0] == HOME1 + '/vm = "%s"   (n0,r1)' % vm_path
    assert lines(tool(xenstored, "xenstore-ls", "-f", "-p", vm_path)) == [
        vm_path + '/uuid = "%s"   (n0,r1)' % vm_path[len("/vm/"):],
        vm_path + '/name = "guest1"   (n0,r1)',
    ]
    other = lines(tool(xenstored, "xenstore-read", "/local/domain/2/vm"))[0]
    assert other != vm_path  # each domain is its own VM


def test_rm_removes_subtrees_and_tolerates_a_missing_leaf(xenstored):
    tool(xenstored, "xenstore-write", "/r/a/b", "1", "/r/c", "2")
    tool(xenstored, "xenstore-rm", "/r/a")
    assert lines(tool(xenstored, "xenstore-list", "/r")) == ["c"]
    assert tool(xenstored, "xenstore-rm", "/r/missing").returncode == 0
    deep = tool(xenstored, "xenstore-rm", "/r/missing/deeper", check=False)
    assert deep.returncode == 1


def test_chmod_sets_permissions_that_ls_shows(xenstored):
    tool(xenstored, "xenstore-write", "/perm/x", "1")
    tool(xenstored, "xenstore-chmod", "/perm/x", "n1", "r2")
    assert lines(tool(xenstored, "xenstore-ls", "-p", "/perm")) == [
        'x = "1"  . . . . . . . . . . . . . . . . . . . . . . . . . .  (n1,r2)']
    tool(xenstored, "xenstore-chmod", "-r", "/perm", "b3")
    assert "(b3)" in tool(xenstored, "xenstore-ls", "-p", "/perm").stdout


def test_watch_sequence_of_a_host_message(xenstored):
    """The host writes one message as Oracle's layout does; a watcher on to-guest sees
    each node in order, the counter last."""
    watcher = Watcher(xenstored, TO_GUEST1, 5)
    assert watcher.first == TO_GUEST1
    tool(xenstored, "xenstore-write", TO_GUEST1 + "/1", "com.oracle.linux.network.hostname")
    tool(xenstored, "xenstore-write", TO_GUEST1 + "/1/0", "clone1")
    tool(xenstored, "xenstore-write", TO_GUEST1 + "/last-write", "1")
    tool(xenstored, "xenstore-rm", TO_GUEST1 + "/1")
    assert watcher.rest() == [
        TO_GUEST1 + "/1", TO_GUEST1 + "/1/0", TO_GUEST1 + "/last-write", TO_GUEST1 + "/1"]


def test_watch_fires_on_registration_for_a_missing_node_and_on_rm_of_an_ancestor(xenstored):
    watcher = Watcher(xenstored, "/w/node", 3)
    assert watcher.first == "/w/node"
    tool(xenstored, "xenstore-write", "/w/node/child", "x")
    tool(xenstored, "xenstore-rm", "/w")
    assert watcher.rest() == ["/w/node/child", "/w/node"]


def test_watch_of_a_relative_path_reports_relative_paths(xenstored):
    watcher = Watcher(xenstored, "rel", 2)
    assert watcher.first == "rel"
    tool(xenstored, "xenstore-write", "/local/domain/0/rel/x", "1")
    assert watcher.rest() == ["rel/x"]


def test_watch_release_domain(xenstored):
    """``xenstore-watch`` on ``@releaseDomain`` sees the release of a guest; the RELEASE
    itself is sent with a raw request (the tools have no command for it)."""
    watcher = Watcher(xenstored, "@releaseDomain", 2)
    assert watcher.first == "@releaseDomain"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(xenstored.dom0_socket)
        sock.sendall(encode(Op.RELEASE, 0, 0, b"2\0"))
        parser, packets = PacketParser(), []
        while not packets:
            packets = parser.feed(sock.recv(4096))
        assert packets[0].type == Op.RELEASE
    assert watcher.rest() == ["@releaseDomain"]


def test_many_children_are_listed_through_directory_part(xenstored):
    """A directory bigger than one 4096-byte reply: libxenstore falls back to
    DIRECTORY_PART after our E2BIG and must still list every child."""
    names = ["child-%03d-%s" % (i, "z" * 50) for i in range(120)]
    args = []
    for name in names:
        args += ["/big/" + name, "v"]
    tool(xenstored, "xenstore-write", *args)
    assert lines(tool(xenstored, "xenstore-list", "/big")) == names


@pytest.mark.parametrize("bad", ["/a//b", "/trailing/", "/sp ace"])
def test_invalid_paths_are_refused(xenstored, bad):
    result = tool(xenstored, "xenstore-write", bad, "x", check=False)
    assert result.returncode != 0
    assert tool(xenstored, "xenstore-exists", "/a", check=False).returncode == 1
