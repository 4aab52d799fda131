"""The runner's side of first boot (``--initial-config``), built on :mod:`ovmd.firstboot`.

Two paths may configure a freshly cloned guest, the message path (``ovmd`` runs
``--initial-config --input FD configure``) and the console dialog
(``--console-input --initial-config configure``); whichever completes first wins and the
other stands down. :class:`FirstBootRun` is one such invocation; the flag, the watch and
the exit status it uses are :mod:`ovmd.firstboot`'s.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

from ovmd.paths import Paths

if TYPE_CHECKING:
    from ovmd.firstboot.watch import SysconfigWatch
    from templateconfig.run.runner import ModuleOutcome, Runner, RunResult

log = logging.getLogger(__name__)


class FirstBootOver(Exception):
    """The guest is configured already: this invocation runs nothing. ``exit_status``
    is the command's; the message says what happened."""

    exit_status = 0


class NothingToDo(FirstBootOver):
    """The console dialog found INITIAL_CONFIG not yes before its first question."""

    def __init__(self) -> None:
        super().__init__("INITIAL_CONFIG is not yes: the guest is already configured; "
                         "nothing to do")


class StoodDown(FirstBootOver):
    """The console dialog stopped: the guest was configured by the message path."""

    def __init__(self) -> None:
        super().__init__("configured by the host; console dialog stopped")


class AlreadyConfigured(FirstBootOver):
    """The message path found INITIAL_CONFIG not yes (under the run lock)."""

    def __init__(self) -> None:
        from ovmd.firstboot.contract import EXIT_ALREADY_CONFIGURED

        super().__init__("INITIAL_CONFIG is not yes: already configured; nothing done")
        self.exit_status = EXIT_ALREADY_CONFIGURED


class FirstBootRun:
    """One ``--initial-config`` invocation: the target runs only while INITIAL_CONFIG=yes,
    and the guest is marked configured (INITIAL_CONFIG=no) when the run succeeded.

    Its steps, and what each does when the guest turns out to be configured already:

    :meth:`begin` (the console dialog only)
        watch the flag files, *then* read the flag, so that no change between the check
        and the first question is missed. Not yes: :class:`NothingToDo`.
    prompting (the console dialog only)
        :attr:`cancel` is the dialog's cancel object: the flag turning no (the message
        path won) ends the dialog with :class:`StoodDown`
        (:func:`templateconfig.run.params.gather_params`). :meth:`stop_watching` once the
        params are complete.
    :meth:`run`
        a dry run checks the flag, takes no lock and changes no flag. Otherwise, under
        the run lock, the flag is read again: not yes: :class:`StoodDown` for the console
        dialog, :class:`AlreadyConfigured` for the message path; yes: the run, then, if
        every module succeeded, INITIAL_CONFIG=no, still under the lock.
    """

    def __init__(self, paths: Paths, console: bool, dry_run: bool) -> None:
        self.paths = paths
        self.console = console
        self.dry_run = dry_run
        self.cancel: Optional[SysconfigWatch] = None

    def begin(self) -> None:
        """The console dialog's start; raises :class:`NothingToDo`."""
        from ovmd.firstboot.flag import initial_config_enabled

        self.cancel = _watch_sysconfig(self.paths)
        if not initial_config_enabled(self.paths):
            self.stop_watching()
            raise NothingToDo()

    def stop_watching(self) -> None:
        if self.cancel is not None:
            self.cancel.close()
            self.cancel = None

    def run(self, runner: Runner, params: Dict[str, Any],
            on_module: Optional[Callable[[ModuleOutcome], None]] = None) -> RunResult:
        """The run, if the guest still waits for it (see the class docstring)."""
        from ovmd.firstboot.flag import initial_config_enabled, mark_configured

        if self.dry_run:  # touches nothing: no lock, no flag change
            if not initial_config_enabled(self.paths):
                raise AlreadyConfigured()
            return runner.run(params, on_module=on_module)
        with runner.run_lock():
            if not initial_config_enabled(self.paths):
                raise StoodDown() if self.console else AlreadyConfigured()
            result = runner.run(params, on_module=on_module)
            if result.ok:
                mark_configured(self.paths)
        return result


def _watch_sysconfig(paths: Paths) -> Optional[SysconfigWatch]:
    from ovmd.firstboot.watch import SysconfigWatch

    try:
        return SysconfigWatch(paths)
    except OSError as exc:  # no sysconfig directory (then no INITIAL_CONFIG=yes either)
        log.info("cannot watch the sysconfig files: %s", exc)
        return None
