"""``ovmd --seal`` without a daemon, on a guest tree under ``--root`` (as on a mounted disk
image): the real runner runs the standard modules' cleanup target on a fixture root that
was configured first, then ovmd's and the runner's state goes and first boot is armed.
The same on a real mounted ext4 image, in a mount namespace whose / is read-only, is in
test_seal_image.py; through a running daemon in daemon/test_seal_daemon.py."""
from __future__ import annotations

import fnmatch
import os
import re
import subprocess
from pathlib import Path

import pytest
from testlib import SEALED_SECRET as SECRET
from testlib import bin_path, configured_guest_root, fixture_root, host_state, with_ovmd_state

from ovmd.daemon.service import PidFile
from ovmd.paths import Paths
from ovmd.seal import sealed_files

BROKEN_CLEANUP = """\
#!/bin/sh
### BEGIN PLUGIN INFO
# name: broken
# cleanup: 20
### END PLUGIN INFO
if [ "$1" = "--enumerate" ]; then echo '[]'; exit 0; fi
cat >/dev/null
echo "broken: error: the license server refused to let go" >&2
exit 1
"""


def ovmd_seal(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path("ovmd"), "--root", str(root), "--seal"] + list(extra),
                          capture_output=True, text=True, timeout=180)


def tree(root: Path, times: bool = False) -> dict:
    """path -> (mode, content or link target[, mtime]) of everything under ``root``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                what = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                what = Path(path).read_bytes()
            else:
                what = None
            key = os.path.relpath(path, str(root))
            found[key] = (st.st_mode, what) + ((st.st_mtime_ns,) if times else ())
    return found


def pattern_index(root: Path, path: str) -> int:
    """Which entry of Paths.SEALED names ``path`` (a path under ``root``)."""
    guest = "/" + os.path.relpath(path, str(root))
    return next(index for index, (pattern, _, _) in enumerate(Paths.SEALED)
                if fnmatch.fnmatchcase(guest, pattern))


def containing(root: Path, needle: str) -> list:
    return sorted(path for path, (_, what) in tree(root).items()
                  if isinstance(what, bytes) and needle.encode() in what)


@pytest.fixture
def guest(tmp_path):
    return with_ovmd_state(configured_guest_root(tmp_path / "root"))


class TestSeal:
    def test_removes_what_made_the_vm_one_machine_and_arms_first_boot(self, guest):
        paths = Paths(str(guest))
        declared = [path for path, _, _ in sealed_files(paths)]
        assert paths.cache_file in declared and paths.secret_cache_file in declared
        before = host_state()
        proc = ovmd_seal(guest)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        # the cleanup target ran: the standard modules' own state is gone
        assert re.search(r"^ok +30 ssh ", proc.stdout, re.M), proc.stdout
        assert list((guest / "etc/ssh").glob("ssh_host_*")) == []
        assert (guest / "etc/machine-id").read_text() == ""
        assert not (guest / "var/lib/ovm-template-config/network.saved").exists()
        # then every declared file, each one said, in the declaration's order
        removed = re.findall(r"^removed (\S+) \(", proc.stdout, re.M)
        # (the cleanup run set the configure run's report aside as it wrote its own)
        assert set(removed) == set(declared) | {paths.configure_report_file}
        assert [pattern_index(guest, path) for path in removed] == sorted(
            pattern_index(guest, path) for path in removed)
        assert sealed_files(paths) == []
        assert not (guest / "var/log/ovm-template-config.log").exists()
        assert re.search(r"^INITIAL_CONFIG=yes$", (guest / "etc/sysconfig/ovmd").read_text(),
                         re.M)
        assert proc.stdout.rstrip().endswith("sealed the guest tree in %s: unmount it now"
                                             % guest)
        assert containing(guest, SECRET) == []
        assert SECRET not in proc.stdout + proc.stderr
        assert host_state() == before  # nothing outside the root changed

    def test_sealing_again_gives_the_same_tree(self, guest):
        assert ovmd_seal(guest).returncode == 0
        first = tree(guest)
        again = ovmd_seal(guest)
        assert again.returncode == 0, again.stdout + again.stderr
        second = tree(guest)
        lock = "run/ovmd/run.lock"  # kept; it names the last runner that held it
        assert second.pop(lock)[0] == first.pop(lock)[0]
        assert second == first
        # what the second cleanup run wrote itself went again; nothing else was there
        assert re.findall(r"^removed \S+/(\S+) ", again.stdout, re.M) == [
            "last-run.json", "applied-params.json", "ovm-template-config.log"]

    def test_dry_run_shows_everything_and_changes_nothing(self, guest):
        before, host = tree(guest, times=True), host_state()
        declared = [path for path, _, _ in sealed_files(Paths(str(guest)))]
        proc = ovmd_seal(guest, "--dry-run")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert tree(guest, times=True) == before and host_state() == host
        assert "would remove /etc/ssh/ssh_host_ed25519_key" in proc.stdout  # the plan
        assert re.findall(r"^would remove (%s\S*) \(" % re.escape(str(guest)), proc.stdout,
                          re.M) == declared
        assert "would set INITIAL_CONFIG=yes in %s/etc/sysconfig/ovmd" % guest in proc.stdout
        assert proc.stdout.rstrip().endswith("dry run: nothing was changed")

    @pytest.mark.parametrize("spoil, says", [
        ("snapshot a directory", "params.json cannot be read (not a regular file)"),
        ("snapshot garbage", "params.json is not what ovmd writes (not JSON"),
        ("journal not UTF-8", "params.json.journal has 1 line(s) that are not journal "
         "entries; not read"),
        ("journal torn tail", None),
        ("secrets garbage", "secrets.json is not what ovmd writes"),
        ("snapshot a link", "params.json is a symbolic link (to /etc/passwd); not read"),
        ("snapshot mode 0666", None),
    ])
    def test_a_dry_run_reads_a_spoilt_cache_without_changing_it(self, guest, spoil, says):
        # reading the cache the daemon's way would set aside, cut, re-mode or replace
        # what it cannot use; a dry run says so and changes nothing
        paths = Paths(str(guest))
        snapshot, journal = Path(paths.cache_file), Path(paths.cache_file + ".journal")
        if spoil == "snapshot a directory":
            snapshot.unlink()
            snapshot.mkdir()
        elif spoil == "snapshot garbage":
            snapshot.write_bytes(b"{garbage")
        elif spoil == "journal not UTF-8":
            with journal.open("ab") as handle:
                handle.write(b'{"set": {"a": "\xff"}}\n')
        elif spoil == "journal torn tail":
            with journal.open("ab") as handle:
                handle.write(b'{"set": {"a"')
        elif spoil == "secrets garbage":
            Path(paths.secret_cache_file).write_bytes(b"[1]")
        elif spoil == "snapshot a link":
            snapshot.unlink()
            os.symlink("/etc/passwd", str(snapshot))
        else:
            snapshot.chmod(0o666)
        before = tree(guest, times=True)
        proc = ovmd_seal(guest, "--dry-run")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert tree(guest, times=True) == before
        assert "Traceback" not in proc.stderr
        if says:
            assert [line for line in proc.stderr.splitlines() if says in line] != [], \
                proc.stderr
        assert proc.stdout.rstrip().endswith("dry run: nothing was changed")

    def test_a_spoilt_cache_is_sealed_away(self, guest):
        paths = Paths(str(guest))
        snapshot = Path(paths.cache_file)
        snapshot.unlink()
        snapshot.mkdir()
        (snapshot / "inside").write_text("x")
        proc = ovmd_seal(guest)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "removed %s (the parameter cache)" % snapshot in proc.stdout
        assert not os.path.lexists(str(snapshot))
        assert list(Path(paths.state_dir).glob("params.json*")) == []

    def test_a_failing_cleanup_stops_it_before_anything_is_removed(self, guest):
        script = guest / "etc/template.d/scripts/broken"
        script.write_text(BROKEN_CLEANUP)
        script.chmod(0o755)
        os.symlink("../scripts/broken", str(guest / "etc/template.d/cleanup.d/20broken"))
        declared = sealed_files(Paths(str(guest)))
        proc = ovmd_seal(guest)
        assert proc.returncode == 1
        assert "broken failed: the license server refused to let go" in proc.stderr
        assert "ovmd: sealing stopped: the cleanup target failed (exit 1); nothing was " \
               "removed and INITIAL_CONFIG is unchanged" in proc.stderr
        assert "removed" not in proc.stdout
        still = [path for path, _, _ in sealed_files(Paths(str(guest)))]
        assert set(still) >= {path for path, _, _ in declared}
        assert "INITIAL_CONFIG=no" in (guest / "etc/sysconfig/ovmd").read_text()

    def test_with_no_cleanup_module_no_runner_starts(self, tmp_path):
        root = fixture_root("debian12", tmp_path / "root")
        with_ovmd_state(root)
        proc = ovmd_seal(root)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.startswith("no module is linked for cleanup (%s/etc/template.d/"
                                      "cleanup.d): nothing to run\n" % root)
        assert not (root / "run/ovmd/run.lock").exists()  # the runner takes it first thing
        assert not (root / "var/log/ovm-template-config.log").exists()
        assert sealed_files(Paths(str(root))) == []
        assert "INITIAL_CONFIG=yes" in (root / "etc/sysconfig/ovmd").read_text()

    def test_a_link_out_of_the_root_is_never_followed(self, tmp_path):
        root = fixture_root("debian12", tmp_path / "root")
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (outside / "params.json").write_text("{}")
        (root / "var/lib").mkdir(parents=True, exist_ok=True)
        os.symlink(str(outside), str(root / "var/lib/ovmd"))
        proc = ovmd_seal(root)
        assert proc.returncode == 1
        assert proc.stderr.splitlines()[-1] == "ovmd: refusing to remove %s/var/lib/ovmd/" \
            "params.json: %s/var/lib/ovmd is a symbolic link to %s, outside the root %s; " \
            "remove the link or make it point inside the root" % (root, root, outside, root)
        # the cache, read for the cleanup run's params, said it would not use it either
        assert proc.stderr.startswith("ovmd: refusing to use %s/var/lib/ovmd: " % root)
        assert (outside / "params.json").read_text() == "{}"

    def test_a_daemon_that_holds_the_root_but_does_not_answer_is_not_bypassed(self, guest):
        paths = Paths(str(guest))
        pidfile = PidFile(paths.pid_file).acquire()
        try:
            proc = ovmd_seal(guest)
        finally:
            pidfile.release()
        assert proc.returncode == 1
        assert proc.stderr == ("ovmd: the daemon (pid %d) runs but does not answer on %s: "
                               "stop it (systemctl stop ovmd) and run ovmd --seal again\n"
                               % (os.getpid(), paths.control_socket))
        assert os.path.exists(paths.cache_file)

    def test_dry_run_goes_with_seal_only(self, tmp_path):
        (tmp_path / "etc").mkdir()
        proc = subprocess.run([bin_path("ovmd"), "--root", str(tmp_path), "--dry-run", "-l"],
                              capture_output=True, text=True)
        assert proc.returncode == 2 and "--dry-run goes with --seal" in proc.stderr


@pytest.mark.parametrize("path", [
    "cache_file", "secret_cache_file", "report_file", "run_state_file", "enumerate_cache_file",
    "applied_keys_file", "applied_params_file", "log_file", "identity_file"])
def test_the_declaration_names_every_state_file(path):
    guest_path = getattr(Paths("/"), path)
    assert any(fnmatch.fnmatchcase(guest_path, pattern) for pattern, _, _ in Paths.SEALED)


@pytest.mark.parametrize("path", ["control_socket", "pid_file", "sysconfig_ovmd",
                                  "template_d"])
def test_the_declaration_leaves_the_daemon_and_the_configuration_alone(path):
    guest_path = getattr(Paths("/"), path)
    assert not any(fnmatch.fnmatchcase(guest_path, pattern) for pattern, _, _ in Paths.SEALED)
