"""A guest's network for the address reporter's tests and benchmark, and the host's view.

:class:`GuestNetwork` makes two network namespaces, named uniquely per run: the guest's
(the daemon runs in it; it holds the guest ends ``g0``, ``g1``, ... of veth pairs) and the
wire's (the host ends, so that their own addresses and link-local address detection
never reach the guest's netlink socket). Each NIC is listed in the development XenStore
as libxl lists a vif: ``device/`` read-only for the guest, ``device/vif/<devid>`` owned
by the guest with the backend (dom0) reading, ``mac`` inside.

:class:`HostView` is what dom0 sees: ``attr/vif`` and the latest
``com.oracle.linux.network.ipaddrs`` message, and waits for them on XenStore watches.

The idle helpers read ``/proc``: the kernel offers no event for "this process went to
sleep", so :func:`wait_idle` checks every 10 ms, against a deadline.
"""
from __future__ import annotations

import json
import os
import platform
import secrets
import subprocess
import time
from typing import Callable, Dict, List, NamedTuple, Optional

from ovmd.channel import CHANNEL_DIR, FROM_GUEST, LAST_WRITE, read_counter
from ovmd.vifaddrs import KEY
from ovmd.vmmessage import HostChannel
from ovmd.xenstore import XenStoreClient, XenStoreError

#: Generous: a failure is reported after this long, success never waits for it.
DEADLINE = 30.0


def ip(*args: str) -> str:
    """Run ``ip ARGS``; its output (a failure raises, with ip's message)."""
    result = subprocess.run(["ip"] + list(args), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError("ip %s -> %d: %s" % (" ".join(args), result.returncode,
                                                  result.stderr.strip()))
    return result.stdout


class Nic(NamedTuple):
    devid: int
    name: str
    mac: str


class GuestNetwork:
    """Namespaces, veth pairs and the vifs that list them (remove with :meth:`remove`)."""

    def __init__(self, dom0: XenStoreClient, domid: int) -> None:
        self.dom0 = dom0
        self.domid = domid
        self.home = "/local/domain/%d" % domid
        suffix = "%d-%s" % (os.getpid(), secrets.token_hex(3))
        self.guest_ns = "ovip-g-" + suffix
        self.wire_ns = "ovip-w-" + suffix
        self.nics: List[Nic] = []
        self._mac_base = "00:16:3e:%s" % ":".join(secrets.token_hex(1) for _ in range(2))

    def create(self) -> "GuestNetwork":
        ip("netns", "add", self.guest_ns)
        ip("netns", "add", self.wire_ns)
        self.guest("link", "set", "lo", "up")
        return self

    def remove(self) -> None:
        for ns in (self.guest_ns, self.wire_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=60)

    @property
    def exec_prefix(self) -> List[str]:
        """Run a command in the guest's namespace (``ip netns exec`` execs it)."""
        return ["ip", "netns", "exec", self.guest_ns]

    def guest(self, *args: str) -> str:
        """``ip ARGS`` in the guest's namespace."""
        return ip("-n", self.guest_ns, *args)

    def add_nic(self, up: bool = True, vif: bool = True) -> Nic:
        """A new veth pair whose guest end ``g<devid>`` has a fresh MAC, listed as vif
        <devid> (unless ``vif`` is false); up on both ends (unless ``up`` is false)."""
        devid = len(self.nics)
        nic = Nic(devid, "g%d" % devid, "%s:%02x" % (self._mac_base, devid))
        ip("link", "add", "name", nic.name, "netns", self.guest_ns, "address", nic.mac,
           "type", "veth", "peer", "name", "h%d" % devid, "netns", self.wire_ns)
        self.nics.append(nic)
        if up:
            self.set_up(nic, True)
        if vif:
            self.list_vif(nic.devid, nic.mac)
        return nic

    def set_up(self, nic: Nic, up: bool) -> None:
        state = "up" if up else "down"
        ip("-n", self.wire_ns, "link", "set", "h%d" % nic.devid, state)
        self.guest("link", "set", nic.name, state)

    def list_vif(self, devid: int, mac: str) -> None:
        """``device/vif/<devid>`` as libxl writes a vif frontend, in one transaction."""
        domid = str(self.domid)
        device = "%s/device" % self.home
        front = "%s/vif/%d" % (device, devid)

        def write(tx) -> None:
            if not tx.exists(device):
                tx.mkdir(device)
                tx.set_perms(device, ["n0", "r" + domid])
            tx.mkdir(front)
            tx.set_perms(front, ["n" + domid, "r0"])
            for name, value in (("backend-id", "0"), ("handle", str(devid)), ("mac", mac),
                                ("state", "1")):
                tx.write("%s/%s" % (front, name), value)

        self.dom0.transact(write)

    def unlist_vif(self, devid: int) -> None:
        self.dom0.rm("%s/device/vif/%d" % (self.home, devid))


def link_local(mac: str) -> str:
    """The EUI-64 link-local IPv6 address the kernel gives a link with this MAC."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    groups = ["%x" % (eui[i] << 8 | eui[i + 1]) for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)


class HostView:
    """What dom0 sees of one guest's addresses."""

    def __init__(self, dom0: XenStoreClient, domid: int) -> None:
        self.dom0 = dom0
        self.domid = domid
        self.attr_vif = "/local/domain/%d/attr/vif" % domid
        self.channel = HostChannel(dom0, domid)
        self.last_write = "/local/domain/%d/%s/%s/%s" % (domid, CHANNEL_DIR, FROM_GUEST,
                                                         LAST_WRITE)

    def xen(self) -> Dict[str, Dict[str, List[str]]]:
        """``attr/vif``: devid -> {"ipv4": [...], "ipv6": [...]} in the order of <n>."""
        view: Dict[str, Dict[str, List[str]]] = {}
        for devid in self._names(self.attr_vif):
            families = {}
            for family in self._names("%s/%s" % (self.attr_vif, devid)):
                base = "%s/%s/%s" % (self.attr_vif, devid, family)
                numbers = sorted(self._names(base), key=int)
                families[family] = [self.dom0.read("%s/%s" % (base, n)) for n in numbers]
            view[devid] = families
        return view

    def _names(self, path: str) -> List[str]:
        try:
            return self.dom0.directory(path)
        except XenStoreError as err:
            if err.name == "ENOENT":
                return []
            raise

    def oracle(self) -> Optional[Dict[str, List[str]]]:
        """The latest value of the guest's address message, decoded; None if never sent."""
        value = self.channel.received().get(KEY)
        return None if value is None else json.loads(value)

    def sent(self) -> int:
        """How many messages the guest has sent (its ``from-guest/last-write``)."""
        return read_counter(self.dom0, self.channel.base, FROM_GUEST) or 0

    def wait(self, predicate: Callable[[], bool], what: str,
             timeout: float = DEADLINE) -> None:
        """Block on XenStore watches until ``predicate()`` holds."""
        tokens = {self.attr_vif: "view-attr", self.last_write: "view-sent"}
        for path, token in tokens.items():
            self.dom0.watch(path, token)
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.dom0.pending_events()  # forget before re-reading: a new one wakes us
                if predicate():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("the host's view did not show %s within %.0f s; "
                                         "it shows attr/vif %s and message %s"
                                         % (what, timeout, self.xen(), self.oracle()))
                self.dom0.wait_event(remaining)
        finally:
            for path, token in tokens.items():
                self.dom0.unwatch(path, token)
            self.dom0.pending_events()

    def wait_for(self, xen: Dict[str, Dict[str, List[str]]],
                 oracle: Dict[str, List[str]]) -> None:
        """Until ``attr/vif`` and the message are exactly these."""
        self.wait(lambda: self.xen() == xen and self.oracle() == oracle,
                  "attr/vif %s and message %s" % (xen, oracle))


# --- idleness, from /proc -------------------------------------------------------------------

#: (syscall number, index of the timeout argument) of the calls a selectors loop sleeps in.
_SLEEPS = {"x86_64": {232: 3, 281: 3}, "aarch64": {22: 3}}


def context_switches(pid: int) -> int:
    """Voluntary context switches of every thread: one each time it went to sleep."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/status" % (pid, task)) as handle:
            for line in handle:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


def sleeps_without_timeout(pid: int) -> bool:
    """True if the process is blocked in epoll_wait with no timeout: no timer is armed."""
    calls = _SLEEPS.get(platform.machine())
    if calls is None:
        raise AssertionError("no table of epoll syscalls for %s" % platform.machine())
    with open("/proc/%d/syscall" % pid) as handle:
        fields = handle.read().split()
    if not fields or not fields[0].isdigit() or int(fields[0]) not in calls:
        return False
    timeout = int(fields[1 + calls[int(fields[0])]], 16) & 0xFFFFFFFF
    return timeout == 0xFFFFFFFF  # an int -1


def wait_idle(pid: int, woken_since: Optional[int] = None, timeout: float = DEADLINE) -> int:
    """Wait until the daemon sleeps with no timer armed, having gone to sleep at least
    once after the count ``woken_since`` (so it has handled what woke it); returns the
    count of context switches then."""
    deadline = time.monotonic() + timeout
    while True:
        count = context_switches(pid)
        if (woken_since is None or count > woken_since) and sleeps_without_timeout(pid) \
                and context_switches(pid) == count:  # asleep all along, not woken between
            return count
        if time.monotonic() > deadline:
            raise AssertionError("ovmd (pid %d) did not become idle within %.0f s" % (pid, timeout))
        time.sleep(0.01)
