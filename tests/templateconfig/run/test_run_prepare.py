"""Work that needs no params starts before them (templateconfig/run/prepare.py): a
module's ``--prepare`` call and its private staging directory, the command waiting for
its params on ``--input`` (as ovmd starts its first-boot runner), and leaving nothing
behind when it is stopped before they come. The ssh module's host keys are the real
case: on the OL8 fixture root (RSA keys) with the real ssh-keygen.
"""
from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from runner_helpers import (
    OVM_TEMPLATE_CONFIG,
    TIMEOUT,
    add_script,
    add_shell_module,
    guest,
    run_cli,
    tree_hashes,
)
from testlib import fixture_root, install_modules, require_tool

from ovmd.paths import Paths

PREPARING = '''\
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: {name}
# configure: 50
# prepare: {prepares}
# description: a module with prepare work
### END PLUGIN INFO
import json
import os
from templateconfig.cli import main

RECORD = {record!r}


def do_enumerate(target):
    return "[]"


def prepare():
    staging = os.environ["OVM_TEMPLATE_CONFIG_STAGING"]
    mode = os.stat(staging).st_mode & 0o777
    with open(os.path.join(staging, "made"), "w") as handle:
        handle.write("prepared in a %o directory" % mode)
    if os.path.exists(RECORD + ".fifo"):  # tell the test
        with open(RECORD + ".fifo", "w") as fifo:
            fifo.write("prepared\\n")
    if os.path.exists(RECORD + ".fail"):
        raise SystemExit(1)


def do_configure(param):
    params = json.loads(param)
    staging = os.environ.get("OVM_TEMPLATE_CONFIG_STAGING", "")
    made = os.path.join(staging, "made")
    found = open(made).read() if staging and os.path.exists(made) else "nothing"
    with open(RECORD, "a") as handle:
        handle.write("configure found: %s\\n" % found)
    params["staging"] = staging
    return json.dumps(params)


if __name__ == "__main__":
    main(do_enumerate, {{"configure": do_configure}}, prepare={{"configure": prepare}})
'''


def preparing_module(paths: Paths, tmp_path: Path, prepares: str = "configure") -> Path:
    record = tmp_path / "record"
    add_script(paths, "prep", PREPARING.format(name="prep", prepares=prepares,
                                               record=str(record)))
    return record


def leftovers(paths: Paths) -> list:
    """What a run may leave under /run/ovmd (the run lock aside): nothing."""
    run_dir = Path(paths.run_dir)
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.name != "run.lock") if run_dir.exists() else []


class TestPrepare:
    def test_what_was_prepared_is_there_for_the_run_and_gone_after_it(self, tmp_path):
        paths = guest(tmp_path)
        record = preparing_module(paths, tmp_path)
        proc = run_cli(["--root", paths.root, "--stdin", "--json", "configure"], "{}")
        assert proc.returncode == 0, proc.stderr
        assert record.read_text() == "configure found: prepared in a 700 directory\n"
        assert json.loads(proc.stdout)["status"] == "done"
        assert leftovers(paths) == []

    def test_only_a_module_whose_header_says_so_is_called_and_only_for_that_target(
            self, tmp_path):
        paths = guest(tmp_path)
        record = preparing_module(paths, tmp_path, prepares="cleanup")
        add_shell_module(paths, "plain", 60, '''\
            echo "$@" >> "$OVM_TEMPLATE_CONFIG_ROOT/plain-calls"
            cat
            ''')
        assert run_cli(["--root", paths.root, "--stdin", "configure"], "{}").returncode == 0
        assert record.read_text() == "configure found: nothing\n"
        assert (Path(paths.root) / "plain-calls").read_text() == "configure\n"

    def test_a_failed_preparation_is_removed_and_the_module_does_its_own_work(self, tmp_path):
        paths = guest(tmp_path)
        record = preparing_module(paths, tmp_path)
        (tmp_path / "record.fail").write_text("")
        proc = run_cli(["--root", paths.root, "--stdin", "configure"], "{}")
        assert proc.returncode == 0, proc.stderr
        assert record.read_text() == "configure found: nothing\n"
        assert "prep: its preparation failed (exit status 1)" in \
            Path(paths.log_file).read_text()

    def test_a_dry_run_prepares_nothing(self, tmp_path):
        paths = guest(tmp_path)
        record = preparing_module(paths, tmp_path)
        before = tree_hashes(paths.root)
        proc = run_cli(["--root", paths.root, "--stdin", "--dry-run", "configure"], "{}")
        assert proc.returncode == 0, proc.stderr
        assert tree_hashes(paths.root) == before
        assert not record.exists()  # (a dry run skips a module that does not use common)


class TestBeforeTheParams:
    """``--input FD``: the runner prepares, then waits for its params (ovmd's first-boot
    runner standing by); stopped before they come, it leaves nothing."""

    def start(self, paths: Paths, tmp_path: Path):
        os.mkfifo(str(tmp_path / "record.fifo"))
        read_end, write_end = os.pipe()
        proc = subprocess.Popen([OVM_TEMPLATE_CONFIG, "--root", paths.root, "--input",
                                 str(read_end), "--initial-config", "configure"],
                                pass_fds=(read_end,), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        os.close(read_end)
        with open(str(tmp_path / "record.fifo")) as fifo:  # blocks until prepare ran
            assert fifo.read() == "prepared\n"
        return proc, write_end

    def test_the_preparation_runs_before_any_params_and_the_run_uses_it(self, tmp_path):
        paths = guest(tmp_path)
        sysconfig(paths, "yes")
        record = preparing_module(paths, tmp_path)
        proc, write_end = self.start(paths, tmp_path)
        assert proc.poll() is None and not record.exists()  # prepared; waiting
        os.write(write_end, b'{"com.example.a": "1"}')
        os.close(write_end)
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
        assert record.read_text() == "configure found: prepared in a 700 directory\n"
        assert leftovers(paths) == []

    @pytest.mark.parametrize("how", ["sigterm", "eof"])
    def test_stopped_before_the_params_it_leaves_nothing(self, tmp_path, how):
        paths = guest(tmp_path)
        sysconfig(paths, "yes")
        record = preparing_module(paths, tmp_path)
        before = tree_hashes(paths.root)
        proc, write_end = self.start(paths, tmp_path)
        assert {p.split("/")[0] for p in leftovers(paths)} == {"runners"}  # staged, now
        if how == "sigterm":
            proc.send_signal(signal.SIGTERM)
        os.close(write_end)
        out, err = proc.communicate(timeout=TIMEOUT)
        if how == "sigterm":
            assert (proc.returncode, out, err) == (130, "", "")
        else:
            assert proc.returncode == 2
            assert "--input" in err and "end of file before any params; nothing was run" in err
        assert not record.exists()
        assert leftovers(paths) == []
        after = tree_hashes(paths.root)
        assert {k: v for k, v in after.items() if not k.startswith("run")} == \
            {k: v for k, v in before.items() if not k.startswith("run")}
        assert not os.path.exists(paths.report_file) and not os.path.exists(paths.log_file)


def sysconfig(paths: Paths, flag: str) -> None:
    os.makedirs(os.path.dirname(paths.sysconfig_ovmd), exist_ok=True)
    with open(paths.sysconfig_ovmd, "w") as handle:
        handle.write("INITIAL_CONFIG=%s\n" % flag)


# --- the ssh module's host keys ---------------------------------------------------------

HOST_KEYS = ("ssh_host_rsa_key", "ssh_host_ecdsa_key", "ssh_host_ed25519_key")


def fingerprint(path: Path) -> str:
    return subprocess.run(["ssh-keygen", "-l", "-f", str(path)], capture_output=True,
                          text=True, check=True).stdout.split()[1]


class TestSshHostKeys:
    def test_the_ssh_modules_prepare_call_stages_keys_and_changes_nothing(self, tmp_path):
        require_tool("ssh-keygen")
        root = fixture_root("ol8", tmp_path / "ol8")
        staging = tmp_path / "staging"
        staging.mkdir(mode=0o700)
        before = tree_hashes(str(root))
        env = dict(os.environ, OVM_TEMPLATE_CONFIG_ROOT=str(root),
                   OVM_TEMPLATE_CONFIG_STAGING=str(staging))
        script = Path(__file__).resolve().parents[3] / "template.d" / "scripts" / "ssh"
        proc = subprocess.run([sys.executable, str(script), "--prepare", "configure"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert tree_hashes(str(root)) == before
        # the types OL8's sshd_config names (HostKey lines): RSA, ECDSA, Ed25519
        assert sorted(os.listdir(staging)) == sorted(
            [name for key in HOST_KEYS for name in (key, key + ".pub")])
        for key in HOST_KEYS:
            assert stat.S_IMODE(os.stat(staging / key).st_mode) == 0o600
            fingerprint(staging / key)  # a valid key

    def test_configure_installs_the_staged_keys_unless_the_host_sent_its_own(self, tmp_path):
        require_tool("ssh-keygen")
        root = fixture_root("ol8", tmp_path / "ol8")
        install_modules(root, ["ssh"])
        template_rsa = (root / "etc/ssh/ssh_host_rsa_key").read_text()
        supplied = tmp_path / "supplied"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f",
                        str(supplied)], check=True)
        params = {"com.oracle.linux.ssh.host-ed25519-key": supplied.read_text(),
                  "com.oracle.linux.ssh.host-ed25519-key-pub": (tmp_path / "supplied.pub")
                  .read_text()}
        proc = run_cli(["--root", str(root), "--stdin", "--json", "configure"],
                       json.dumps(params), timeout=120)
        assert proc.returncode == 0, proc.stderr
        actions = json.loads(proc.stdout)["modules"][0]["actions"]
        # staged keys are written into place (secret: no content in the report); nothing
        # is generated while the module runs
        assert not [a for a in actions if "ssh-keygen" in a]
        assert "write secret file /etc/ssh/ssh_host_rsa_key (mode 0640)" in actions
        assert "write secret file /etc/ssh/ssh_host_ecdsa_key (mode 0640)" in actions
        assert (root / "etc/ssh/ssh_host_rsa_key").read_text() != template_rsa
        fingerprint(root / "etc/ssh/ssh_host_rsa_key")  # a real key, the clone's own
        assert (root / "etc/ssh/ssh_host_ed25519_key").read_text() == supplied.read_text()
        for key in HOST_KEYS:
            private = os.stat(root / "etc/ssh" / key)
            assert stat.S_IMODE(private.st_mode) == 0o640 and private.st_uid == 0
            assert stat.S_IMODE(os.stat(root / "etc/ssh" / (key + ".pub")).st_mode) == 0o644
        assert leftovers(Paths(str(root))) == []
        assert supplied.read_text() not in proc.stdout + proc.stderr
