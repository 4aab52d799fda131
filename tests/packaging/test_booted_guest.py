"""A real Debian 12 guest, configured end to end on its first boot by the project's .deb.

A debootstrap root with systemd, openssh-server, chrony, ifupdown and isc-dhcp-client
(cached) gets the .deb packages installed by its own dpkg, is booted once as the
template and sealed the documented way (``ovmd --seal``, then power off), and is booted
again as a clone under systemd-nspawn in its own network namespace. A module registered
for the shutdown target records each time it runs: not when the sealed template powers
off, once at each of the clone's power-offs, not when ovmd alone is restarted. The host side sends Oracle's message set
with ``ovm-vmmessage`` through the development XenStore, whose guest socket is bound
into the container as /run/xenstored/socket, root password last. The checks use the
real services inside the guest and, from the peer namespace (the guest's LAN), ssh.

What a container cannot be is replaced by two drop-ins written by this test, not by the
packages: ovmd.service's ``ConditionVirtualization=xen`` (a container is not Xen), and
chrony's ``ConditionCapability=CAP_SYS_TIME`` with ``chronyd -x`` (a container may not
set the clock). Nothing else is stubbed. Each check is its own test, reading what the
boots observed, so a failure says exactly what the guest showed.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict

import pytest
from guest_helpers import DHCP_RANGE, BootedGuest, GuestNetwork, mounts_under, unique_suffix
from packaging_helpers import bin_path, debian_boot_root, dpkg_in_root, require_tool, run
from testlib import start_xenstored

DOMID = 7
N = "com.oracle.linux."
HOSTNAME = "guest1.example.com"
STATIC_ADDRESS = "192.0.2.10"
#: eth0's static IPv6 address and gateway (the peer's, see guest_helpers).
IPV6_ADDRESS, IPV6_GATEWAY = "2001:db8::10/64", "2001:db8::1"
NTP_SERVERS = ["192.0.2.1", "192.0.2.2"]
DNS_SERVERS = ["192.0.2.53", "192.0.2.54"]
SEARCH_DOMAIN = "example.com"
USER, UID = "alice", "1500"
#: Test-only passwords: sent on stdin (--batch), given to sshpass through $SSHPASS.
USER_PASSWORD = "Guest-user-pw-1"
ROOT_PASSWORD = "Guest-root-pw-1"
STATUS_KEY = N + "ovmd.initial-config-status"
#: The NTP server a reconfigure of the running guest asks for on its second boot.
RECONFIGURED_NTP = "192.0.2.2"
#: How long one step may take before the test records what it saw and goes on: the
#: configuration (messages to `done`), and a boot or a check once the guest is up.
CONFIGURE_TIMEOUT = 60
STEP_TIMEOUT = 30

#: The template's own network: DHCP on eth0 (what a template usually has).
TEMPLATE_INTERFACES = """\
# interfaces(5) file used by ifup(8) and ifdown(8)
source /etc/network/interfaces.d/*

auto lo
iface lo inet loopback

auto eth0
iface eth0 inet dhcp
"""
#: A module for the shutdown target: it records each run, with the guest's host name.
SHUTDOWN_PROBE = """\
#!/bin/sh
### BEGIN PLUGIN INFO
# name: shutdown-probe
# shutdown: 50
# description: test module: records that the shutdown target ran
### END PLUGIN INFO
if [ "$1" = "--enumerate" ]; then echo '[]'; exit 0; fi
[ "$1" = shutdown ] && echo "shutdown $(hostname)" >> /var/lib/shutdown-probe
cat
"""
#: The two drop-ins a container needs (see the module docstring).
OVMD_DROPIN = "[Unit]\nConditionVirtualization=\n"
CHRONY_DROPIN = ("[Unit]\nConditionCapability=\n\n[Service]\nExecStart=\n"
                 "ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x\n")


def messages(public_key: str):
    """Oracle's message set for one clone, root password last."""
    P = N + "network."
    return [
        (P + "hostname", HOSTNAME),
        (P + "host.0", "192.0.2.50 db.example.com db"),
        (P + "device.0", "eth0"), (P + "onboot.0", "yes"), (P + "bootproto.0", "static"),
        (P + "ipaddr.0", STATIC_ADDRESS), (P + "netmask.0", "255.255.255.0"),
        (P + "gateway.0", "192.0.2.1"), (P + "dns-servers.0", ",".join(DNS_SERVERS)),
        (P + "dns-search-domains.0", SEARCH_DOMAIN),
        (P + "ipv6-bootproto.0", "static"), (P + "ipv6addr.0", IPV6_ADDRESS),
        (P + "ipv6gateway.0", IPV6_GATEWAY),
        (P + "device.1", "eth1"), (P + "onboot.1", "yes"), (P + "bootproto.1", "dhcp"),
        (N + "datetime.timezone", "America/New_York"), (N + "datetime.utc", "True"),
        (N + "datetime.ntp", "True"), (N + "datetime.ntp-servers", ",".join(NTP_SERVERS)),
        (N + "user.name.0", USER), (N + "user.action.0", "add"), (N + "user.uid.0", UID),
        (N + "user.password.0", USER_PASSWORD),
        (N + "ssh.user.0", USER), (N + "ssh.authorized-keys.0", public_key),
        (N + "root-password", ROOT_PASSWORD),
    ]


def host_keys(root: Path) -> Dict[str, str]:
    """key type -> base64 blob of the root's public host keys (the files)."""
    keys = {}
    for pub in sorted((root / "etc/ssh").glob("ssh_host_*_key.pub")):
        kind, blob = pub.read_text().split()[:2]
        keys[kind] = blob
    return keys


def scanned_keys(network: GuestNetwork) -> Dict[str, str]:
    """key type -> blob of the host keys the guest's sshd serves (ssh-keyscan)."""
    out = network.peer("ssh-keyscan", "-T", "10", STATIC_ADDRESS, check=False, timeout=60)
    keys = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            keys[fields[1]] = fields[2]
    return keys


def addresses(guest: BootedGuest) -> Dict[str, list]:
    out = guest.exec("ip", "-4", "-o", "addr", "show")
    found: Dict[str, list] = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if fields[1] != "lo":
            found.setdefault(fields[1], []).append(fields[3])
    return found


def ipv6(guest: BootedGuest) -> Dict[str, list]:
    """eth0's global IPv6 addresses (with their flags) and the IPv6 default routes."""
    out = guest.exec("ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global")
    found = [" ".join(line.split()[3:]).split(" \\")[0] for line in out.stdout.splitlines()]
    routes = guest.exec("ip", "-6", "route", "show", "default")
    return {"addresses": found, "default": [" ".join(line.split()[:5])
                                            for line in routes.stdout.splitlines()]}


def shown(proc: subprocess.CompletedProcess) -> str:
    return "exit %d\nstdout: %s\nstderr: %s" % (proc.returncode, proc.stdout.strip(),
                                               proc.stderr.strip())


class Observations(dict):
    """What the boots showed, by name; ``diagnostics`` go into every failure message."""

    diagnostics = ""


def prepare_template(root: Path, debs) -> None:
    """The template as its builder leaves it: our packages installed with dpkg, a host
    name, DHCP on eth0, plus the two container drop-ins."""
    dpkg_in_root(root, "-i", debs=debs.values())
    (root / "etc/hostname").write_text("ovm-template\n")
    (root / "etc/network/interfaces").write_text(TEMPLATE_INTERFACES)
    # debootstrap copied this machine's resolver; the template uses its LAN's.
    (root / "etc/resolv.conf").write_text("nameserver 192.0.2.63\n")
    for unit, text in (("ovmd.service", OVMD_DROPIN), ("chrony.service", CHRONY_DROPIN)):
        dropin = root / "etc/systemd/system" / (unit + ".d")
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "test-container.conf").write_text(text)
    probe = root / "etc/template.d/scripts/shutdown-probe"
    probe.write_text(SHUTDOWN_PROBE)
    probe.chmod(0o755)
    run([bin_path("ovm-chkconfig"), "--root", str(root), "--add", "shutdown-probe"])


def shutdown_runs(root: Path) -> list:
    """What the shutdown probe recorded so far, one entry per run."""
    try:
        return (root / "var/lib/shutdown-probe").read_text().splitlines()
    except FileNotFoundError:
        return []


def guest_diagnostics(guest: BootedGuest) -> str:
    parts = []
    for argv in (["systemctl", "--failed", "--no-legend"], ["ovmd", "--status"],
                 ["systemctl", "list-jobs", "--no-legend"],
                 ["tail", "-n", "25", "/var/log/ovm-template-config.log"],
                 ["journalctl", "-b", "--no-pager", "-n", "40", "-u", "ovmd", "-u",
                  "ovmd-initial-config-wait", "-u", "ssh", "-u", "chrony", "-u",
                  "ovm-template-initial-config", "-u", "networking"]):
        proc = guest.exec(*argv, timeout=20)
        parts.append("$ %s\n%s%s" % (" ".join(argv), proc.stdout, proc.stderr))
    return "\n".join(parts)


@pytest.fixture(scope="module")
def booted(tmp_path_factory, debs) -> Observations:
    """Seal a template, boot a clone twice, and record what each check needs."""
    for tool in ("systemd-nspawn", "nsenter", "ip", "dnsmasq", "ssh", "ssh-keyscan", "sshpass"):
        require_tool(tool)
    workdir = tmp_path_factory.mktemp("guest")
    root = debian_boot_root(workdir / "root")
    prepare_template(root, debs)
    seen = Observations()
    seen["template_keys"] = host_keys(root)
    key = workdir / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(key)])

    suffix = unique_suffix()
    seen["suffix"] = suffix
    network = GuestNetwork(suffix, workdir)
    socket_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
    xenstore = None
    guest = None
    vmmessage = [bin_path("ovm-vmmessage"), "--xenstore", str(socket_dir / "socket"),
                 "-d", str(DOMID)]
    started = time.monotonic()
    try:
        xenstore = start_xenstored(socket_dir, {DOMID: "ovmguest"})
        network.create()
        binds = ["%s:/run/xenstored/socket" % xenstore.guest_socket(DOMID)]

        def boot(name: str) -> BootedGuest:
            nonlocal guest
            guest = BootedGuest(root, "ovm%s-%s" % (name, suffix), network, workdir, binds)
            guest.start()
            return guest

        # Boot 0: the template. Seal it as its administrator would, then power off.
        template = boot("t")
        seen["template_ready"] = template.wait_ready(STEP_TIMEOUT)
        seen["template_diagnostics"] = guest_diagnostics(template)
        seen["seal"] = template.exec("ovmd", "--seal", timeout=STEP_TIMEOUT)
        seen["sealed_status"] = template.exec("ovmd", "--status", "--json")
        seen["template_stop"] = template.stop()
        seen["shutdown_runs_template"] = shutdown_runs(root)
        seen["stop_methods"] = [template.stop_method]
        seen["sealed_keys"] = host_keys(root)
        seen["sealed_flag"] = (root / "etc/sysconfig/ovm-template-initial-config").read_text()

        # Boot 1: the clone's first boot; the host sends the message set right away
        # (ovmd consumes what is waiting when it starts).
        first_boot_started = time.monotonic()
        clone = boot("1")
        batch = "".join(json.dumps({"key": k, "value": v}) + "\n"
                        for k, v in messages((Path(str(key) + ".pub")).read_text().strip()))
        seen["send"] = run(vmmessage + ["--batch", "-"], input=batch, check=False)
        seen["status"] = run(vmmessage + ["--wait", STATUS_KEY, "--timeout",
                                          str(CONFIGURE_TIMEOUT)],
                             check=False, timeout=CONFIGURE_TIMEOUT + 30)
        seen["ready"] = clone.wait_ready(STEP_TIMEOUT)
        # Once systemd reported READY its state is final; without READY it says where
        # the boot hangs ("starting").
        seen["system_running"] = clone.exec("systemctl", "is-system-running")
        seen["first_boot_seconds"] = time.monotonic() - first_boot_started
        seen["hostname"] = clone.exec("hostname")
        seen["id"] = clone.exec("id", USER)
        ssh = ["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]
        seen["ssh_key"] = network.peer(*ssh, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                                       "-i", str(key), "%s@%s" % (USER, STATIC_ADDRESS), "id -un",
                                       check=False, timeout=60)
        seen["ssh_password"] = network.peer(
            "sshpass", "-e", *ssh, "-o", "PubkeyAuthentication=no",
            "-o", "PreferredAuthentications=password,keyboard-interactive",
            "%s@%s" % (USER, STATIC_ADDRESS), "id -un",
            check=False, timeout=60, env=dict(os.environ, SSHPASS=USER_PASSWORD))
        seen["scanned_keys"] = scanned_keys(network)
        seen["chrony"] = clone.exec("chronyc", "-n", "-N", "sources", "-a")
        seen["resolv_conf"] = clone.exec("cat", "/etc/resolv.conf")
        seen["getent_localhost"] = clone.exec("getent", "hosts", "localhost")
        seen["addresses"] = addresses(clone)
        seen["ipv6"] = ipv6(clone)
        seen["initial_config"] = (root / "etc/sysconfig/ovm-template-initial-config").read_text()
        seen["report"] = clone.exec("cat", "/var/lib/ovm-template-config/last-run.json")
        # A container has no hardware clock, as a Xen PV guest: hwclock fails here.
        seen["hwclock"] = clone.exec("hwclock", "--systohc", "--utc")
        seen["localtime"] = clone.exec("readlink", "/etc/localtime")
        seen["dhclient_eth1"] = clone.exec("pgrep", "-a", "-f", "dhclient.*eth1")
        seen["sent"] = run(vmmessage + ["-l"], check=False)
        seen.diagnostics = guest_diagnostics(clone)
        seen["stop1"] = clone.stop()
        seen["stop_methods"].append(clone.stop_method)
        seen["shutdown_runs1"] = shutdown_runs(root)

        # Boot 2: an ordinary boot of the configured clone.
        second_boot_started = time.monotonic()
        again = boot("2")
        seen["ready2"] = again.wait_ready(STEP_TIMEOUT)
        seen["system_running2"] = again.exec("systemctl", "is-system-running")
        seen["second_boot_seconds"] = time.monotonic() - second_boot_started
        seen["hostname2"] = again.exec("hostname")
        seen["scanned_keys2"] = scanned_keys(network)
        seen["addresses2"] = addresses(again)
        seen["ipv62"] = ipv6(again)
        # the shutdown target ran at the power-off: its report is the last run's, the
        # configure run's was set aside for ovmd --status
        seen["report2"] = again.exec("cat",
                                     "/var/lib/ovm-template-config/last-configure-run.json")
        seen["last_run2"] = again.exec("cat", "/var/lib/ovm-template-config/last-run.json")
        seen["status2"] = again.exec("ovmd", "--status")
        seen["sent2"] = run(vmmessage + ["-l"], check=False)
        reconfigure(again, network, seen)
        seen["restart_ovmd"] = again.exec("systemctl", "restart", "ovmd.service",
                                          timeout=STEP_TIMEOUT)
        seen["shutdown_runs_restart"] = shutdown_runs(root)
        seen.diagnostics += "\n--- second boot ---\n" + guest_diagnostics(again)
        seen["stop2"] = again.stop()
        seen["stop_methods"].append(again.stop_method)
        seen["shutdown_runs2"] = shutdown_runs(root)
    finally:
        if guest is not None:
            guest.stop()
        network.remove()
        if xenstore is not None:
            xenstore.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)
        seen["leftover_mounts"] = mounts_under(root)
        seen["leftover_netns"] = [ns for ns in (network.guest_ns, network.peer_ns)
                                  if os.path.exists("/run/netns/" + ns)]
        seen["leftover_processes"] = processes_mentioning(suffix)
        seen["total_seconds"] = time.monotonic() - started
        print("booted guest: template + 2 boots in %.1f s (first boot %.1f s, second %.1f s,"
              " reconfigure %.1f s); stopped by %s"
              % (seen["total_seconds"], seen.get("first_boot_seconds", -1),
                 seen.get("second_boot_seconds", -1), seen.get("reconfigure_seconds", -1),
                 seen.get("stop_methods")))
    for console in sorted(workdir.glob("console-ovm[12]-*.log")):
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|\r", "", console.read_text(errors="replace"))
        seen.diagnostics += "\n--- %s (tail) ---\n%s" % (console.name, text[-2500:])
    yield seen
    shutil.rmtree(root, ignore_errors=True)


def reconfigure(guest: BootedGuest, network: GuestNetwork, seen: Observations) -> None:
    """A running guest configured again (what an operator does with
    ``ovm-template-config``): new NTP servers, and fresh host keys (a new boot), so chrony
    and sshd, both running, must be restarted with their new configuration, and the
    runs must return instead of waiting for those restarts."""
    main_pid = ["systemctl", "show", "-p", "MainPID", "--value", "ssh.service"]
    seen["sshd_pid2"] = guest.exec(*main_pid).stdout.strip()
    started = time.monotonic()
    params = json.dumps({N + "datetime.ntp-servers": RECONFIGURED_NTP})
    for module in ("datetime", "ssh"):
        seen["reconfigure_" + module] = guest.exec(
            "ovm-template-config", "--stdin", "-s", module, "configure", input=params,
            timeout=STEP_TIMEOUT)
    seen["reconfigure_seconds"] = time.monotonic() - started
    # A start job merges with a restart job still queued and waits for it (and is a no-op
    # once it has run): the state the checks see is the restarted services'.
    seen["restarted"] = guest.exec("systemctl", "start", "chrony.service", "ssh.service",
                                   timeout=STEP_TIMEOUT)
    seen["chrony3"] = guest.exec("chronyc", "-n", "-N", "sources", "-a")
    seen["scanned_keys3"] = scanned_keys(network)
    seen["keys3"] = guest.exec("sh", "-c", "cat /etc/ssh/ssh_host_*_key.pub")
    seen["sshd_pid3"] = guest.exec(*main_pid).stdout.strip()
    seen["system_running3"] = guest.exec("systemctl", "is-system-running")


def processes_mentioning(text: str):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline:
                found.append(cmdline)
    return found


def explain(seen: Observations, text: str) -> str:
    return "%s\n\n--- what the guest showed ---\n%s" % (text, seen.diagnostics)


# --- the template ---------------------------------------------------------------------------

def test_template_sealed_the_documented_way(booted):
    assert booted["template_ready"], "the template did not finish booting:\n" + \
        booted["template_diagnostics"]
    seal = booted["seal"]
    assert seal.returncode == 0, shown(seal)
    assert seal.stdout.startswith("ovm-template-config cleanup: done\n"), shown(seal)
    assert "removed /var/log/ovm-template-config.log (the run log)" in seal.stdout, shown(seal)
    assert seal.stdout.splitlines()[-1].startswith("sealed: shut the guest down now")
    assert json.loads(booted["sealed_status"].stdout)["sealed"] is True
    assert booted["template_stop"] == 0
    assert booted["template_keys"], "the template had no host keys to begin with"
    assert booted["sealed_keys"] == {}, "ovmd --seal left host keys: %s" % booted["sealed_keys"]
    assert re.search(r"^INITIAL_CONFIG=yes$", booted["sealed_flag"], re.M), booted["sealed_flag"]


def test_the_shutdown_target_runs_when_the_guest_shuts_down(booted):
    """Not at the sealed template's power-off, once at each of the clone's, not when
    ovmd alone is restarted."""
    assert booted["shutdown_runs_template"] == []
    assert booted["shutdown_runs1"] == ["shutdown " + HOSTNAME], booted.diagnostics
    assert booted["restart_ovmd"].returncode == 0, shown(booted["restart_ovmd"])
    assert booted["shutdown_runs_restart"] == booted["shutdown_runs1"]
    assert booted["shutdown_runs2"] == ["shutdown " + HOSTNAME] * 2


# --- the first boot -------------------------------------------------------------------------

def test_host_messages_sent(booted):
    assert booted["send"].returncode == 0, shown(booted["send"])


def test_done_reported_to_the_host(booted):
    status = booted["status"]
    assert (status.returncode, status.stdout.strip()) == (0, "done"), \
        explain(booted, "%s reported: %s" % (STATUS_KEY, shown(status)))


def test_initial_config_switched_off(booted):
    assert re.search(r"^INITIAL_CONFIG=no$", booted["initial_config"], re.M), \
        explain(booted, "/etc/sysconfig/ovm-template-initial-config:\n" + booted["initial_config"])


def test_system_running_not_degraded(booted):
    proc = booted["system_running"]
    assert proc.stdout.strip() == "running", explain(booted, "is-system-running: " + shown(proc))


def test_hostname(booted):
    assert booted["hostname"].stdout.strip() == HOSTNAME, shown(booted["hostname"])


def test_new_user_exists(booted):
    proc = booted["id"]
    assert proc.returncode == 0 and proc.stdout.startswith("uid=%s(%s)" % (UID, USER)), \
        explain(booted, "id %s: %s" % (USER, shown(proc)))


def test_ssh_login_with_the_key_sent(booted):
    proc = booted["ssh_key"]
    assert (proc.returncode, proc.stdout.strip()) == (0, USER), \
        explain(booted, "ssh -i KEY %s@%s id -un: %s" % (USER, STATIC_ADDRESS, shown(proc)))


def test_ssh_login_with_the_users_password(booted):
    proc = booted["ssh_password"]
    assert (proc.returncode, proc.stdout.strip()) == (0, USER), \
        explain(booted, "sshpass ssh %s@%s id -un: %s" % (USER, STATIC_ADDRESS, shown(proc)))


def test_host_keys_served_differ_from_the_templates(booted):
    served, template = booted["scanned_keys"], booted["template_keys"]
    assert served, explain(booted, "ssh-keyscan %s found no host key" % STATIC_ADDRESS)
    same = sorted(kind for kind, blob in served.items() if template.get(kind) == blob)
    assert same == [], "the clone serves the template's %s host keys" % same


def chrony_sources(proc: subprocess.CompletedProcess):
    return sorted(line.split()[1] for line in proc.stdout.splitlines()
                  if re.match(r"^[\^=#][-*+?x~ ]\s", line))


def test_chrony_uses_exactly_the_requested_servers(booted):
    proc = booted["chrony"]
    assert chrony_sources(proc) == sorted(NTP_SERVERS), \
        "chronyc -n -N sources -a:\n%s" % shown(proc)


def test_resolv_conf_holds_exactly_the_requested_dns(booted):
    """eth1's DHCP lease names the LAN's resolver and domain, and dhclient rewrote
    resolv.conf after the configuration: the requested servers and search domain are
    still all it holds."""
    text = booted["resolv_conf"].stdout
    servers = re.findall(r"^nameserver\s+(\S+)", text, re.M)
    search = re.findall(r"^(?:search|domain)\s+(.*)$", text, re.M)
    assert booted["dhclient_eth1"].returncode == 0, \
        explain(booted, "no dhclient runs for eth1: " + shown(booted["dhclient_eth1"]))
    assert servers == DNS_SERVERS and " ".join(search).split() == [SEARCH_DOMAIN], \
        "/etc/resolv.conf:\n" + text


def test_missing_hardware_clock_does_not_fail_the_datetime_module(booted):
    """hwclock fails in this guest (no RTC, as on Xen PV): the datetime module still
    succeeds and does the rest: the time zone here, chrony (its sources, above)."""
    assert booted["hwclock"].returncode != 0, "this guest has a hardware clock after all"
    report = json.loads(booted["report"].stdout or "{}")
    statuses = {m["name"]: m["status"] for m in report.get("modules", [])}
    assert statuses.get("datetime") == "ok", explain(booted, "run report: %s" % statuses)
    assert booted["localtime"].stdout.strip() == "/usr/share/zoneinfo/America/New_York", \
        shown(booted["localtime"])


def test_localhost_resolves(booted):
    proc = booted["getent_localhost"]
    assert proc.returncode == 0 and re.search(r"^(127\.0\.0\.1|::1)\s.*\blocalhost\b",
                                              proc.stdout, re.M), \
        "getent hosts localhost: " + shown(proc)


def test_addresses_as_requested(booted):
    found = booted["addresses"]
    assert found.get("eth0") == ["%s/24" % STATIC_ADDRESS], explain(booted, "addresses: %s" % found)
    first, last = (int(a.rsplit(".", 1)[1]) for a in DHCP_RANGE)
    dhcp = found.get("eth1", [])
    assert len(dhcp) == 1 and dhcp[0].startswith("198.51.100.") and \
        first <= int(dhcp[0].split("/")[0].rsplit(".", 1)[1]) <= last, \
        explain(booted, "eth1 has no DHCP lease from the peer: %s" % found)


def test_static_ipv6_address_and_gateway(booted):
    """ifupdown's inet6 stanza: the address is configured (duplicate address detection
    passed: no tentative or dadfailed flag) and the default route goes via the gateway."""
    found = booted["ipv6"]
    assert found["addresses"] == ["%s scope global" % IPV6_ADDRESS], \
        explain(booted, "ip -6 addr show dev eth0 scope global: %s" % found)
    assert found["default"] == ["default via %s dev eth0" % IPV6_GATEWAY], \
        explain(booted, "ip -6 route show default: %s" % found)


# --- the second boot ------------------------------------------------------------------------

def test_second_boot_running(booted):
    proc = booted["system_running2"]
    assert proc.stdout.strip() == "running", explain(booted, "is-system-running: " + shown(proc))


def test_second_boot_does_not_configure_again(booted):
    first, second = booted["report"], booted["report2"]
    assert first.returncode == 0, shown(first)
    assert json.loads(booted["last_run2"].stdout or "{}").get("target") == "shutdown", \
        shown(booted["last_run2"])
    assert booted["status2"].stdout.startswith("status: done"), shown(booted["status2"])
    assert second.stdout == first.stdout, \
        "the run report changed on the second boot:\n%s\n---\n%s" % (first.stdout, second.stdout)
    assert booted["sent2"].stdout == booted["sent"].stdout, \
        "the guest sent messages again:\n%s\n---\n%s" % (booted["sent"].stdout, booted["sent2"].stdout)


def test_second_boot_keeps_host_keys_addresses_and_name(booted):
    assert booted["scanned_keys2"] == booted["scanned_keys"], \
        "host keys changed: %s -> %s" % (booted["scanned_keys"], booted["scanned_keys2"])
    assert booted["addresses2"] == booted["addresses"], \
        "addresses changed: %s -> %s" % (booted["addresses"], booted["addresses2"])
    assert booted["ipv62"] == booted["ipv6"], \
        "IPv6 changed: %s -> %s" % (booted["ipv6"], booted["ipv62"])
    assert booted["hostname2"].stdout == booted["hostname"].stdout


def test_reconfigure_restarts_the_changed_services(booted):
    for module in ("datetime", "ssh"):
        proc = booted["reconfigure_" + module]
        assert proc.returncode == 0, explain(booted, "%s reconfigure: %s" % (module, shown(proc)))
    assert booted["restarted"].returncode == 0, shown(booted["restarted"])
    assert chrony_sources(booted["chrony3"]) == [RECONFIGURED_NTP], \
        "chronyc -n -N sources -a after the reconfigure:\n%s" % shown(booted["chrony3"])
    # A running sshd keeps what it loaded when it started: it was restarted.
    assert booted["sshd_pid3"] not in ("", "0", booted["sshd_pid2"]), \
        "ssh.service was not restarted: MainPID %s -> %s" % (booted["sshd_pid2"],
                                                            booted["sshd_pid3"])
    served, before = booted["scanned_keys3"], booted["scanned_keys2"]
    assert served and not set(served.items()) & set(before.items()), \
        "sshd still serves the old host keys: %s" % served
    assert set(served.values()) <= set(booted["keys3"].stdout.split()), \
        "sshd does not serve the keys on disk:\n%s" % booted["keys3"].stdout
    assert booted["system_running3"].stdout.strip() == "running", \
        explain(booted, "is-system-running: " + shown(booted["system_running3"]))


# --- and nothing is left behind --------------------------------------------------------------

def test_nothing_left_running_or_mounted(booted):
    assert (booted["template_stop"], booted["stop1"], booted["stop2"]) == (0, 0, 0), \
        booted["stop_methods"]
    assert booted["leftover_mounts"] == []
    assert booted["leftover_netns"] == []
    assert booted["leftover_processes"] == []
    propagate = Path("/run/systemd/nspawn/propagate")
    assert not list(propagate.glob("*-%s" % booted["suffix"])) if propagate.is_dir() else True
