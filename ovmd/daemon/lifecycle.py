"""The guest's lifecycle targets: what the host's events and the guest's own shutdown
run (docs/protocol.md §1.3 has the whole mapping).

=====================================================  ===================================
what happens                                           what the daemon runs
=====================================================  ===================================
``VMAPIEvent`` shutdown (0x4): the host will shut the  ``shutdown``, once per daemon run
guest down
``VMAPIEvent`` migrate (0x2): the host migrates the    ``migrate``
guest
the guest shuts down (systemd stops ``ovmd.service``,  ``shutdown``, unless it ran already;
SysV init its script, in runlevel 0 or 6)             bounded by ``SHUTDOWN_TIMEOUT``
``VMAPIEvent`` reconfig (0x8)                          ``configure --changed-only`` (the
                                                       first-boot machine)
=====================================================  ===================================

A target with nothing linked in ``/etc/template.d/<target>.d`` starts no runner at all.
One run at a time, as for ``ovmd -s``: a target the host asks for while another run
goes (or while a configure run is due: first boot comes first) waits for it, once per
target. Runs of these targets are the first-boot machine's "another target" (its BUSY
state), started with the cached params like ``ovmd -s TARGET``; the host hears nothing
of them (their outcome is logged, and the run report shows it). A stop of the daemon
that is not the guest's shutdown (a restart, ``systemctl stop ovmd``) runs nothing; a
sealed guest runs nothing either.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional, Set

from .. import sysconfig
from ..firstboot.machine import Event, FirstBootMachine
from ..paths import Paths
from .loop import EventLoop
from .runs import RunResult, RunSlot
from .service import guest_shutting_down, sd_notify
from .targetrun import RUNNER, TargetRun

log = logging.getLogger(__name__)

SHUTDOWN = "shutdown"
MIGRATE = "migrate"
#: Host event (a name of its bits) -> the target it runs, in the order they run.
EVENT_TARGETS = ((SHUTDOWN, SHUTDOWN), (MIGRATE, MIGRATE))
#: The setting in /etc/sysconfig/ovmd that bounds the shutdown target (seconds), and its
#: default: the runner's ``--timeout`` for each module; the daemon stops a runner still
#: running :data:`SHUTDOWN_GRACE` seconds after it.
SHUTDOWN_TIMEOUT = "SHUTDOWN_TIMEOUT"
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
SHUTDOWN_GRACE = 2.0
#: After the daemon stopped a shutdown runner, how long it waits for it to exit.
STOP_WAIT = 3.0
BOUND_TIMER = "shutdown-bound"


class LifecycleTargets:
    """Runs the targets of the table above, one at a time, through the runner slot.

    ``blocked()`` says whether a target must wait (a seal in progress, a configure run
    due); ``stop()`` ends the daemon's loop (after the shutdown target at a guest
    shutdown)."""

    def __init__(self, paths: Paths, loop: EventLoop, runs: RunSlot,
                 first_boot: FirstBootMachine, blocked: Callable[[], bool],
                 stop: Callable[[], None]) -> None:
        self.paths = paths
        self.loop = loop
        self.runs = runs
        self.first_boot = first_boot
        self.blocked = blocked
        self.stop = stop
        self.queue: List[str] = []
        #: targets that ran (ended) since the daemon started
        self.ran: Set[str] = set()
        #: the run of ours going, if one is
        self.current: Optional[TargetRun] = None
        #: the shutdown run of a guest shutdown: its end ends the daemon
        self.final: Optional[TargetRun] = None

    def shutdown_timeout(self) -> float:
        try:
            return sysconfig.seconds(self.paths, SHUTDOWN_TIMEOUT, DEFAULT_SHUTDOWN_TIMEOUT)
        except sysconfig.SettingError as err:
            log.warning("%s; using %g", err, DEFAULT_SHUTDOWN_TIMEOUT)
            return DEFAULT_SHUTDOWN_TIMEOUT

    # --- the host's events ----------------------------------------------------------------
    def host_event(self, names: List[str]) -> None:
        """A ``VMAPIEvent`` with the bits ``names``: queue the targets they run."""
        for event, target in EVENT_TARGETS:
            if event in names:
                self.request(target, "the host's %s event" % event)

    def request(self, target: str, why: str) -> None:
        if self.first_boot.sealed:
            log.info("%s: the guest is sealed; the %s target does not run", why, target)
            return
        if target == SHUTDOWN and (SHUTDOWN in self.ran or self._running(SHUTDOWN)):
            log.info("%s: the shutdown target ran already", why)
            return
        if not self.paths.linked_modules(target):
            log.info("%s: no module is linked for the %s target (%s): nothing to run",
                     why, target, self.paths.target_dir(target))
            return
        if target in self.queue:
            log.info("%s: the %s target is due already", why, target)
            return
        self.queue.append(target)
        if self.runs.current is not None or self.blocked():
            log.info("%s: the %s target runs when %s", why, target,
                     "the run going ends" if self.runs.current is not None
                     else "first boot's configure run is done")
        self.next()

    def _running(self, target: str) -> bool:
        return self.current is not None and self.current.target == target

    def next(self) -> None:
        """Start the next target due, if nothing keeps it waiting."""
        if self.first_boot.sealed:
            self.queue = []
        while self.queue and self.runs.current is None and not self.blocked() \
                and self.final is None:
            self._start(self.queue.pop(0))

    def _start(self, target: str, timeout: Optional[float] = None) -> Optional[TargetRun]:
        if target == SHUTDOWN and timeout is None:
            timeout = self.shutdown_timeout()
        self.first_boot.script_starting(target)
        run = self.runs.start(target, timeout=timeout)
        if self.runs.current is run:
            self.current = run
            return run
        return None  # it could not even start; its end was handled already

    def run_ended(self, result: RunResult) -> None:
        run = result.run
        if run is not self.current and run is not self.final:
            return
        self.current = None
        self.ran.add(run.target)
        if result.event == Event.RUN_OK:
            log.info("the %s target is done", run.target)
        else:
            log.error("the %s target failed: %s", run.target, result.reason)
        if run is self.final:
            self.loop.cancel_timer(BOUND_TIMER)
            self.stop()

    # --- the guest's own shutdown ---------------------------------------------------------
    def at_guest_shutdown(self) -> bool:
        """The daemon was told to stop: if the guest is shutting down, start the
        shutdown target (True: the daemon stops when it ends, or at its bound)."""
        self.queue = []
        if self.first_boot.sealed:
            log.info("sealed: the shutdown target does not run")
            return False
        if SHUTDOWN in self.ran:
            return False
        if self._running(SHUTDOWN):  # the host's event started it: let it end, bounded
            self.final = self.current
            self.loop.set_timer(BOUND_TIMER, self.shutdown_timeout() + SHUTDOWN_GRACE,
                                self._bound_passed)
            return True
        if not self.paths.linked_modules(SHUTDOWN):
            return False
        if not guest_shutting_down():
            log.info("the guest is not shutting down (ovmd alone stops or restarts): the "
                     "shutdown target does not run")
            return False
        if self.runs.current is not None:
            log.warning("the guest is shutting down while %s %s runs: the shutdown target "
                        "does not run", RUNNER, self.runs.current.target)
            return False
        self.runs.stand_down()
        timeout = self.shutdown_timeout()
        log.info("the guest is shutting down: running the shutdown target (at most %g s "
                 "per module; %s=%g)", timeout, SHUTDOWN_TIMEOUT, timeout)
        # systemd's TimeoutStopSec is the unit's; tell it how long this may take
        sd_notify("EXTEND_TIMEOUT_USEC=%d" % int((timeout + SHUTDOWN_GRACE + STOP_WAIT + 5)
                                                  * 1e6))
        self.final = self._start(SHUTDOWN, timeout)
        if self.final is None:
            return False
        self.loop.set_timer(BOUND_TIMER, timeout + SHUTDOWN_GRACE, self._bound_passed)
        return True

    def _bound_passed(self) -> None:
        run = self.final
        if run is None or run.finished:
            return
        log.error("the shutdown target did not end within %s=%g s: stopping %s (pid %s)",
                  SHUTDOWN_TIMEOUT, self.shutdown_timeout(), RUNNER,
                  run.process.pid if run.process is not None else "?")
        run.kill()
        self.loop.set_timer(BOUND_TIMER, STOP_WAIT, self.stop)

    def stop_now(self) -> None:
        """A second termination signal: stop a shutdown run at once."""
        run = self.final
        if run is not None and not run.finished:
            log.info("stopping the shutdown target now")
            run.kill()
