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
from module_helpers import run_module
from test_datetime import FULL as DATETIME
from test_network import TWO_NICS
from testlib import FIXTURE_ROOTS, require_tool

ROOT_NAMES = sorted(p.name for p in FIXTURE_ROOTS.iterdir())
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


def configured(name: str, tmp_path: Path) -> Path:
    """Fixture root ``name`` after the standard modules' configure."""
    root = copy_fixture_root(name, tmp_path / name)
    for module, params in STEPS:
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

def test_ifupdown_accepts_the_interfaces(tmp_path):
    ifup = require_tool("ifup")
    root = configured("debian12", tmp_path)
    interfaces = rooted_copy(root / "etc/network/interfaces", root, tmp_path / "interfaces",
                             ["source", "source-directory"])
    state = tmp_path / "state"
    state.mkdir()
    proc = subprocess.run([ifup, "--no-act", "--all", "--interfaces=%s" % interfaces,
                           "--state-dir=%s" % state, "--verbose"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, "ifup --no-act: " + shown(proc)
    listed = subprocess.run(["ifquery", "--interfaces=%s" % interfaces, "--list", "--allow=auto"],
                            capture_output=True, text=True)
    assert "eth0" in listed.stdout.split(), shown(listed)
    static = subprocess.run(["ifquery", "--interfaces=%s" % interfaces, "eth0"],
                            capture_output=True, text=True)
    assert "address: 192.0.2.10" in static.stdout, shown(static)


def test_netplan_generates_from_the_yaml(tmp_path):
    netplan = require_tool("netplan")
    root = configured("ubuntu2204", tmp_path)
    proc = subprocess.run([netplan, "generate", "--root-dir", str(root)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, "netplan generate: " + shown(proc)
    generated = sorted(p.name for p in (root / "run/systemd/network").glob("*.network"))
    assert any("eth0" in name for name in generated), generated


def test_networkmanager_reads_the_keyfiles(tmp_path):
    nmcli = require_tool("nmcli")
    root = configured("ol9", tmp_path)
    keyfiles = sorted((root / "etc/NetworkManager/system-connections").glob("ovm-*.nmconnection"))
    assert keyfiles
    for keyfile in keyfiles:
        proc = subprocess.run([nmcli, "--offline", "connection", "modify",
                               "connection.autoconnect", "yes"],
                              stdin=keyfile.open(), capture_output=True, text=True)
        assert proc.returncode == 0, "nmcli --offline on %s: %s" % (keyfile.name, shown(proc))
        assert "[ipv4]" in proc.stdout


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
