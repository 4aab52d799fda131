"""Building sandbox guests with module scripts, for the runner, first-boot and command tests
(tests/templateconfig and tests/templateconfig/run).

Modules are real scripts under ``ROOT/etc/template.d/scripts`` enabled by the real
registry (``registry.add``), run by the real runner in real processes.
"""
from __future__ import annotations

import hashlib
import os
import select
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, Iterable, Optional

from ovmd.paths import Paths
from templateconfig import registry

BIN = Path(sys.executable).parent
OVM_TEMPLATE_CONFIG = str(BIN / "ovm-template-config")
#: How long a test waits for an event before it fails (generous: the machine may be loaded).
TIMEOUT = 30.0

PYTHON_MODULE = '''\
#!/usr/bin/env python
### BEGIN PLUGIN INFO
# name: {name}
{targets}
# description: test module {name}
### END PLUGIN INFO
try:
    import json
except ImportError:
    import simplejson as json
import os
import sys
from templateconfig.cli import main

DESCRIPTORS = {descriptors}


def do_enumerate(target):
    return json.dumps(DESCRIPTORS)


def do_{target}(param):
    params = json.loads(param)
{body}
    return json.dumps(params)


if __name__ == "__main__":
    main(do_enumerate, {{"{target}": do_{target}}})
'''


def guest(tmp_path: Path) -> Paths:
    root = tmp_path / "root"
    (root / "etc" / "template.d" / "scripts").mkdir(parents=True)
    return Paths(str(root))


def header_lines(name: str, priority: int, targets: Iterable[str]) -> str:
    return "\n".join("# %s: %d" % (target, priority) for target in targets)


def add_script(paths: Paths, name: str, text: str, enable: bool = True) -> str:
    path = os.path.join(paths.scripts_dir, name)
    with open(path, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o755)
    if enable:
        registry.add(paths, name)
    return path


def add_python_module(paths: Paths, name: str, priority: int = 50, body: str = "",
                      descriptors: Optional[list] = None, target: str = "configure",
                      shebang: Optional[str] = None, raw_source: Optional[str] = None) -> str:
    """A module written like Oracle's: ``templateconfig.cli.main`` with one target.

    ``body`` is Python code indented into ``do_<target>``, where ``params`` is the dict.
    """
    text = raw_source if raw_source is not None else PYTHON_MODULE.format(
        name=name, targets=header_lines(name, priority, [target]),
        descriptors=repr(descriptors or []), target=target,
        body=textwrap.indent(textwrap.dedent(body), "    ") or "    pass")
    if shebang is not None:
        text = shebang + "\n" + text.split("\n", 1)[1]
    return add_script(paths, name, text)


def add_shell_module(paths: Paths, name: str, priority: int, body: str,
                     enumerate_output: str = "[]", target: str = "configure",
                     shebang: str = "#!/bin/sh") -> str:
    text = textwrap.dedent('''\
        {shebang}
        ### BEGIN PLUGIN INFO
        # name: {name}
        # {target}: {priority}
        # description: shell module {name}
        ### END PLUGIN INFO
        if [ "$1" = "--enumerate" ]; then echo '{enum}'; exit 0; fi
        ''').format(shebang=shebang, name=name, target=target, priority=priority,
                    enum=enumerate_output) + textwrap.dedent(body)
    return add_script(paths, name, text)


def run_cli(args, input_text: Optional[str] = None, env: Optional[Dict[str, str]] = None,
            timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("OVM_TEMPLATE_CONFIG_NO_FORK", None)
    full_env.update(env or {})
    return subprocess.run([OVM_TEMPLATE_CONFIG] + list(args), input=input_text, text=True,
                          capture_output=True, env=full_env, timeout=timeout, **kwargs)


def tree_hashes(root: str) -> Dict[str, tuple]:
    """Every entry under ``root``: (mode, sha256 of content or link target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = "link:" + os.readlink(path)
            else:
                digest = None
            out[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, digest)
    return out


def all_text_under(root: str) -> str:
    """The content of every regular file under ``root`` (to look for leaked secrets)."""
    chunks = []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    chunks.append(handle.read().decode("utf-8", "replace"))
    return "\n".join(chunks)


def ran(tmp_path):
    """The lines :func:`recording_module` modules wrote, in order."""
    path = tmp_path / "ran"
    return path.read_text().splitlines() if path.exists() else []


def recording_module(paths, tmp_path, name="recorder", priority=50, descriptors=None):
    """A module that appends ``NAME run=<params["run"]>`` to tmp_path/ran."""
    add_python_module(paths, name, priority, '''\
        with open(%r, "a") as handle:
            handle.write("%s run=%%s\\n" %% params.get("run", "?"))
        params["%s.done"] = "yes"
        ''' % (str(tmp_path / "ran"), name, name), descriptors=descriptors)


def wait_readable(fd, timeout=TIMEOUT):
    """True once ``fd`` is readable, False if ``timeout`` passed first."""
    ready, _, _ = select.select([fd], [], [], timeout)
    return bool(ready)
