"""A run that is stopped half-way says so in one line: a termination signal (never lost,
even while the runner forks) or a write of the runner's own that the system refuses.

``os.fork()`` runs Python's at-fork hooks (logging registers some); a SIGTERM whose
handler raised ``KeyboardInterrupt`` inside one of them would be printed as "Exception
ignored" and lost, and the run would go on. The launcher holds the signal back while it
forks, so the interruption arrives in the runner's own code.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from runner_helpers import add_python_module, guest, run_cli
from testlib import mounted_tmpfs

SCRIPT = textwrap.dedent("""
    import os, signal, sys
    from templateconfig.ovm_template_config import _interrupt
    from templateconfig.run.launcher import Launcher

    signal.signal(signal.SIGTERM, _interrupt)
    sent = []

    def terminate_once():  # the signal arrives while os.fork() runs its hooks
        if not sent:
            sent.append(1)
            os.kill(os.getpid(), signal.SIGTERM)

    os.register_at_fork(after_in_parent=terminate_once)
    with open(sys.argv[1], "w") as script:
        script.write("#!/usr/bin/python3\\nimport sys\\nsys.stdout.write('{}')\\n")
    try:
        Launcher(dict(os.environ), fork=True).run(sys.argv[1], ["configure"], b"{}", 30.0)
    except KeyboardInterrupt:
        print("interrupted")
        sys.exit(0)
    print("the signal was lost")
    sys.exit(1)
""")


def test_a_sigterm_during_the_fork_interrupts_the_run(tmp_path):
    module = tmp_path / "module"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(module)], capture_output=True,
                          text=True, timeout=60)
    assert (proc.returncode, proc.stdout.strip()) == (0, "interrupted"), proc.stderr
    assert "Exception ignored" not in proc.stderr


FILL = """
import errno, os
state = os.path.join(os.environ["OVM_TEMPLATE_CONFIG_ROOT"], "var/lib/ovm-template-config")
with open(os.path.join(state, "ballast"), "wb") as handle:
    try:
        while True:
            handle.write(b"x" * 4096)
            handle.flush()
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
"""


def test_a_full_disk_mid_run_stops_it_with_one_line(tmp_path):
    """The first module fills the disk under the runner's state: the runner cannot record
    its progress, says so in one line (what, where, what to do) and exits 1, no traceback."""
    paths = guest(tmp_path)
    add_python_module(paths, "filler", 10, FILL)
    add_python_module(paths, "after", 20, "params['com.example.after'] = 'ran'")
    with mounted_tmpfs(tmp_path / "root/var/lib/ovm-template-config", "64k"):
        proc = run_cli(["--root", paths.root, "--stdin", "configure"], json.dumps({}))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    stopped = [line for line in proc.stderr.splitlines() if "the run stopped" in line]
    assert len(stopped) == 1 and "No space left on device" in stopped[0], proc.stderr
    assert "run again: it resumes" in stopped[0]
