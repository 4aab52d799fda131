"""What a tired operator types, and what every command answers: one line that names the
problem and what to do, no traceback, the documented exit status, and nothing created or
changed (the sandbox's tree is compared before and after).

One table for the five commands, the real installed commands against the development
XenStore; the fuzz of their argument parsing is in ``test_command_line_fuzz.py``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import pytest
from testlib import bin_path, start_xenstored

#: setpriv arguments that run a command as nobody (the operator without root).
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


class Mistake(NamedTuple):
    name: str
    argv: List[str]           # {guest} {missing} {empty} {xs} {batch} are filled in
    code: int
    says: str                 # in the error line
    usage: bool = False       # argparse's usage error: the usage, then the error line
    env: Dict[str, str] = {}
    as_nobody: bool = False


MISTAKES = [
    # --root that is not a guest root: refused by every command that takes one
    Mistake("template-config root missing", ["ovm-template-config", "--root", "{missing}",
            "--stdin", "configure"], 2, "--root {missing}: no such directory"),
    Mistake("template-config root without etc", ["ovm-template-config", "--root", "{empty}",
            "--enumerate", "configure"], 2, "--root {empty}: it has no etc/ directory"),
    Mistake("template-config dry run, root missing", ["ovm-template-config", "--root",
            "{missing}", "--dry-run", "configure"], 2, "no such directory"),
    Mistake("chkconfig root missing", ["ovm-chkconfig", "--root", "{missing}", "--list"], 2,
            "--root {missing}: no such directory"),
    Mistake("chkconfig root from the environment", ["ovm-chkconfig", "--list"], 2,
            "OVM_TEMPLATE_CONFIG_ROOT={empty}: it has no etc/ directory",
            env={"OVM_TEMPLATE_CONFIG_ROOT": "{empty}"}),
    Mistake("ovmd client root missing", ["ovmd", "--root", "{missing}", "-g", "k"], 2,
            "--root {missing}: no such directory"),
    Mistake("ovmd daemon root missing", ["ovmd", "--root", "{missing}", "--foreground"], 2,
            "--root {missing}: no such directory"),
    Mistake("ovmd flag root missing", ["ovmd", "--root", "{missing}",
            "--enable-initial-config"], 2, "no such directory"),
    Mistake("ovmd root not readable", ["ovmd", "--root", "{private}", "-l"], 2,
            "--root {private}: permission denied (run as root)", as_nobody=True),
    # exit codes
    Mistake("status without a daemon", ["ovmd", "--root", "{guest}", "--status"], 3,
            "the ovmd daemon is not running"),
    Mistake("unknown event without a daemon", ["ovmd", "--root", "{guest}", "-e", "bogus"],
            2, "ovmd: unknown event 'bogus' (one of snapshot, migrate"),
    # a guest the modules do not know: said once (the dry run's plan only names it)
    Mistake("guest root without os-release", ["ovm-template-config", "--root", "{guest}",
            "--stdin", "--dry-run", "configure"], 1, "ssh failed: unsupported guest"),
    Mistake("chkconfig unknown target", ["ovm-chkconfig", "--root", "{guest}", "--target",
            "bogus", "ssh", "on"], 2, "unknown target 'bogus'; the targets are: configure"),
    Mistake("flag without root", ["ovmd", "--root", "{guest}", "--enable-initial-config"], 4,
            "cannot set INITIAL_CONFIG: {guest}/etc/sysconfig", as_nobody=True),
    # options where they do nothing
    Mistake("vmmessage --new with -k", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "1",
            "-k", "a", "-V", "b", "--new"], 2, "--new goes with --wait KEY", usage=True),
    Mistake("vmmessage --timeout with -q", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "1",
            "-q", "a", "--timeout", "5"], 2, "--timeout goes with --wait KEY", usage=True),
    Mistake("vmmessage -V with -l", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "1", "-l",
            "-V", "b"], 2, "-V goes with -k KEY", usage=True),
    Mistake("ovmd daemon option with a request", ["ovmd", "--root", "{guest}", "-g", "k",
            "--foreground"], 2, "--foreground goes with running the daemon", usage=True),
    Mistake("enumerate with the options of a run", ["ovm-template-config", "--root",
            "{guest}", "--enumerate", "--dry-run", "configure"], 2,
            "--dry-run would do nothing with --enumerate"),
    Mistake("sdk option without --new-module", ["ovm-template-config", "--dest", "{guest}",
            "configure"], 2, "--dest goes with --new-module NAME", usage=True),
    # numbers that are not numbers, descriptors that are not open
    Mistake("template-config timeout inf", ["ovm-template-config", "--root", "{guest}",
            "--stdin", "--timeout", "inf", "configure"], 2,
            "argument --timeout: expected seconds (more than 0), got 'inf'", usage=True),
    Mistake("template-config lock timeout nan", ["ovm-template-config", "--root", "{guest}",
            "--stdin", "--lock-timeout", "nan", "configure"], 2,
            "argument --lock-timeout: expected seconds (0 or more), got 'nan'", usage=True),
    Mistake("template-config output fd not open", ["ovm-template-config", "--root",
            "{guest}", "--stdin", "--output", "99", "configure"], 2,
            "--output 99: not an open file descriptor"),
    Mistake("template-config output fd negative", ["ovm-template-config", "--root",
            "{guest}", "--stdin", "--output", "-1", "configure"], 2,
            "argument --output: expected a file descriptor number", usage=True),
    Mistake("vmmessage timeout inf", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "1",
            "--wait", "k", "--timeout", "inf"], 2,
            "argument --timeout: expected seconds (0 or more), got 'inf'", usage=True),
    Mistake("ovmd quiet period nan", ["ovmd", "--root", "{guest}", "--quiet-period", "nan"],
            2, "argument --quiet-period: expected seconds (0 or more), got 'nan'", usage=True),
    # the host side: no such guest, no permission, no batch file
    Mistake("vmmessage unknown domain", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "99",
            "-k", "a", "-V", "b"], 1, "no domain 99: XenStore does not know it"),
    Mistake("vmmessage dom0", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "0", "-k", "a",
            "-V", "b"], 2, "domain 0 is the host (dom0), not a guest"),
    Mistake("vmmessage dom0 by name", ["ovm-vmmessage", "--xenstore", "{xs}", "-d",
            "Domain-0", "-k", "a", "-V", "b"], 2, "domain 0 is the host (dom0), not a guest"),
    Mistake("vmmessage missing batch", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "1",
            "--batch", "{missing}"], 1, "--batch {missing}: no such file or directory"),
    Mistake("vmmessage as a user", ["ovm-vmmessage", "--xenstore", "{xs}", "-d", "1", "-k",
            "a", "-V", "b"], 1, "cannot connect to xenstored at {xs}: permission denied "
            "(run as root)", as_nobody=True),
    Mistake("ovmd daemon as a user", ["ovmd", "--root", "{guest}", "--foreground", "-d", "1",
            "--xenstore", "{xs}"], 1, "ovmd: cannot start: {guest}/run: permission denied (run "
            "as root)", as_nobody=True),
    # the daemon pointed at a wrong XenStore
    Mistake("ovmd --xenstore missing", ["ovmd", "--root", "{guest}", "--foreground", "-d",
            "1", "--xenstore", "{missing}"], 1, "--xenstore {missing}: no such file or "
            "directory; give xenstored's socket"),
    Mistake("ovmd XENSTORED_PATH not a socket", ["ovmd", "--root", "{guest}",
            "--foreground", "-d", "1"], 1, "XENSTORED_PATH={batch}: neither a unix socket "
            "nor a character device", env={"XENSTORED_PATH": "{batch}"}),
]


def tree(base: Path) -> Dict[str, Optional[bytes]]:
    """Every path under ``base`` with its content (None for a directory)."""
    found: Dict[str, Optional[bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(str(base)):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), str(base))] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                found[os.path.relpath(path, str(base))] = b"<special>"
                continue
            with open(path, "rb") as handle:
                found[os.path.relpath(path, str(base))] = handle.read()
    return found


@pytest.fixture(scope="module")
def world():
    """A sandbox everyone may traverse (for the cases run as nobody): a guest root with
    ssh, a root without etc/, a root nobody may enter, a JSON-lines file, and a running
    development XenStore with guest 1."""
    base = Path(tempfile.mkdtemp(prefix="mst-", dir="/tmp"))
    os.chmod(str(base), 0o755)
    guest = base / "guest"
    (guest / "etc/template.d/scripts").mkdir(parents=True)
    shutil.copy2(str(Path(__file__).parent.parent / "template.d/scripts/ssh"),
                 str(guest / "etc/template.d/scripts/ssh"))
    subprocess.run([bin_path("ovm-chkconfig"), "--root", str(guest), "--add", "ssh"],
                   check=True)
    (base / "empty").mkdir()
    (base / "private/guest/etc").mkdir(parents=True)
    os.chmod(str(base / "private"), 0o700)
    (base / "messages.json").write_text('{"a": "b"}\n')
    server = start_xenstored(base / "xs", {1: "guest1"})
    try:
        yield {"base": base, "guest": str(guest), "missing": str(base / "missing"),
               "empty": str(base / "empty"), "private": str(base / "private/guest"),
               "xs": server.dom0_socket, "batch": str(base / "messages.json"),
               "server": server}
    finally:
        server.stop()
        shutil.rmtree(str(base), ignore_errors=True)


def xenstore_tree(world) -> str:
    return subprocess.run(["xenstore-ls", "-fp"], capture_output=True, text=True,
                          env=dict(os.environ, XENSTORED_PATH=world["xs"]), check=True).stdout


@pytest.mark.parametrize("mistake", MISTAKES, ids=[m.name for m in MISTAKES])
def test_a_mistake_gets_one_line_and_its_exit_status(world, mistake):
    def fill(text: str) -> str:
        return text.format(**{k: v for k, v in world.items() if isinstance(v, str)})

    argv = [bin_path(mistake.argv[0])] + [fill(arg) for arg in mistake.argv[1:]]
    if mistake.as_nobody:
        argv = AS_NOBODY + argv
    env = dict(os.environ)
    env.pop("OVM_TEMPLATE_CONFIG_ROOT", None)
    env.pop("XENSTORED_PATH", None)
    env.update({key: fill(value) for key, value in mistake.env.items()})
    files_before, store_before = tree(world["base"]), xenstore_tree(world)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.returncode == mistake.code, proc.stderr
    lines = proc.stderr.splitlines()
    if mistake.usage:
        assert lines[0].startswith("usage: ")
    else:
        assert len(lines) == 1, proc.stderr
    assert fill(mistake.says) in lines[-1]
    reason = lines[-1].split(": ", 2)[-1]
    assert reason not in proc.stdout  # said once
    assert tree(world["base"]) == files_before
    assert xenstore_tree(world) == store_before
