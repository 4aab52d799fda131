"""A booted Debian 12 guest for the tests: network namespaces, a DHCP server, and
systemd-nspawn, all unique per test run and all removed afterwards.

On these machines PID 1 is not systemd and there is no machined or system bus, so the
container is booted with ``--register=no --keep-unit``. nspawn tells its parent the
container's leader pid and, with ``--notify-ready=yes``, when the guest's systemd has
finished starting, through ``$NOTIFY_SOCKET`` (sd_notify): the tests wait on that
socket instead of polling. Commands run inside with ``nsenter -t LEADER -a``.

Layout of one run (SUFFIX = pid + random, so parallel runs never collide):

    netns ovmg-SUFFIX (the guest's)         netns ovmp-SUFFIX (the peer: "the LAN")
      eth0  <-- veth -->  peer0  192.0.2.1/24, 192.0.2.2/24 (gateway, NTP addresses),
                                 2001:db8::1/64 (the IPv6 gateway)
      eth1  <-- veth -->  peer1  198.51.100.1/24
    dnsmasq --port=0 (DHCP only, leases name 192.0.2.63 and lan.example) on peer0 and
    peer1; a DNS-only dnsmasq on 192.0.2.53/.54/.63
"""
from __future__ import annotations

import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from packaging_helpers import run

PEER_ADDRESSES = {"peer0": ["192.0.2.1/24", "192.0.2.2/24", "192.0.2.53/24", "192.0.2.54/24",
                            "192.0.2.63/24", "2001:db8::1/64"],
                  "peer1": ["198.51.100.1/24"]}
#: The LAN's DNS servers (.63 the template's and every DHCP lease's, .53/.54 the ones
#: the host requests): a dnsmasq with no upstream, so every query is answered at once
#: instead of timing out.
DNS_ADDRESSES = ("192.0.2.53", "192.0.2.54", "192.0.2.63")
LEASE_DNS, LEASE_DOMAIN = "192.0.2.63", "lan.example"
#: DHCP on both links: eth1 is configured for DHCP, the template uses DHCP on eth0 too.
DHCP_RANGE = ("198.51.100.50", "198.51.100.60")
TEMPLATE_DHCP_RANGE = ("192.0.2.100", "192.0.2.110")
GUEST_LINKS = {"eth0": "peer0", "eth1": "peer1"}


def unique_suffix() -> str:
    return "%d%s" % (os.getpid() % 100000, secrets.token_hex(2))


class GuestNetwork:
    """Two network namespaces joined by veth pairs, and dnsmasq serving DHCP on peer1."""

    def __init__(self, suffix: str, workdir: Path) -> None:
        self.guest_ns = "ovmg-" + suffix
        self.peer_ns = "ovmp-" + suffix
        self.workdir = workdir
        self.dnsmasq: Optional[subprocess.Popen] = None
        self.dns: Optional[subprocess.Popen] = None

    @property
    def guest_ns_path(self) -> str:
        return "/run/netns/" + self.guest_ns

    def create(self) -> None:
        run(["ip", "netns", "add", self.guest_ns])
        run(["ip", "netns", "add", self.peer_ns])
        for guest_if, peer_if in GUEST_LINKS.items():
            # Created inside the namespaces: no interface name on the host at all.
            run(["ip", "-n", self.peer_ns, "link", "add", peer_if, "type", "veth",
                 "peer", "name", guest_if, "netns", self.guest_ns])
        for peer_if, addresses in PEER_ADDRESSES.items():
            for address in addresses:
                # (an IPv6 address without duplicate address detection: usable at once)
                run(["ip", "-n", self.peer_ns, "addr", "add", address, "dev", peer_if]
                    + (["nodad"] if ":" in address else []))
            run(["ip", "-n", self.peer_ns, "link", "set", peer_if, "up"])
        run(["ip", "-n", self.peer_ns, "link", "set", "lo", "up"])
        log = self.workdir / "dnsmasq.log"
        self.dnsmasq = subprocess.Popen(
            ["ip", "netns", "exec", self.peer_ns, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--port=0", "--interface=peer0", "--interface=peer1",
             "--bind-interfaces", "--dhcp-range=%s,%s,255.255.255.0,1h" % TEMPLATE_DHCP_RANGE,
             "--dhcp-range=%s,%s,255.255.255.0,1h" % DHCP_RANGE, "--dhcp-authoritative",
             # The LAN's resolver in every lease: dhclient rewrites resolv.conf with it.
             "--dhcp-option=option:dns-server,%s" % LEASE_DNS,
             "--dhcp-option=option:domain-name,%s" % LEASE_DOMAIN,
             "--dhcp-leasefile=%s" % (self.workdir / "dnsmasq.leases"),
             "--pid-file=%s" % (self.workdir / "dnsmasq.pid"), "--log-dhcp",
             "--log-facility=%s" % log],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.dns = subprocess.Popen(
            ["ip", "netns", "exec", self.peer_ns, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--bind-interfaces",
             "--pid-file=%s" % (self.workdir / "dns.pid")]
            + ["--listen-address=%s" % address for address in DNS_ADDRESSES],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def peer(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        """Run a command in the peer namespace (the guest's LAN)."""
        return run(["ip", "netns", "exec", self.peer_ns] + list(argv), **kwargs)

    def remove(self) -> None:
        for server in (self.dnsmasq, self.dns):
            if server is not None and server.poll() is None:
                server.terminate()
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        for ns in (self.guest_ns, self.peer_ns):
            # Deleting a namespace removes its veth ends (and so the pairs).
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class NotifySocket:
    """The ``$NOTIFY_SOCKET`` nspawn reports to (``X_NSPAWN_LEADER_PID=``, ``READY=1``)."""

    def __init__(self, workdir: Path) -> None:
        self.path = str(workdir / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.fields: Dict[str, str] = {}

    def wait_for(self, field: str, timeout: float) -> Optional[str]:
        """The value of ``field`` once nspawn has sent it, None after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while field not in self.fields:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.sock], [], [], remaining)[0]:
                return None
            data = self.sock.recv(4096).decode("utf-8", "replace")
            for line in data.splitlines():
                key, _, value = line.partition("=")
                self.fields[key] = value
        return self.fields[field]

    def close(self) -> None:
        self.sock.close()
        if os.path.exists(self.path):
            os.unlink(self.path)


class BootedGuest:
    """One boot of ``root`` under systemd-nspawn in the guest namespace.

    States: created -> started (nspawn running) -> stopped (nspawn exited). ``stop()``
    powers the guest off from inside and waits; on timeout it kills nspawn (which takes
    the container with it). Console output goes to ``console.log`` in the work dir.
    """

    def __init__(self, root: Path, machine: str, network: GuestNetwork, workdir: Path,
                 binds: List[str]) -> None:
        self.root = root
        self.machine = machine
        self.network = network
        self.workdir = workdir
        self.binds = binds
        self.process: Optional[subprocess.Popen] = None
        self.notify: Optional[NotifySocket] = None
        self.leader: Optional[int] = None
        self.stop_method: Optional[str] = None
        self.console_path = workdir / ("console-%s.log" % machine)

    def start(self) -> None:
        self.notify = NotifySocket(Path(tempfile.mkdtemp(prefix="nsp-", dir="/tmp")))
        argv = ["systemd-nspawn", "-q", "-b", "-D", str(self.root), "--machine=" + self.machine,
                "--register=no", "--keep-unit", "--console=read-only", "--timezone=off",
                "--resolv-conf=off", "--link-journal=no", "--notify-ready=yes",
                "--network-namespace-path=" + self.network.guest_ns_path,
                "--capability=CAP_NET_ADMIN"]
        argv += ["--bind=" + bind for bind in self.binds]
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path, SYSTEMD_LOG_COLOR="0")
        with open(self.console_path, "ab") as console:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=console,
                                            stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        pid = self.notify.wait_for("X_NSPAWN_LEADER_PID", 60)
        if pid is None:
            raise RuntimeError("systemd-nspawn did not start the container:\n" + self.console())
        self.leader = int(pid)

    def wait_ready(self, timeout: float) -> bool:
        """True once the guest's systemd reported its start-up finished (READY=1)."""
        assert self.notify is not None
        return self.notify.wait_for("READY", timeout) is not None

    def exec(self, *argv: str, timeout: float = 60, input: Optional[str] = None,
             env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        """Run a command inside the guest (all its namespaces); never fails the test."""
        environ = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
                   "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""}
        environ.update(env or {})
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        try:
            return subprocess.run(["nsenter", "-t", str(self.leader), "-a"] + list(argv),
                                  capture_output=True, text=True, timeout=timeout,
                                  env=environ, **stdin)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 124, _text(exc.stdout),
                                               _text(exc.stderr) + "\n(timed out after %ss)"
                                               % timeout)

    def console(self, tail: int = 6000) -> str:
        try:
            return self.console_path.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 60) -> Optional[int]:
        """Power the guest off and wait for nspawn; nspawn's exit status (None: not
        started). ``systemctl poweroff`` inside first; if that does not return, SIGRTMIN+4
        to the guest's systemd (its poweroff request, as machinectl sends it); if the
        guest is still up after ``timeout``, SIGKILL to its PID 1, which ends its whole
        PID namespace (killing nspawn alone would leave the container running)."""
        if self.process is None:
            return None
        self.stop_method = None
        if self.process.poll() is None and self.leader is not None:
            proc = self.exec("systemctl", "--no-block", "poweroff", timeout=15)
            self.stop_method = "systemctl poweroff"
            if proc.returncode != 0:
                self.stop_method = "SIGRTMIN+4 (systemctl poweroff: %s)" % (
                    proc.stderr.strip() or proc.returncode)
                _kill(self.leader, signal.SIGRTMIN + 4)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop_method = "SIGKILL after %ss" % timeout
            if self.leader is not None:
                _kill(self.leader, signal.SIGKILL)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.notify is not None:
            directory = os.path.dirname(self.notify.path)
            self.notify.close()
            shutil.rmtree(directory, ignore_errors=True)
            self.notify = None
        # nspawn may leave its (empty) mount propagation directory behind.
        propagate = Path("/run/systemd/nspawn/propagate") / self.machine
        if propagate.is_dir():
            shutil.rmtree(propagate, ignore_errors=True)
        return self.process.returncode


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def mounts_under(path: Path) -> List[str]:
    """Mount points at or below ``path`` in this mount namespace (should be none)."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4]
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found
