#!/usr/bin/env python3
"""`make demo`: a cloned Oracle Linux 9 template configured on its first boot, end to end.

1. start the development XenStore (`ovmd-xenstored`) with one guest domain;
2. start `ovmd` for that guest on a sandbox root shaped like a fresh OL9 template (the
   OL9 fixture root with a real guest's modes, scripts/sandbox_root.py; INITIAL_CONFIG=yes,
   the eight standard modules registered);
3. play the manager with `ovm-vmmessage`: hostname, two NICs (static and dhcp), a user
   with an ssh key, timezone and NTP, selinux, firewall, and the root password last;
   the messages are printed first, the values of secret keys masked (by the key, as the
   daemon decides what is secret);
4. wait for the first-boot result and print each module's status and time, the files
   that changed (as a diff; secret files, such as new private host keys, are named with
   their mode and owner, never shown; the backups the shadow tools keep are named in one
   line), the commands recorded for the running system, and the messages the guest sent
   back.

Everything runs as child processes of this script and is stopped before it exits; the
sandbox directory is removed unless --keep is given. Without root, modules that need
root (accounts, passwords) run in plan mode and say so.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import sandbox_root

from ovmd.firstboot.contract import STATUS_DONE, STATUS_KEY
from ovmd.secrets import is_secret_key

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEMPLATE = "ol9"  # the fixture root the template is made from
DOMID = 7
#: The backups the shadow tools keep of the account files they change.
ACCOUNT_BACKUPS = {"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-"}
# A throw-away demo key, generated for this repository; it grants access to nothing.
DEMO_PUBKEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFy0D0z6sYzQ1xV8XbqfQe3oPj0m5p0JrGfW3kqV9d1N "
               "alice@demo")

MESSAGES = [
    ("com.oracle.linux.network.hostname", "web01.example.com"),
    ("com.oracle.linux.network.host.0", "192.0.2.10 web01.example.com web01"),
    ("com.oracle.linux.network.device.0", "eth0"),
    ("com.oracle.linux.network.onboot.0", "yes"),
    ("com.oracle.linux.network.bootproto.0", "static"),
    ("com.oracle.linux.network.ipaddr.0", "192.0.2.10"),
    ("com.oracle.linux.network.netmask.0", "255.255.255.0"),
    ("com.oracle.linux.network.gateway.0", "192.0.2.1"),
    ("com.oracle.linux.network.dns-servers.0", "192.0.2.53,198.51.100.53"),
    ("com.oracle.linux.network.dns-search-domains.0", "example.com"),
    ("com.oracle.linux.network.device.1", "eth1"),
    ("com.oracle.linux.network.onboot.1", "yes"),
    ("com.oracle.linux.network.bootproto.1", "dhcp"),
    ("com.oracle.linux.group.name.0", "web"),
    ("com.oracle.linux.group.action.0", "add"),
    ("com.oracle.linux.group.gid.0", "2000"),
    ("com.oracle.linux.user.name.0", "alice"),
    ("com.oracle.linux.user.action.0", "add"),
    ("com.oracle.linux.user.uid.0", "2001"),
    ("com.oracle.linux.user.groups.0", "web"),
    ("com.oracle.linux.user.password.0", "Al1ce-demo-pass"),
    ("com.oracle.linux.ssh.user.0", "alice"),
    ("com.oracle.linux.ssh.authorized-keys.0", DEMO_PUBKEY),
    ("com.oracle.linux.datetime.timezone", "Europe/Paris"),
    ("com.oracle.linux.datetime.utc", "True"),
    ("com.oracle.linux.datetime.ntp", "True"),
    ("com.oracle.linux.datetime.ntp-servers", "0.pool.ntp.org,1.pool.ntp.org"),
    ("com.oracle.linux.selinux.mode", "permissive"),
    ("com.oracle.linux.network.firewall", "True"),
    ("com.oracle.linux.root-password", "r00t-demo-pass"),  # always last, as real managers do
]


class Demo:
    def __init__(self, keep: bool, timeout: float) -> None:
        self.keep = keep
        self.timeout = timeout
        # Unix socket paths are limited to 108 bytes: keep the directory short.
        self.work = Path(tempfile.mkdtemp(prefix="ovmd-demo-", dir="/tmp"))
        self.root = self.work / "guest"
        self.sockets = self.work / "xs"
        self.processes: List[subprocess.Popen] = []
        self.started = time.monotonic()

    # --- helpers --------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print("[%5.2fs] %s" % (time.monotonic() - self.started, text), flush=True)

    def tool(self, name: str) -> str:
        return str(BIN / name)

    def run(self, argv: List[str], stdin: Optional[str] = None, check: bool = True) -> str:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True,
                              timeout=self.timeout)
        if check and proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(argv[:3]), proc.returncode,
                                                         proc.stderr.strip()))
        return proc.stdout

    def host(self, *args: str, stdin: Optional[str] = None, check: bool = True) -> str:
        return self.run([self.tool("ovm-vmmessage"), "--xenstore", str(self.sockets / "socket"),
                         "-d", str(DOMID)] + list(args), stdin=stdin, check=check)

    # --- steps --------------------------------------------------------------------------------
    def make_template(self) -> None:
        sandbox_root.fixture_root(TEMPLATE, self.root)
        sysconfig = self.root / "etc" / "sysconfig"
        sysconfig.mkdir(parents=True, exist_ok=True)
        (sysconfig / "ovmd").write_text("INITIAL_CONFIG=yes\n")
        sandbox_root.install_modules(self.root)
        self.say("template root %s: Oracle Linux 9, INITIAL_CONFIG=yes, %d modules registered"
                 % (self.root, len(sandbox_root.STANDARD_MODULES)))

    def start_xenstored(self) -> None:
        proc = subprocess.Popen(
            [self.tool("ovmd-xenstored"), "--socket-dir", str(self.sockets),
             "--domain", "%d:ol9-template" % DOMID],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.processes.append(proc)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("ovmd-xenstored did not start: %s" % proc.stderr.read())
        self.say("ovmd-xenstored ready: dom0 socket %s, guest %d socket %s"
                 % (self.sockets / "socket", DOMID, self.sockets / "domain" / str(DOMID)))

    def start_ovmd(self) -> None:
        notify_path = str(self.work / "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        notify.settimeout(self.timeout)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        self.ovmd_log = open(self.work / "ovmd.log", "wb")
        proc = subprocess.Popen(
            [self.tool("ovmd"), "--foreground", "--root", str(self.root), "--xenstore",
             str(self.sockets / "domain" / str(DOMID)), "-d", "1", "--quiet-period", "0.3"],
            stdout=self.ovmd_log, stderr=subprocess.STDOUT, env=env)
        self.processes.append(proc)
        try:
            while True:
                if b"READY=1" in notify.recv(4096):
                    break
        except socket.timeout:
            raise RuntimeError("ovmd did not become ready; see %s" % (self.work / "ovmd.log"))
        finally:
            notify.close()
        self.say("ovmd running in the guest (pid %d), watching the message channel" % proc.pid)

    def print_messages(self) -> None:
        print("\nMessages the manager sends (in this order; secret keys' values masked):")
        width = max(len(key) for key, _ in MESSAGES)
        for key, value in MESSAGES:
            print("  %-*s  %s" % (width, key, "******** (secret)" if is_secret_key(key)
                                  else value))
        print()

    def send_messages(self) -> None:
        batch = "".join(json.dumps({"key": k, "value": v}) + "\n" for k, v in MESSAGES)
        self.host("--batch", "-", stdin=batch)
        self.say("manager sent %d messages with ovm-vmmessage (root password last)" % len(MESSAGES))

    def wait_result(self) -> str:
        value = self.host("--wait", STATUS_KEY, "--timeout", str(self.timeout)).strip()
        self.say("guest reported %s = %s" % (STATUS_KEY, value))
        return value

    # --- report -----------------------------------------------------------------------------------
    def status(self) -> dict:
        out = self.run([self.tool("ovmd"), "--root", str(self.root), "--status", "--json"],
                       check=False)
        return json.loads(out) if out.strip() else {}

    def print_modules(self, status: dict) -> None:
        report = status.get("last_run") or status.get("report") or status
        modules = report.get("modules", [])
        print("\nModules (target %s):" % report.get("target", "configure"))
        for module in modules:
            seconds = module.get("seconds")
            planned = any(a.startswith("would ") and not a.startswith("would run: ")
                          for a in module.get("actions", []))
            note = (module.get("error") or "").splitlines()[0] if module.get("error") else \
                "planned only (needs root; nothing changed)" if planned else ""
            print("  %-16s %-8s %6s  %s" % (
                module.get("name"), module.get("status"),
                "%.3fs" % seconds if isinstance(seconds, (int, float)) else "-", note))
        commands = [(m.get("name"), a[len("would run: "):]) for m in modules
                    for a in m.get("actions", []) if a.startswith("would run: ")]
        if commands:
            print("\nCommands for the running system (recorded, not run: the sandbox has none):")
            for name, command in commands:
                print("  %-16s %s" % (name, command))

    def print_changes(self, before: Dict[str, Entry]) -> None:
        after = snapshot(self.root)
        owners = Owners(self.root)
        print("\nFiles changed in the guest:")
        skip = ("var/lib/ovmd", "var/lib/ovm-template-config", "run/", "var/log/")
        changed = sorted(p for p in set(before) | set(after)
                         if before.get(p) != after.get(p) and not p.startswith(skip))
        backups = [p for p in changed if p in ACCOUNT_BACKUPS]
        for path in changed:
            if path in backups:
                continue
            old, new = before.get(path), after.get(path)
            what = "created" if old is None else "removed" if new is None else "changed"
            if _looks_secret(path):
                print("--- /%s: %s%s (secret: content not shown)"
                      % (path, what, owners.describe(old, new)))
                continue
            old_text = _text(old)
            new_text = _text(new)
            if old_text is None or new_text is None:
                print("--- /%s: %s (binary or special file)%s"
                      % (path, what, owners.describe(old, new)))
                continue
            diff = list(difflib.unified_diff(
                old_text.splitlines(True), new_text.splitlines(True),
                "a/" + path if old is not None else "/dev/null",
                "b/" + path if new is not None else "/dev/null"))
            sys.stdout.writelines(diff)
            meta_changed = old is not None and new is not None and old[:3] != new[:3]
            if not diff or meta_changed:
                note = what if diff else "mode or owner changed" if meta_changed else \
                    what + ", empty"
                print("--- /%s: %s%s" % (path, note, owners.describe(old, new)))
        if backups:
            print("(and the backups the shadow tools keep of what they changed: %s)"
                  % ", ".join("/" + p for p in backups))
        print("(%d files changed)" % len(changed))

    def print_sent_back(self) -> None:
        print("\nMessages the guest sent back to the host:")
        for line in self.host("-l").splitlines():
            print("  " + line)

    # --- the whole thing ------------------------------------------------------------------------
    def main(self) -> int:
        if os.geteuid() != 0:
            self.say("not root: modules that need root run in plan mode (dry run) and say so")
        self.make_template()
        before = snapshot(self.root)
        self.start_xenstored()
        self.start_ovmd()
        self.print_messages()
        self.send_messages()
        result = self.wait_result()
        self.print_modules(self.status())
        self.print_changes(before)
        self.print_sent_back()
        self.stop()
        self.say("done: first boot %s; every process stopped" % result)
        return 0 if result == STATUS_DONE else 1

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes = []

    def cleanup(self) -> None:
        self.stop()
        if self.keep:
            print("kept %s" % self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def _looks_secret(path: str) -> bool:
    name = os.path.basename(path)
    if name.endswith(".pub"):
        return False
    return (name in ("shadow", "gshadow", "shadow-", "gshadow-") or name.endswith("_key")
            or name.startswith("id_"))


#: One file of a snapshot: (mode, uid, gid, content; a link's content is its target).
Entry = Tuple[int, int, int, Optional[bytes]]


class Owners:
    """User and group names from the guest's own /etc/passwd and /etc/group (not the
    host's: the sandbox's accounts are not the host's)."""

    def __init__(self, root: Path) -> None:
        self.users = self._names(root / "etc" / "passwd")
        self.groups = self._names(root / "etc" / "group")

    @staticmethod
    def _names(path: Path) -> Dict[int, str]:
        names = {}
        for line in path.read_text().splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                names.setdefault(int(fields[2]), fields[0])
        return names

    def mode(self, entry: Entry) -> str:
        return "mode %04o %s:%s" % (entry[0] & 0o7777, self.users.get(entry[1], entry[1]),
                                    self.groups.get(entry[2], entry[2]))

    def describe(self, old: Optional[Entry], new: Optional[Entry]) -> str:
        """", mode 0640 root:ssh_keys" for a new file, "..., was ..." for a change."""
        if new is None:
            return ""
        if old is None or old[:3] == new[:3]:
            return ", " + self.mode(new)
        return ", %s, was %s" % (self.mode(new), self.mode(old))


def _text(entry: Optional[Entry]) -> Optional[str]:
    if entry is None:
        return ""
    data = entry[3]
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def snapshot(root: Path) -> Dict[str, Entry]:
    """path -> (mode, uid, gid, content) for every file and link under root (links as
    their target)."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                tree[rel] = (st.st_mode, st.st_uid, st.st_gid,
                             ("-> " + os.readlink(path) + "\n").encode())
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    tree[rel] = (st.st_mode, st.st_uid, st.st_gid, handle.read())
    return tree


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true",
                        help="keep the sandbox directory (the guest root, the sockets, "
                        "ovmd.log) to look at afterwards")
    parser.add_argument("--timeout", type=float, default=20, help="seconds to wait for each step")
    args = parser.parse_args(argv)
    demo = Demo(args.keep, args.timeout)
    try:
        return demo.main()
    except BrokenPipeError:  # `make demo | head`: stop quietly, clean up all the same
        sys.stdout = open(os.devnull, "w")
        return 1
    except Exception as exc:  # a demo explains, it does not dump a traceback
        print("demo failed: %s (log: %s)" % (exc, demo.work / "ovmd.log"), file=sys.stderr)
        demo.keep = True
        return 1
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
