"""``ovmd --seal`` on a running guest: the real daemon seals it (its cleanup run, then its
cache in memory and on disk, the files, the flag), and then serves no stale params, keeps
no first-boot runner standing by, takes no host messages and runs nothing more."""
from __future__ import annotations

import json
import os
import re
import subprocess

from daemon_helpers import (
    PASSWORD,
    PROBE,
    ROOT_PASSWORD,
    add_module,
    descendants,
    files_containing,
    make_guest,
    ran,
    shutting_down_env,
    sysconfig,
    to_guest_numbers,
    wait_consumed,
)
from testlib import require_tool

from ovmd.paths import Paths
from ovmd.seal import sealed_files

FAIL_CLEANUP = """\
echo "$1" >> "$OVM_TEMPLATE_CONFIG_ROOT/ran"
echo "failing: error: cannot unregister" >&2
exit 1
"""


def configured_guest(root):
    """A guest past its first boot, with a module for cleanup and shutdown."""
    make_guest(root, [], initial_config="no")
    add_module(root, "probe", PROBE, cleanup=20, shutdown=50)


class TestSealThroughTheDaemon:
    def test_the_daemon_seals_the_guest_and_then_runs_nothing(self, root, ovmd_factory,
                                                             host, dom0, tmp_path):
        configured_guest(root)
        daemon = ovmd_factory(env=shutting_down_env(tmp_path / "bin"))
        wait_consumed(dom0, host.send([("com.example.app", "1"), (ROOT_PASSWORD, PASSWORD)]))
        daemon.cli("-p", "com.example.local=2", check=True)
        paths = Paths(str(root))
        assert os.path.exists(paths.secret_cache_file)
        proc = daemon.cli("--seal")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert lines[0] == "ovm-template-config cleanup: done"
        assert re.match(r"  probe +20  ok ", lines[1]), lines
        assert "removed %s (the cached secrets)" % paths.secret_cache_file in lines
        assert "removed %s (the parameter cache's journal)" % (paths.cache_file + ".journal") \
            in lines
        assert "INITIAL_CONFIG=yes in %s/etc/sysconfig/ovmd" % root in lines
        assert lines[-1].startswith("sealed: shut the guest down now (shutdown -h now)")
        assert ran(root) == ["cleanup"]
        assert sealed_files(paths) == []
        assert re.search(r"^INITIAL_CONFIG=yes$", sysconfig(root), re.M)
        # no stale params: the cache is empty in memory too
        assert daemon.cli("-g", "com.example.app").returncode == 1
        assert daemon.cli("-l").stdout == ""
        status = json.loads(daemon.cli("--status", "--json").stdout)
        assert status["sealed"] is True and status["initial_config"] is True
        assert "daemon: running, sealed (shut the guest down now)" in \
            daemon.cli("--status").stdout
        # INITIAL_CONFIG=yes is the clones': no first-boot runner stands by on this boot
        assert descendants(daemon.process.pid) == []
        assert not os.path.exists(paths.runners_dir) or os.listdir(paths.runners_dir) == []
        # host messages stay in XenStore; nothing that would change the cache is taken
        number = host.send([("com.example.late", "3"), (ROOT_PASSWORD, PASSWORD)])
        assert daemon.cli("--status").returncode == 0  # the daemon had its turns
        assert number in to_guest_numbers(dom0)
        for args in (["-p", "k=v"], ["-x"], ["-r", "k"], ["-s", "configure"], ["--seal"]):
            refused = daemon.cli(*args)
            assert refused.returncode == 1, args
            assert refused.stderr.startswith("ovmd: the guest is sealed (ovmd --seal): shut "
                                             "it down now"), args
        assert daemon.cli("-g", "com.example.late").returncode == 1
        # and the guest's shutdown runs nothing either: the template stays as sealed
        assert daemon.terminate(timeout=60) == 0
        assert ran(root) == ["cleanup"]
        assert "sealed: the shutdown target does not run" in daemon.log_text()
        assert files_containing(root, PASSWORD) == []
        assert PASSWORD not in daemon.log_text() + proc.stdout

    def test_a_failing_cleanup_leaves_the_daemon_as_it_was(self, root, ovmd_factory, host,
                                                          dom0):
        make_guest(root, [], initial_config="no")
        add_module(root, "failing", FAIL_CLEANUP, cleanup=20)
        daemon = ovmd_factory()
        daemon.cli("-p", "com.example.local=2", check=True)
        proc = daemon.cli("--seal")
        assert proc.returncode == 1
        assert re.search(r"^  failing +20  failed .*error: cannot unregister$", proc.stdout, re.M)
        assert "ovmd: sealing stopped: the cleanup target failed (exit 1); nothing was " \
               "removed and INITIAL_CONFIG is unchanged" in proc.stderr
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert daemon.cli("-g", "com.example.local").stdout == "2\n"
        wait_consumed(dom0, host.send([("com.example.after", "4")]))  # read again
        assert daemon.cli("-g", "com.example.after").stdout == "4\n"
        assert json.loads(daemon.cli("--status", "--json").stdout)["sealed"] is False

    def test_a_file_that_cannot_be_removed_leaves_the_cache_served(self, root, ovmd_factory):
        # an immutable journal (chattr +i: what root cannot unlink either) stops the
        # removals; what the files still hold is served again, not an emptied memory
        require_tool("chattr")
        make_guest(root, [], initial_config="no")
        daemon = ovmd_factory()
        daemon.cli("-p", "com.example.local=2", check=True)
        journal = Paths(str(root)).cache_file + ".journal"
        subprocess.run(["chattr", "+i", journal], check=True)
        try:
            proc = daemon.cli("--seal")
        finally:
            subprocess.run(["chattr", "-i", journal], check=True)
        assert proc.returncode == 1
        assert "ovmd: cannot remove %s (the parameter cache's journal): Operation not " \
               "permitted" % journal in proc.stderr
        assert daemon.cli("-g", "com.example.local").stdout == "2\n"
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert json.loads(daemon.cli("--status", "--json").stdout)["sealed"] is False

    def test_with_no_cleanup_module_no_runner_starts(self, root, ovmd_factory):
        make_guest(root, [], initial_config="no")
        daemon = ovmd_factory()
        daemon.cli("-p", "com.example.local=2", check=True)
        proc = daemon.cli("--seal")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("no module is linked for cleanup (%s/etc/template.d/"
                                      "cleanup.d): nothing to run\n" % root)
        assert "running ovm-template-config" not in daemon.log_text()
        assert daemon.cli("-g", "com.example.local").returncode == 1

    def test_a_dry_run_asks_the_daemon_for_the_params_and_changes_nothing(
            self, root, ovmd_factory):
        configured_guest(root)
        daemon = ovmd_factory()
        daemon.cli("-p", "com.example.local=2", check=True)
        before = sorted((p, os.lstat(p).st_mtime_ns) for p, _, _ in sealed_files(Paths(str(root))))
        proc = daemon.cli("--seal", "--dry-run")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "would remove %s/var/lib/ovmd/params.json.journal" % root in proc.stdout
        assert proc.stdout.rstrip().endswith("dry run: nothing was changed")
        assert sorted((p, os.lstat(p).st_mtime_ns)
                      for p, _, _ in sealed_files(Paths(str(root)))) == before
        assert daemon.cli("-g", "com.example.local").stdout == "2\n"
        assert ran(root) == []  # the runner's plan mode skips shell modules
        assert "INITIAL_CONFIG=no" in sysconfig(root)
