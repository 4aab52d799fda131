"""Work that does not need the params, started before they arrive: the modules'
``--prepare TARGET`` calls, and the private staging directories they write into.

A module whose header declares ``prepare: TARGET`` (the ssh module: its host keys) is
called as ``SCRIPT --prepare TARGET`` as soon as the runner starts, in a process of its
own, while the runner goes on with its imports and enumeration and then waits for the
params (ovmd starts its first-boot runner before the host's params have come). Its
``TARGET`` call finds the results in the same directory, ``OVM_TEMPLATE_CONFIG_STAGING``.

Each module's staging directory is ``staging/<module>`` in the runner's directory
(0700, under ``/run``, :mod:`templateconfig.run.runnerdir`), so two runners of one root
(the console dialog and ovmd's) never touch each other's. What a module prepared never
outlives the run: its directory is removed once the module has run (or its preparation
failed), the runner's directory at the end of the run, and the directory of a runner
that was killed at the next runner's start.
"""
from __future__ import annotations

import logging
import shutil
from typing import Dict, List, Mapping, Optional

from templateconfig.run.contract import ACTIONS_ENV, PREPARE_FIELD, STAGING_ENV
from templateconfig.run.launcher import Launcher, ModuleProcess
from templateconfig.run.runnerdir import RunnerDir
from templateconfig.run.scripts import Module

log = logging.getLogger(__name__)


def prepares(module: Module, target: str) -> bool:
    """True if the module's header declares ``prepare: ... TARGET ...``."""
    from templateconfig.header import HeaderError, parse_header

    try:
        info = parse_header(module.path)
    except HeaderError:
        return False  # the run reports a bad header where it matters
    return target in info.fields.get(PREPARE_FIELD, "").replace(",", " ").split()


class Preparation:
    """The prepare work of one run: started by :meth:`start`, awaited per module by
    :meth:`wait`, and gone (processes stopped, directories removed) after :meth:`close`."""

    def __init__(self, runner_dir: RunnerDir, target: str, launcher: Launcher,
                 env: Mapping[str, str], timeout: float) -> None:
        self.runner_dir = runner_dir
        self.target = target
        self.launcher = launcher
        self.env = env
        self.timeout = timeout
        self.dirs: Dict[str, str] = {}
        self.processes: Dict[str, Optional[ModuleProcess]] = {}

    def start(self, modules: List[Module]) -> None:
        """Start the prepare call of every module that declares one for the target."""
        for module in modules:
            if not prepares(module, self.target):
                continue
            directory = None
            try:
                directory = self.runner_dir.staging(module.name)
                env = dict(self.env)
                env[STAGING_ENV] = directory
                env.pop(ACTIONS_ENV, None)  # it changes nothing in the guest
                self.launcher.on_spawn = self.runner_dir.record
                try:
                    process = self.launcher.spawn(module.path, ["--prepare", self.target],
                                                  env)
                finally:
                    self.launcher.on_spawn = None
            except OSError as exc:
                log.info("%s: cannot start its preparation: %s", module.name, exc)
                if directory is not None:
                    shutil.rmtree(directory, ignore_errors=True)
                continue
            self.dirs[module.name] = directory
            self.processes[module.name] = process
            log.debug("%s: preparing %s (pid %d)", module.name, self.target, process.pid)

    def staging(self, module: Module) -> Optional[str]:
        """The module's staging directory, if it is preparing or prepared."""
        return self.dirs.get(module.name)

    def wait(self, module: Module) -> None:
        """Wait for the module's preparation to end; if it failed, what it left is
        removed (the module then does all its work itself)."""
        process = self.processes.pop(module.name, None)
        if process is None:
            return
        result = self.launcher.collect(process, self.timeout)
        if result.returncode != 0 or result.timed_out:
            log.info("%s: its preparation failed (%s); it does the work itself", module.name,
                     "timed out" if result.timed_out else "exit status %d" % result.returncode)
            self.discard(module)

    def discard(self, module: Module) -> None:
        """The module has run: remove what it prepared."""
        directory = self.dirs.pop(module.name, None)
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def close(self) -> None:
        """Stop preparations still running and remove what they staged."""
        for process in self.processes.values():
            self.launcher.discard(process)
        self.processes.clear()
        for directory in self.dirs.values():
            shutil.rmtree(directory, ignore_errors=True)
        self.dirs.clear()
