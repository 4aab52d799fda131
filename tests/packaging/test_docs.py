"""Man pages and bash completion: they render, they complete, and they move with the code
(every long option a command's --help prints is in its man page and its completion)."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import textwrap
from pathlib import Path
from typing import List, Optional

import pytest
from packaging_helpers import REPO, bin_path, require_tool

COMMANDS = ("ovmd", "ovm-template-config", "ovm-chkconfig", "ovm-vmmessage")
MAN = REPO / "packaging" / "man"
COMPLETION = REPO / "packaging" / "completion"
TARGETS = "configure unconfigure reconfigure cleanup suspend resume migrate shutdown".split()


# --- man pages ---------------------------------------------------------------------------

@pytest.mark.parametrize("command", COMMANDS)
def test_man_page_renders_without_warnings(command):
    groff = require_tool("groff")
    page = MAN / ("%s.8" % command)
    proc = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", str(page)],
                          capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (0, "")


@pytest.mark.parametrize("command", COMMANDS)
def test_man_renders_the_page(command):
    man = require_tool("man")
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8")
    proc = subprocess.run([man, "--warnings", "-l", str(MAN / ("%s.8" % command))],
                          capture_output=True, text=True, env=env)
    assert (proc.returncode, proc.stderr) == (0, "")
    text = proc.stdout
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO"):
        assert "\n%s\n" % section in text, section
    assert text.startswith(command.upper())


def man_text(command: str) -> str:
    """The man page as text (roff escapes for '-' removed), for option look-ups."""
    return (MAN / ("%s.8" % command)).read_text().replace("\\-", "-")


def test_ovmd_page_documents_sealing_and_files():
    text = man_text("ovmd")
    for needle in ("ovmd -s cleanup", "service ovmd enable-initial-config",
                   "/etc/sysconfig/ovmd", "/etc/sysconfig/ovm-template-initial-config",
                   "/var/lib/ovmd", "/run/ovmd", "/var/log/ovm-template-config.log"):
        assert needle in text, needle


def test_template_config_page_documents_targets_and_sdk():
    text = man_text("ovm-template-config")
    for target in TARGETS:
        assert ".BR %s" % target in text or ".B %s" % target in text, target
    assert "--new-module" in text and "make rpm" in text


# --- bash completion ---------------------------------------------------------------------

def complete(command: str, line: str, env: Optional[dict] = None) -> List[str]:
    """COMPREPLY for the command line ``line`` (the cursor at its end) after sourcing the
    command's completion file in a fresh bash."""
    bash = require_tool("bash")
    words = shlex.split(line) + ([""] if line.endswith(" ") else [])
    script = textwrap.dedent("""\
        source %(file)s
        spec=$(complete -p %(command)s) || exit 3
        function=$(printf '%%s\\n' "$spec" | sed -n 's/.* -F \\([^ ]*\\) .*/\\1/p')
        COMP_WORDS=(%(words)s)
        COMP_CWORD=%(cword)d
        COMP_LINE=%(line)s
        COMP_POINT=${#COMP_LINE}
        "$function" %(command)s "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%%s\\n' "${COMPREPLY[@]}"
        """) % {"file": shlex.quote(str(COMPLETION / command)), "command": command,
                "words": " ".join(shlex.quote(w) for w in words), "cword": len(words) - 1,
                "line": shlex.quote(line)}
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run([bash, "--norc", "--noprofile", "-c", script], capture_output=True,
                          text=True, env=full_env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    return sorted(line for line in proc.stdout.splitlines() if line)


@pytest.mark.parametrize("command", COMMANDS)
def test_completion_is_registered(command):
    bash = require_tool("bash")
    proc = subprocess.run([bash, "--norc", "--noprofile", "-c",
                           "source %s && complete -p %s" % (shlex.quote(str(COMPLETION / command)), command)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert re.match(r"complete -F _\S+ %s$" % re.escape(command), proc.stdout.strip())


def test_ovmd_completes_options_targets_and_events():
    assert "--set-param" in complete("ovmd", "ovmd --se")
    assert complete("ovmd", "ovmd --enable") == ["--enable-initial-config"]
    assert complete("ovmd", "ovmd -s c") == ["cleanup", "configure"]
    assert complete("ovmd", "ovmd --event ip") == ["ip-address"]
    assert complete("ovmd", "ovmd -d ") == ["0", "1", "2"]


def fake_ovmd(tmp_path: Path, output: str, status: int = 0) -> dict:
    """PATH with an ``ovmd`` that prints ``output`` for ``-l`` (the daemon's JSON lines)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "ovmd"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -l ] || exit 2\ncat <<'EOF'\n%sEOF\nexit %d\n" % (output, status))
    fake.chmod(0o755)
    return {"PATH": "%s:%s" % (bindir, os.environ["PATH"])}


def test_ovmd_completes_cached_keys(tmp_path):
    env = fake_ovmd(tmp_path, '{"com.example.app.state": "ready"}\n'
                              '{"com.oracle.linux.network.hostname": "a \\"b\\": c"}\n')
    assert complete("ovmd", "ovmd -g com.", env) == ["com.example.app.state",
                                                     "com.oracle.linux.network.hostname"]
    assert complete("ovmd", "ovmd --delete-param com.ex", env) == ["com.example.app.state"]
    assert complete("ovmd", "ovmd -p com.ex", env) == ["com.example.app.state="]


def test_ovmd_key_completion_is_quiet_without_a_daemon(tmp_path):
    env = fake_ovmd(tmp_path, "", status=3)
    assert complete("ovmd", "ovmd -g ", env) == []


def test_template_config_completes_targets_and_modules(tmp_path):
    assert complete("ovm-template-config", "ovm-template-config re") == ["reconfigure", "resume"]
    assert "--ovf-transport-iso" in complete("ovm-template-config", "ovm-template-config --o")
    scripts = tmp_path / "etc" / "template.d" / "scripts"
    scripts.mkdir(parents=True)
    for name in ("network", "ssh", "selinux"):
        (scripts / name).write_text("#!/bin/sh\n")
    line = "ovm-template-config --root %s -s s" % tmp_path
    assert complete("ovm-template-config", line) == ["selinux", "ssh"]


def test_chkconfig_completes_modules_targets_and_on_off(tmp_path):
    scripts = tmp_path / "etc" / "template.d" / "scripts"
    scripts.mkdir(parents=True)
    for name in ("network", "ssh"):
        (scripts / name).write_text("#!/bin/sh\n")
    root = "ovm-chkconfig --root %s " % tmp_path
    assert complete("ovm-chkconfig", root + "--add ") == ["network", "ssh"]
    assert complete("ovm-chkconfig", root + "--target configure,cl") == ["configure,cleanup"]
    assert complete("ovm-chkconfig", root + "--target configure n") == ["network"]
    assert complete("ovm-chkconfig", root + "--target configure ssh ") == ["off", "on"]
    assert complete("ovm-chkconfig", "ovm-chkconfig --l") == ["--list"]


def test_vmmessage_completes_options_and_keys():
    assert complete("ovm-vmmessage", "ovm-vmmessage --ba") == ["--batch"]
    assert complete("ovm-vmmessage", "ovm-vmmessage -k com.oracle.linux.root") == \
        ["com.oracle.linux.root-password"]
    assert complete("ovm-vmmessage", "ovm-vmmessage -V ") == ["-"]
    # what the guest sends, for -q and --wait
    assert complete("ovm-vmmessage", "ovm-vmmessage -q com.oracle.linux.network.ipa") == \
        ["com.oracle.linux.network.ipaddr.0", "com.oracle.linux.network.ipaddrs"]
    assert complete("ovm-vmmessage", "ovm-vmmessage --wait com.oracle.linux.ovmd.") == \
        ["com.oracle.linux.ovmd.initial-config-status"]
    assert complete("ovm-vmmessage", "ovm-vmmessage -k com.oracle.linux.network.ipa") == \
        ["com.oracle.linux.network.ipaddr.0"]


# --- the docs move with the code -----------------------------------------------------------

def long_options(command: str) -> List[str]:
    proc = subprocess.run([bin_path(command), "--help"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr
    options = set()
    for line in proc.stdout.splitlines():
        # argparse's option lines: "  -p KEY=VALUE, --set-param KEY=VALUE   help text"
        if re.match(r"\s+-", line):
            names = re.split(r"\s{2,}", line.strip())[0]
            options.update(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", names))
    return sorted(options)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_long_option_is_documented_and_completed(command):
    options = long_options(command)
    assert "--help" in options
    page = set(re.findall(r"--[a-z][a-z0-9-]*", man_text(command)))
    completion = set(re.findall(r"--[a-z][a-z0-9-]*", (COMPLETION / command).read_text()))
    assert [o for o in options if o not in page] == [], "missing from %s.8" % command
    assert [o for o in options if o not in completion] == [], "missing from the completion"
