"""The real programs validate what the standard modules write, on every fixture root.

The golden tests compare the modules' files with files written here; this test asks the
programs that will read them on a guest: ``sshd -t``, ``chronyd -p`` (plus the
``sourcedir`` files chrony would read, which ``-p`` does not expand), ``ifup --no-act``,
``netplan generate --root-dir``, ``nmcli --offline`` (NetworkManager 1.42 reads a
keyfile on stdin and rejects an invalid one), ``pwck -r -R`` / ``grpck -r -R`` and
``nft -c -f``, each where the fixture's distribution uses it and Debian has it.

The programs read absolute paths (``/etc/ssh/ssh_host_*``, ``include /etc/chrony.d``,
``source /etc/network/interfaces.d/*``); those directives are pointed into the root in
a copy of the file, nothing else is changed. Debian's sshd refuses group-readable host
keys, so on EL roots (0640 root:ssh_keys, which EL's sshd accepts) sshd checks copies
with mode 0600, and the EL modes are asserted separately.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest
from identity_helpers import fixture_root as copy_fixture_root
from module_helpers import ROOTS, run_module
from test_datetime import FULL as DATETIME
from test_network import IPV6_NICS, TWO_NICS, with_template_ipv6
from testlib import require_tool

ROOT_NAMES = sorted(p.name for p in ROOTS.iterdir())
EL_ROOTS = ("ol6", "ol7", "ol8", "ol9")
NTP_SERVERS = [s.strip() for s in DATETIME["com.oracle.linux.datetime.ntp-servers"].split(",")]
USER = {"com.oracle.linux.user.name.0": "alice", "com.oracle.linux.user.uid.0": "2001",
        "com.oracle.linux.user.action.0": "add",
        "com.oracle.linux.group.name.0": "staff", "com.oracle.linux.group.gid.0": "2100",
        "com.oracle.linux.group.action.0": "add"}
SSH = {"com.oracle.linux.ssh.user.0": "root"}
#: The standard modules and params a first boot typically gets, in the runner's order.
STEPS = [("firewall", {"com.oracle.linux.network.firewall": "True"}), ("datetime", DATETIME),
         ("network", TWO_NICS), ("user", USER), ("ssh", dict(SSH, **USER))]


def configured(name: str, tmp_path: Path, network: Dict[str, str] = TWO_NICS,
               template_ipv6: bool = False) -> Path:
    """Fixture root ``name`` after the standard modules' configure, the network module's
    params being ``network``; ``template_ipv6``: the template has IPv6 settings of its own
    (``test_network.with_template_ipv6``)."""
    root = copy_fixture_root(name, tmp_path / name)
    if template_ipv6:
        with_template_ipv6(root)
    for module, params in STEPS:
        params = network if module == "network" else params
        rc, _, err, _ = run_module(module, "configure", params, root)
        assert rc == 0, "%s configure failed on %s:\n%s" % (module, name, err)
    return root


def shown(proc: subprocess.CompletedProcess) -> str:
    return "exit %d\n%s%s" % (proc.returncode, proc.stdout, proc.stderr)


def rooted_copy(source: Path, root: Path, dest: Path, directives: List[str]) -> Path:
    """``source`` with the absolute paths after ``directives`` pointed into ``root``."""
    pattern = re.compile(r"^(\s*(?:%s)\s+)(/\S*)" % "|".join(directives), re.I)
    lines = [pattern.sub(lambda m: m.group(1) + str(root) + m.group(2), line)
             for line in source.read_text().splitlines()]
    dest.write_text("\n".join(lines) + "\n")
    return dest


# --- sshd ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ROOT_NAMES)
def test_sshd_accepts_the_config_and_host_keys(name, tmp_path):
    sshd = require_tool("sshd")
    root = configured(name, tmp_path)
    keys = sorted(Path(p) for p in glob.glob(str(root / "etc/ssh/ssh_host_*_key")))
    assert keys, "no host key generated on %s" % name
    check_dir = tmp_path / "keys"
    check_dir.mkdir()
    config = tmp_path / "sshd_config"
    rooted_copy(root / "etc/ssh/sshd_config", root, config, ["Include", "HostKey"])
    text = [line for line in config.read_text().splitlines()
            if not re.match(r"\s*HostKey\s", line, re.I)]
    for key in keys:
        mode = stat.S_IMODE(key.stat().st_mode)
        if name in EL_ROOTS and _has_group(root, "ssh_keys"):
            assert (mode, _group_of(root, key)) == (0o640, "ssh_keys"), key
        else:
            assert mode == 0o600, "%s has mode %o" % (key, mode)
        copy = check_dir / key.name
        shutil.copy(str(key), str(copy))
        os.chmod(copy, 0o600)  # Debian's sshd refuses 0640, EL's accepts it with ssh_keys
        text.append("HostKey %s" % copy)
    config.write_text("\n".join(text) + "\n")
    # sshd -t insists on its privilege separation directory (ssh.service's RuntimeDirectory).
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    proc = subprocess.run([sshd, "-t", "-f", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, "sshd -t on %s: %s" % (name, shown(proc))


def _group_of(root: Path, path: Path) -> str:
    gid = path.stat().st_gid
    for line in (root / "etc/group").read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 2 and fields[2] == str(gid):
            return fields[0]
    return str(gid)


def _has_group(root: Path, group: str) -> bool:
    return any(line.split(":")[0] == group for line in (root / "etc/group").read_text().splitlines())


# --- chrony ----------------------------------------------------------------------------------

CHRONY_CONFIGS = {"debian12": "etc/chrony/chrony.conf", "ol7": "etc/chrony.conf",
                  "ol8": "etc/chrony.conf", "ol9": "etc/chrony.conf"}


def chrony_sources(parsed: str, root: Path) -> List[str]:
    """The server/pool/peer names chrony would use: the parsed config's, plus the
    ``sourcedir`` files (``*.sources``) that ``chronyd -p`` does not expand."""
    sources = []
    lines = parsed.splitlines()
    for line in list(lines):
        match = re.match(r"\s*sourcedir\s+(\S+)", line)
        if match:
            for path in sorted(glob.glob(os.path.join(match.group(1), "*.sources"))):
                lines += Path(path).read_text().splitlines()
    for line in lines:
        match = re.match(r"\s*(server|pool|peer)\s+(\S+)", line)
        if match:
            sources.append(match.group(2))
    return sources


@pytest.mark.parametrize("name", sorted(CHRONY_CONFIGS))
def test_chrony_parses_and_uses_exactly_the_requested_servers(name, tmp_path):
    chronyd = require_tool("chronyd")
    root = configured(name, tmp_path)
    # A server a DHCP lease offered (Debian's dhclient hook and EL9's NetworkManager
    # dispatcher write these where the vendor's sourcedir points): not requested either.
    (root / "run/chrony-dhcp").mkdir(parents=True)
    (root / "run/chrony-dhcp/eth1.sources").write_text("server 198.51.100.1 iburst\n")
    sources = chrony_would_use(chronyd, root, name, tmp_path / "chrony.conf")
    assert sorted(sources) == sorted(NTP_SERVERS), \
        "chrony on %s would use %s, not only the requested %s" % (name, sources, NTP_SERVERS)


def chrony_would_use(chronyd: str, root: Path, name: str, dest: Path) -> List[str]:
    """The sources of root's chrony configuration, parsed by ``chronyd -p``."""
    config = rooted_copy(root / CHRONY_CONFIGS[name], root, dest,
                         ["include", "confdir", "sourcedir"])
    proc = subprocess.run([chronyd, "-p", "-f", str(config)], capture_output=True, text=True)
    assert proc.returncode == 0, "chronyd -p on %s: %s" % (name, shown(proc))
    return chrony_sources(proc.stdout, root)


@pytest.mark.parametrize("name", sorted(CHRONY_CONFIGS))
def test_chrony_cleanup_gives_the_vendor_sources_back(name, tmp_path):
    chronyd = require_tool("chronyd")
    vendor = chrony_would_use(chronyd, copy_fixture_root(name, tmp_path / "template"), name,
                              tmp_path / "template.conf")
    root = configured(name, tmp_path)
    rc, _, err, _ = run_module("datetime", "cleanup", {}, root)
    assert rc == 0, err
    assert vendor and chrony_would_use(chronyd, root, name, tmp_path / "chrony.conf") == vendor


# --- DNS ---------------------------------------------------------------------------------------

def test_dhclient_script_takes_the_requested_dns_from_the_hook(tmp_path):
    """dhclient-script sources the enter hooks with the lease in new_* variables, then
    writes resolv.conf from them: the hook, sourced by the guest's shell the same way,
    leaves the requested servers and search list there, and nothing for other reasons."""
    sh = require_tool("sh")
    root = configured("debian12", tmp_path)
    hook = root / "etc/dhcp/dhclient-enter-hooks.d/ovm-dns"
    lease = ("new_domain_name_servers=198.51.100.1; new_domain_search=lan.example; "
             "new_domain_name=lan.example; ")
    show = '. %s; echo "$new_domain_name_servers|$new_domain_search|$new_domain_name"' % hook
    for reason, expected in (("BOUND", "192.0.2.53 192.0.2.54|example.com example.org|"),
                             ("RENEW6", "192.0.2.53 192.0.2.54|example.com example.org|"),
                             ("EXPIRE", "198.51.100.1|lan.example|lan.example")):
        proc = subprocess.run([sh, "-c", "reason=%s; %s%s" % (reason, lease, show)],
                              capture_output=True, text=True)
        assert (proc.returncode, proc.stdout.strip()) == (0, expected), shown(proc)


# --- network stacks ----------------------------------------------------------------------------

def ifup_no_act(root: Path, tmp_path: Path) -> str:
    """What ``ifup --no-act --all`` would run for the root's interfaces (whitespace
    normalised per line); asserts that ifupdown accepts them."""
    ifup = require_tool("ifup")
    interfaces = rooted_copy(root / "etc/network/interfaces", root, tmp_path / "interfaces",
                             ["source", "source-directory"])
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.run([ifup, "--no-act", "--all", "--interfaces=%s" % interfaces,
                           "--state-dir=%s" % state, "--verbose"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, "ifup --no-act: " + shown(proc)
    return "\n".join(" ".join(line.split()) for line in (proc.stdout + proc.stderr).splitlines())


def test_ifupdown_accepts_the_interfaces(tmp_path):
    root = configured("debian12", tmp_path)
    ifup_no_act(root, tmp_path)
    interfaces = tmp_path / "interfaces"
    listed = subprocess.run(["ifquery", "--interfaces=%s" % interfaces, "--list", "--allow=auto"],
                            capture_output=True, text=True)
    assert "eth0" in listed.stdout.split(), shown(listed)
    static = subprocess.run(["ifquery", "--interfaces=%s" % interfaces, "eth0"],
                            capture_output=True, text=True)
    assert "address: 192.0.2.10" in static.stdout, shown(static)


def test_ifupdown_configures_ipv6_as_asked(tmp_path):
    """static: both addresses and the link-local gateway on eth0, router advertisements
    off; auto: autoconfiguration on; disabled: the kernel's IPv6 off (eth1, dhcp, is not
    brought up at boot)."""
    run = ifup_no_act(configured("debian12", tmp_path, IPV6_NICS), tmp_path).splitlines()
    for command in ("ip -6 addr add 2001:db8::10/64 dev eth0",
                    "ip -6 addr add 2001:db8:1::10/64 dev eth0",
                    "ip -6 route replace default via fe80::1 dev eth0 onlink",
                    "sysctl -q -e -w net.ipv6.conf.eth0.accept_ra=0",
                    "sysctl -q -e -w net.ipv6.conf.eth2.autoconf=1",
                    "sysctl -q -e -w net.ipv6.conf.eth3.disable_ipv6=1"):
        assert command in run, "ifup would not run %r:\n%s" % (command, "\n".join(run))
    assert not [line for line in run if "eth1" in line and "inet6" in line]


@pytest.mark.parametrize("ipv6", [False, True])
def test_ifupdown_keeps_the_templates_ipv6_unless_given(tmp_path, ipv6):
    root = configured("debian12", tmp_path, IPV6_NICS if ipv6 else TWO_NICS, template_ipv6=True)
    run = ifup_no_act(root, tmp_path).splitlines()
    template = "ip -6 addr add 2001:db8::99/64 dev eth0"
    assert (template in run) is not ipv6, "\n".join(run)


def netplan_generated(root: Path) -> Dict[str, str]:
    """systemd-networkd's files that ``netplan generate`` makes from the root's YAML."""
    netplan = require_tool("netplan")
    proc = subprocess.run([netplan, "generate", "--root-dir", str(root)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, "netplan generate: " + shown(proc)
    # (it warns, and goes on, about default routes that conflict)
    assert "default route" not in proc.stderr, shown(proc)
    return {p.name: p.read_text() for p in (root / "run/systemd/network").glob("*.network")}


def test_netplan_generates_from_the_yaml(tmp_path):
    generated = netplan_generated(configured("ubuntu2204", tmp_path))
    assert any("eth0" in name for name in generated), generated


def test_netplan_configures_ipv6_as_asked(tmp_path):
    generated = netplan_generated(configured("ubuntu2204", tmp_path, IPV6_NICS))
    eth = {n: generated["10-netplan-eth%d.network" % n].splitlines() for n in range(4)}
    for line in ("Address=192.0.2.10/24", "Address=2001:db8::10/64", "Address=2001:db8:1::10/64",
                 "Gateway=fe80::1", "IPv6AcceptRA=no", "LinkLocalAddressing=ipv6"):
        assert line in eth[0], generated
    assert "DHCP=yes" in eth[1] and "IPv6AcceptRA=yes" in eth[1], generated
    assert "DHCP=ipv4" in eth[2] and "IPv6AcceptRA=yes" in eth[2], generated
    assert "LinkLocalAddressing=no" in eth[3] and "IPv6AcceptRA=no" in eth[3], generated


@pytest.mark.parametrize("ipv6", [False, True])
def test_netplan_keeps_the_templates_ipv6_unless_given(tmp_path, ipv6):
    """The template asks DHCPv6 on eth0; without IPv6 keys that stays (eth0's IPv4 is
    static), with them ours wins."""
    root = configured("ubuntu2204", tmp_path, IPV6_NICS if ipv6 else TWO_NICS, template_ipv6=True)
    eth0 = netplan_generated(root)["10-netplan-eth0.network"].splitlines()
    assert ("DHCP=ipv6" in eth0) is not ipv6, eth0


def nmcli_reads(keyfile: Path) -> str:
    """The keyfile as NetworkManager 1.42 writes it back after reading it; asserts that
    NetworkManager accepts it."""
    proc = subprocess.run([require_tool("nmcli"), "--offline", "connection", "modify",
                           "connection.autoconnect", "yes"],
                          stdin=keyfile.open(), capture_output=True, text=True)
    assert proc.returncode == 0, "nmcli --offline on %s: %s" % (keyfile.name, shown(proc))
    return proc.stdout


def section(text: str, name: str) -> List[str]:
    return text.split("[%s]\n" % name, 1)[1].split("\n\n")[0].splitlines()


def test_networkmanager_reads_the_keyfiles(tmp_path):
    root = configured("ol9", tmp_path)
    keyfiles = sorted((root / "etc/NetworkManager/system-connections").glob("ovm-*.nmconnection"))
    assert keyfiles
    for keyfile in keyfiles:
        assert "[ipv4]" in nmcli_reads(keyfile)


def test_networkmanager_reads_the_ipv6_settings(tmp_path):
    directory = configured("ol9", tmp_path, IPV6_NICS) / "etc/NetworkManager/system-connections"
    ipv6 = {n: section(nmcli_reads(directory / ("ovm-eth%d.nmconnection" % n)), "ipv6")
            for n in range(4)}
    assert ipv6[0] == ["address1=2001:db8::10/64,fe80::1", "address2=2001:db8:1::10/64",
                       "dns=2001:db8::53;", "method=manual"], ipv6
    assert [ipv6[n] for n in (1, 2, 3)] == [["method=dhcp"], ["method=auto"],
                                            ["method=disabled"]], ipv6
    ipv4 = section(nmcli_reads(directory / "ovm-eth0.nmconnection"), "ipv4")
    assert "dns=192.0.2.53;" in ipv4, ipv4


def test_networkmanager_reads_the_templates_ipv6_in_our_profile(tmp_path):
    directory = configured("ol9", tmp_path, template_ipv6=True) / \
        "etc/NetworkManager/system-connections"
    ipv6 = section(nmcli_reads(directory / "ovm-eth0.nmconnection"), "ipv6")
    assert ipv6 == ["addr-gen-mode=eui64", "address1=2001:db8::99/64,2001:db8::1",
                    "method=manual"], ipv6


def test_nmcli_check_can_fail(tmp_path):
    """The keyfile check above can fail: an invalid keyfile is rejected."""
    bad = tmp_path / "bad.nmconnection"
    bad.write_text("[connection]\nid=x\ntype=ethernet\n\n[ipv4]\nmethod=manual\naddress1=300.1.1.1/24\n")
    proc = subprocess.run([require_tool("nmcli"), "--offline", "connection", "modify",
                           "connection.autoconnect", "yes"], stdin=bad.open(),
                          capture_output=True, text=True)
    assert proc.returncode != 0


# --- accounts and the firewall ---------------------------------------------------------------

#: What pwck says about a fixture root itself, not about the account files: the roots
#: hold the files the modules read, not the system users' programs and directories.
FIXTURE_ONLY = re.compile(r"^user '[^']+': (directory|program) '[^']+' does not exist$|"
                          r"^(pwck|grpck): no changes$")


@pytest.mark.parametrize("name", ROOT_NAMES)
def test_pwck_and_grpck_accept_the_account_files(name, tmp_path):
    pwck, grpck = require_tool("pwck"), require_tool("grpck")
    root = configured(name, tmp_path)
    problems: Dict[str, List[str]] = {}
    for tool in (pwck, grpck):
        proc = subprocess.run([tool, "-r", "-R", str(root)], capture_output=True, text=True)
        lines = [line for line in (proc.stdout + proc.stderr).splitlines()
                 if line.strip() and not FIXTURE_ONLY.match(line)]
        if lines or proc.returncode not in (0, 2):
            problems[os.path.basename(tool)] = ["exit %d" % proc.returncode] + lines
    assert problems == {}, "on %s" % name
    home = root / "home/alice"
    assert home.is_dir(), "useradd -m made no home for the new user on %s" % name


def test_nft_accepts_the_ruleset(tmp_path):
    nft = require_tool("nft")
    root = configured("debian12", tmp_path)
    # -c needs a netlink socket; a fresh network namespace keeps this machine's out of it.
    proc = subprocess.run(["unshare", "--net", nft, "-c", "-f", str(root / "etc/nftables.conf")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, "nft -c -f /etc/nftables.conf: " + shown(proc)
