"""A third-party module written exactly as Oracle's documentation (and community talks)
show it, run by the real daemon on first boot through the development XenStore.

Oracle's documented wrapper module: header ``configure: 90``; ``do_enumerate`` returns
``json.dumps([])``; ``do_configure`` calls ``run_cmd('/path/myscript.ksh')`` with one
string and returns the params; the shell script reads the values it needs from the
running daemon with ``VARIABLE1=$(ovmd -g variable1)``. Here the script is a ``/bin/sh``
script named ``.ksh`` (no ksh on the test machine) in a directory whose name has a space.
"""
from __future__ import annotations

import os
from pathlib import Path

from daemon_helpers import PASSWORD, ROOT_PASSWORD, make_guest, sysconfig, wait_status
from testlib import BIN

#: The module, as Oracle's documentation writes it (only the script's path differs).
WRAPPER = """\
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: mywrapper
# configure: 90
# description: Run my configuration script.
### END PLUGIN INFO

try:
    import json
except ImportError:
    import simplejson as json
from templateconfig.cli import main
from templateconfig.common import run_cmd


def do_enumerate(target):
    param = []
    return json.dumps(param)


def do_configure(param):
    param = json.loads(param)
    run_cmd('%(script)s')
    return json.dumps(param)


if __name__ == '__main__':
    main(do_enumerate, {'configure': do_configure})
"""

SCRIPT = """\
#!/bin/sh
VARIABLE1=$(ovmd -g com.mycompany.variable1)
VARIABLE2=$(ovmd -g com.mycompany.variable2)
echo "variable1=$VARIABLE1 variable2=$VARIABLE2" > '%(result)s'
"""


def install_wrapper(root: Path, script: Path) -> None:
    """A guest with the wrapper module enabled for configure, calling ``script``."""
    make_guest(root, [])
    module = root / "etc/template.d/scripts/mywrapper"
    module.write_text(WRAPPER % {"script": script})
    module.chmod(0o755)
    os.symlink("../scripts/mywrapper", str(root / "etc/template.d/configure.d/90mywrapper"))


def test_oracle_s_wrapper_module_runs_its_script_which_asks_the_daemon(
        root, tmp_path, ovmd_factory, host):
    opt = tmp_path / "opt" / "my company"
    opt.mkdir(parents=True)
    result = tmp_path / "result.txt"
    script = opt / "myscript.ksh"
    script.write_text(SCRIPT % {"result": result})
    script.chmod(0o755)
    install_wrapper(root, script)
    # the script finds ovmd on PATH, as on a guest
    env = dict(os.environ, PATH="%s:%s" % (BIN, os.environ["PATH"]))
    daemon = ovmd_factory(["--quiet-period", "0.1"], env=env)
    host.send([("com.mycompany.variable1", "first value"),
               ("com.mycompany.variable2", "second"), (ROOT_PASSWORD, PASSWORD)])
    assert wait_status(host) == "done"
    assert result.read_text() == "variable1=first value variable2=second\n"
    assert "INITIAL_CONFIG=no" in sysconfig(root)
    shown = daemon.cli("--status")
    assert (shown.returncode, shown.stdout.splitlines()[0]) == (0, "status: done")
    assert "mywrapper" in shown.stdout and "Traceback" not in shown.stdout


def test_the_same_module_fails_with_its_script_s_reason(root, tmp_path, ovmd_factory, host):
    script = Path(tmp_path / "myscript.ksh")
    script.write_text("#!/bin/sh\necho 'the database is not reachable' >&2\nexit 3\n")
    script.chmod(0o755)
    install_wrapper(root, script)
    ovmd_factory(["--quiet-period", "0.1"])
    host.send([(ROOT_PASSWORD, PASSWORD)])
    assert wait_status(host) == ("failed: mywrapper: command %s failed with exit code 3: "
                                 "the database is not reachable" % script)
    assert "INITIAL_CONFIG=yes" in sysconfig(root)
