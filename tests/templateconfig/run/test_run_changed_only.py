"""``--changed-only``: only the modules whose params changed since they last succeeded run
(templateconfig/run/applied.py). How ovmd applies params that came during a run, and
the host's reconfig event.
"""
from __future__ import annotations

import json
import os
import stat

import pytest
from runner_helpers import add_python_module, guest, run_cli
from testlib import fixture_root, install_modules, require_tool

from ovmd.paths import Paths
from ovmd.secrets import is_secret_key
from templateconfig.run.applied import AppliedParams, applied_params_path, key_matcher
from templateconfig.run.runner import Runner

DESCRIPTORS = [{"key": "com.example.net.hostname"}, {"key": "com.example.net.ipaddr.0"},
               {"key": "com.example.net.ipaddr.1"}]


@pytest.mark.parametrize("key, matches", [
    ("com.example.net.hostname", True),
    ("com.example.net.ipaddr.0", True),
    ("com.example.net.ipaddr.7", True),     # an index stands for every index
    ("com.example.net.ipaddr.x", False),
    ("com.example.net.ipaddr", False),
    ("com.example.net.hostname.0", False),  # not an indexed key
    ("com.example.other", False),
])
def test_which_keys_a_module_takes(key, matches):
    assert key_matcher(DESCRIPTORS)(key) is matches


class TestAppliedParams:
    def record(self, tmp_path):
        return AppliedParams(Paths(str(tmp_path)), "configure", is_secret_key)

    def test_a_value_is_recorded_as_a_digest_and_a_secret_by_its_name_only(self, tmp_path):
        applied = self.record(tmp_path)
        matches = key_matcher([{"key": "com.example.a"}, {"key": "com.example.password"}])
        applied.module_done("m", matches, {"com.example.a": "visible-value",
                                           "com.example.password": "s3cret-value",
                                           "com.example.other": "not-mine"})
        applied.save()
        text = applied_params_path(Paths(str(tmp_path)))
        assert stat.S_IMODE(os.stat(text).st_mode) == 0o600
        content = open(text).read()
        assert "visible-value" not in content and "s3cret-value" not in content
        record = json.loads(content)["targets"]["configure"]["m"]
        assert record["com.example.password"] is None and "com.example.other" not in record
        again = self.record(tmp_path)
        params = {"com.example.a": "visible-value", "com.example.other": "changed"}
        assert again.changed_keys("m", matches, params) == []
        assert again.changed_keys("m", matches, dict(params, **{"com.example.a": "new"})) \
            == ["com.example.a"]
        # a secret that is given again counts as changed: it was wiped once applied
        assert again.changed_keys("m", matches, dict(params, **{
            "com.example.password": "s3cret-value"})) == ["com.example.password"]
        assert again.changed_keys("never-ran", matches, params) == ["com.example.a"]

    def test_an_unreadable_record_makes_every_module_count_as_changed(self, tmp_path, caplog):
        paths = Paths(str(tmp_path))
        os.makedirs(paths.report_dir)
        with open(applied_params_path(paths), "w") as handle:
            handle.write("{not json")
        applied = self.record(tmp_path)
        assert applied.changed_keys("m", key_matcher([{"key": "k"}]), {"k": "v"}) == ["k"]
        assert "ignoring the record of applied params" in caplog.text


def modules(paths, tmp_path):
    """Three modules: one takes com.example.a, one com.example.b.N, one nothing."""
    ran = str(tmp_path / "ran")
    for name, priority, keys in (("alpha", 10, ["com.example.a"]),
                                 ("beta", 20, ["com.example.b.0", "com.example.secret.0"]),
                                 ("none", 30, [])):
        add_python_module(paths, name, priority, '''\
            with open(%r, "a") as handle:
                handle.write("%s\\n")
            ''' % (ran, name), descriptors=[{"key": k} for k in keys])
    return tmp_path / "ran"


def run(paths, params, changed_only=True):
    result = Runner(paths, "configure", changed_only=changed_only).run(params)
    assert result.ok
    return {o.module.name: o.status for o in result.outcomes}


class TestChangedOnly:
    def test_only_the_modules_whose_params_changed_run(self, tmp_path):
        paths = guest(tmp_path)
        ran = modules(paths, tmp_path)
        params = {"com.example.a": "1", "com.example.b.0": "x", "com.example.b.3": "y"}
        assert run(paths, params, changed_only=False) == {
            "alpha": "ok", "beta": "ok", "none": "ok"}
        ran.unlink()
        assert run(paths, params) == {"alpha": "skipped", "beta": "skipped", "none": "skipped"}
        assert not ran.exists()
        assert run(paths, dict(params, **{"com.example.b.3": "z"})) == {
            "alpha": "skipped", "beta": "ok", "none": "skipped"}
        # a key no module takes changes nothing that runs
        assert run(paths, dict(params, **{"com.example.b.3": "z", "com.example.c": "1"})) == {
            "alpha": "skipped", "beta": "skipped", "none": "skipped"}
        assert ran.read_text() == "beta\n"

    def test_a_secret_given_again_runs_its_module(self, tmp_path):
        paths = guest(tmp_path)
        modules(paths, tmp_path)
        params = {"com.example.a": "1", "com.example.secret.0": "pw"}
        run(paths, params, changed_only=False)
        assert run(paths, params) == {"alpha": "skipped", "beta": "ok", "none": "skipped"}
        assert run(paths, {"com.example.a": "1"}) == {
            "alpha": "skipped", "beta": "skipped", "none": "skipped"}

    def test_a_module_that_failed_runs_again(self, tmp_path):
        paths = guest(tmp_path)
        flag = tmp_path / "fail"
        add_python_module(paths, "flaky", 10, '''\
            if os.path.exists(%r):
                raise SystemExit("not today")
            ''' % str(flag), descriptors=[{"key": "com.example.a"}])
        flag.write_text("")
        result = Runner(paths, "configure").run({"com.example.a": "1"})
        assert not result.ok
        flag.unlink()
        assert run(paths, {"com.example.a": "1"}) == {"flaky": "ok"}
        assert run(paths, {"com.example.a": "1"}) == {"flaky": "skipped"}

    def test_a_successful_cleanup_forgets_what_configure_applied(self, tmp_path):
        paths = guest(tmp_path)
        modules(paths, tmp_path)
        params = {"com.example.a": "1"}
        run(paths, params, changed_only=False)
        assert run(paths, params)["alpha"] == "skipped"
        assert Runner(paths, "cleanup").run({}).ok  # (no module has a cleanup target)
        assert run(paths, params)["alpha"] == "ok"

    def test_the_report_and_the_command_line_say_which_did_not_run(self, tmp_path):
        paths = guest(tmp_path)
        modules(paths, tmp_path)
        params = json.dumps({"com.example.a": "1"})
        assert run_cli(["--root", paths.root, "--stdin", "configure"], params).returncode == 0
        proc = run_cli(["--root", paths.root, "--stdin", "--changed-only", "--json",
                        "configure"], params)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["status"] == "done"
        assert [(m["name"], m["status"], m["error"]) for m in report["modules"]] == [
            (name, "skipped", "its params did not change since it last succeeded: not run "
             "(--changed-only)") for name in ("alpha", "beta", "none")]


class TestIdentityIsKept:
    """A reconfiguration applies what changed: the clone's identity stays, even on a
    later boot (a full configure on a later boot makes it anew, once per boot)."""

    def later_boot(self, root):
        for stamp in (root / "var/lib/ovm-template-config").glob("*.generated"):
            stamp.write_text(json.dumps({"boot_id": "an-earlier-boot"}) + "\n")

    def test_host_keys_and_machine_id_survive_a_reconfiguration(self, tmp_path):
        require_tool("ssh-keygen")
        root = fixture_root("ol9", tmp_path / "ol9")
        install_modules(root, ["system", "ssh"])
        users = {"com.oracle.linux.ssh.authorized-keys.0": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"
                 "AAAAIFy0D0z6sYzQ1xV8XbqfQe3oPj0m5p0JrGfW3kqV9d1N a@b"}
        assert run_cli(["--root", str(root), "--stdin", "configure"],
                       json.dumps(users), timeout=120).returncode == 0
        keys = {p.name: p.read_bytes() for p in (root / "etc/ssh").glob("ssh_host_*")}
        machine_id = (root / "etc/machine-id").read_bytes()
        self.later_boot(root)
        changed = {"com.oracle.linux.ssh.authorized-keys.0": users[
            "com.oracle.linux.ssh.authorized-keys.0"].replace("a@b", "c@d")}
        proc = run_cli(["--root", str(root), "--stdin", "--changed-only", "--json",
                        "configure"], json.dumps(changed), timeout=120)
        assert proc.returncode == 0, proc.stderr
        statuses = {m["name"]: m["status"] for m in json.loads(proc.stdout)["modules"]}
        assert statuses == {"system": "skipped", "ssh": "ok"}
        assert {p.name: p.read_bytes() for p in (root / "etc/ssh").glob("ssh_host_*")} == keys
        assert (root / "etc/machine-id").read_bytes() == machine_id
        assert (root / "root/.ssh/authorized_keys").read_text().endswith("c@d\n")
        # a full configure on a later boot: a new identity (the clone's first boot)
        assert run_cli(["--root", str(root), "--stdin", "configure"], json.dumps(changed),
                       timeout=120).returncode == 0
        assert {p.name: p.read_bytes() for p in (root / "etc/ssh").glob("ssh_host_*")} != keys
