"""The daemon: builds its parts, connects them, and runs them until SIGTERM.

The parts: the :class:`~.loop.EventLoop`; the :class:`~.hostlink.HostLink` (XenStore in
and out) storing into the :class:`~ovmd.cache.ParamCache`; the
:class:`~.addresses.AddressReporter` (the guest's IP addresses to the host, through the
host link); the control socket answered by
:class:`~.requests.ControlRequests`; the :class:`~.runs.RunSlot` for
``ovm-template-config`` children; the inotify watch on the first-boot flag
(:class:`~ovmd.firstboot.watch.SysconfigWatch`: the console dialog may configure the
guest meanwhile); the first-boot :class:`~ovmd.firstboot.machine.FirstBootMachine`,
which the daemon feeds events and which acts through :class:`DaemonFirstBootActions`;
the :class:`~.clone.CloneDetector` (``DETECT_CLONE``), the
:class:`~.lifecycle.LifecycleTargets` (the host's shutdown and migrate events, the
guest's own shutdown) and :class:`~.sealing.DaemonSeal` (``ovmd --seal``). After every
event the ``--status --wait`` clients are answered if first boot has reached a final
state, a first-boot runner is kept standing by while one may be needed, and a lifecycle
target that waited starts if nothing holds it back any more.

On SIGTERM or SIGINT the daemon stops; when the guest itself is shutting down it first
runs the shutdown target, bounded (:mod:`.lifecycle`); a second signal stops it at once.
"""
from __future__ import annotations

import logging
import signal
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .. import __version__, sysconfig
from ..cache import CacheError, ParamCache
from ..channel import MessageError, check_message, printable
from ..control import ControlServer
from ..firstboot.contract import TRIGGER_KEY
from ..firstboot.flag import initial_config_enabled, initial_config_state, mark_configured
from ..firstboot.machine import (
    CONFIGURE,
    DEFAULT_QUIET_PERIOD,
    QUIET_PERIOD,
    FirstBootMachine,
)
from ..paths import Paths
from ..secrets import RedactingFilter
from ..status import compute_status
from .addresses import AddressReporter
from .clone import CloneDetector
from .hostlink import HostLink
from .lifecycle import LifecycleTargets
from .loop import EventLoop, guarded
from .requests import ControlRequests
from .runs import RunResult, RunSlot
from .sealing import DaemonSeal
from .service import LogSetup, sd_notify
from .targetrun import RUNNER

log = logging.getLogger(__name__)

QUIET_TIMER = "quiet"
#: The name of the host event that asks a configured guest to apply its changed params.
RECONFIG_EVENT = "reconfig"


class Daemon:
    """``ovmd --foreground``: everything the daemon does, from start to READY=1 to stop."""

    def __init__(self, paths: Paths, *, xenstore_path: Optional[str] = None,
                 quiet_period: Optional[float] = None,
                 redactor: Optional[RedactingFilter] = None,
                 log_setup: Optional[LogSetup] = None) -> None:
        self.paths = paths
        self.log_setup = log_setup
        self.loop = EventLoop()
        self.cache = ParamCache(paths, redactor or RedactingFilter())
        self.link = HostLink(self.loop, self.cache, xenstore_path, self._stored,
                             on_event=self._host_event)
        self.addresses = AddressReporter(paths, self.loop, self.link)
        self.runs = RunSlot(paths, self.loop, self.cache, self._run_finished)
        #: ``--quiet-period``, which wins over QUIET_PERIOD in the sysconfig file
        self.quiet_period_option = quiet_period
        self.first_boot = FirstBootMachine(DaemonFirstBootActions(self), 0.0)
        self.clone = CloneDetector(paths, self.cache)
        self.link.before_intake(self.clone.connected)
        self.sealing = DaemonSeal(paths, self.cache, self.link, self.runs, self.first_boot,
                                  self._feed)
        self.lifecycle = LifecycleTargets(paths, self.loop, self.runs, self.first_boot,
                                          self._lifecycle_blocked, self.loop.stop)
        self.requests = ControlRequests(self.cache, self.link, self.runs, self.first_boot,
                                        self.status, self.sealing)
        #: a termination signal came: the daemon stops (after the shutdown target)
        self.stopping = False
        self.control: Optional[ControlServer] = None
        self.flag_watch: Optional[Any] = None
        self.initial_config = False  # INITIAL_CONFIG=yes, as last read

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        self.loop.on_signals((signal.SIGTERM, signal.SIGINT), self._terminate)
        self.loop.on_signals((signal.SIGHUP,), self._reopen_logs)
        self.loop.on_signals((signal.SIGCHLD,), self.runs.child_exited)
        self._read_quiet_period(starting=True)
        self.clone.read_setting()
        self.cache.load()
        self._watch_flag()
        self.control = ControlServer(self.paths.control_socket, self.requests.handle,
                                     self.loop.selector, self.paths.root)
        self.addresses.start()  # before connecting: it watches device/vif
        self.link.connect(drain_all=True)  # the messages waiting before READY=1
        self._feed(self.first_boot.started)
        sd_notify("READY=1\nSTATUS=waiting for host messages")
        log.info("ovmd %s ready (root %s)%s", __version__, self.paths.root,
                 "" if self.link.connected else
                 "; not connected to XenStore yet (see above): host messages are read once "
                 "it is")
        try:
            self.loop.run(self.link.work)
        finally:
            self._shutdown()
        return 0

    def _terminate(self) -> None:
        if self.stopping:
            log.info("received a second termination signal: stopping now")
            self.lifecycle.stop_now()
            self.loop.stop()
            return
        self.stopping = True
        log.info("received a termination signal")
        if not self.lifecycle.at_guest_shutdown():
            self.loop.stop()

    def _reopen_logs(self) -> None:
        if self.log_setup is not None:
            self.log_setup.reopen()
        log.info("reopened logs")
        self._read_quiet_period()

    def _read_quiet_period(self, starting: bool = False) -> None:
        """The quiet period: ``--quiet-period``, else QUIET_PERIOD in the sysconfig file
        (read at start and on SIGHUP), else the default."""
        seconds = self.quiet_period_option
        source = "--quiet-period"
        if seconds is None:
            source = self.paths.sysconfig_ovmd
            try:
                seconds = sysconfig.seconds(self.paths, QUIET_PERIOD, DEFAULT_QUIET_PERIOD)
            except sysconfig.SettingError as err:
                log.warning("%s; using %g: correct it, or give --quiet-period", err,
                            DEFAULT_QUIET_PERIOD)
                seconds = DEFAULT_QUIET_PERIOD
        if starting or seconds != self.first_boot.quiet_period:
            log.info("quiet period %g s (%s)", seconds, source)
        self.first_boot.quiet_period = seconds

    def _watch_flag(self) -> None:
        """Watch the first-boot flag (inotify on its directory: no polling)."""
        from ..firstboot.watch import SysconfigWatch

        self.initial_config = initial_config_enabled(self.paths)
        try:
            self.flag_watch = SysconfigWatch(self.paths)
        except OSError as err:  # no sysconfig directory: then the flag is never yes
            log.info("not watching the first-boot flag: %s", err)
            return
        self.loop.add_reader(self.flag_watch, self._flag_changed)

    def _flag_changed(self, _mask: int) -> None:
        """Something changed in the flag's directory: if INITIAL_CONFIG turned from yes
        to an explicit no (not a file caught half rewritten), the console dialog (or an
        operator) configured the guest."""
        assert self.flag_watch is not None
        turned_no = self.flag_watch.poll()
        if turned_no and self.initial_config:
            self._feed(self.first_boot.flag_turned_no)
        elif initial_config_state(self.paths) is True and not self.initial_config:
            self._feed(None)

    def _feed(self, event: Optional[Callable[..., None]], *args: Any) -> None:
        """Give the first-boot machine an event; then answer the ``--status --wait``
        clients if first boot is over, and keep a first-boot runner standing by while
        one may be needed."""
        if event is not None:
            event(*args)
        state = initial_config_state(self.paths)
        if state is not None:
            self.initial_config = state
        if self.initial_config and not self.stopping and not self.sealing.active \
                and not self.first_boot.sealed:
            self.runs.stand_by()
        else:
            self.runs.stand_down()
        self.requests.wake_status_waiters()
        if not self.stopping:
            self.lifecycle.next()

    def _lifecycle_blocked(self) -> bool:
        """A lifecycle target waits while a seal goes on or a configure run is due."""
        return self.sealing.active or self.first_boot.armed

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("ovmd stopping")
        self.runs.stand_down()
        if self.flag_watch is not None:
            self.loop.remove(self.flag_watch)
            self.flag_watch.close()
        if self.runs.current is not None:
            # the runner keeps resumable progress; a restart finishes the job
            log.info("leaving %s %s to finish on its own", RUNNER, self.runs.current.target)
        self.requests.close()
        if self.control is not None:
            self.control.close()
        self.addresses.close()
        self.link.close()
        self.cache.close()
        self.loop.close()

    # --- what the parts tell each other ---------------------------------------------------
    def _stored(self, keys: Sequence[str]) -> None:
        self._feed(self.first_boot.messages_stored, keys)

    def _host_event(self, names: Sequence[str]) -> None:
        if RECONFIG_EVENT in names:
            self._feed(self.first_boot.reconfig_requested)
        if not self.stopping:
            self.lifecycle.host_event(list(names))

    def _run_finished(self, result: RunResult) -> None:
        # the run has just enumerated the modules: keys not known before may now go to
        # disk (or must leave it), before a successful first boot wipes the secrets
        guarded(self.cache.refresh)
        for conn in result.run.waiters:
            conn.respond(*result.answer)
        self.lifecycle.run_ended(result)
        sealing = self.sealing.owns(result.run)
        self.first_boot.run_ended(result.event, result.reason, result.returned)
        if sealing:
            self.sealing.run_ended(result)
        self._feed(None)

    def status(self) -> Dict[str, Any]:
        """What ``ovmd --status`` answers (:func:`ovmd.status.compute_status`)."""
        current = self.runs.current
        info = {
            "running_target": current.target if current else None,
            "armed": self.first_boot.armed,
            "last_result": self.first_boot.last_result,
            "events": list(self.link.events),
        }
        status = compute_status(self.paths, info)
        status["xenstore_connected"] = self.link.connected
        status["sealed"] = self.first_boot.sealed
        return status


class DaemonFirstBootActions:
    """What the first-boot machine may ask of the daemon
    (:class:`~ovmd.firstboot.machine.FirstBootActions`)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def initial_config_enabled(self) -> bool:
        return initial_config_enabled(self.daemon.paths)

    def trigger_cached(self) -> bool:
        return TRIGGER_KEY in self.daemon.cache

    def params_newer(self) -> bool:
        return self.daemon.runs.params_newer()

    def start_run(self, first_boot: bool) -> None:
        self.daemon.runs.start(CONFIGURE, first_boot=first_boot, changed_only=not first_boot)

    def set_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        self.daemon.loop.set_timer(QUIET_TIMER, seconds, callback)

    def cancel_timer(self) -> None:
        self.daemon.loop.cancel_timer(QUIET_TIMER)

    def mark_configured(self) -> None:
        if initial_config_enabled(self.daemon.paths):
            mark_configured(self.daemon.paths)

    def record_identity(self) -> None:
        self.daemon.clone.record_configured()

    def keep_results(self, params: Sequence[Tuple[str, str]]) -> None:
        cache = self.daemon.cache
        if params:
            try:
                cache.update(params)
            except CacheError as err:  # a full disk: the host still gets them
                log.error("cannot store the params the run returned: %s", err)
        for key, value in params:
            if cache.is_secret(key):  # flagged password by a module: never sent
                continue
            try:
                check_message(key, value)
            except MessageError as err:
                log.warning("not sending %s back: %s", printable(key), err)
                continue
            warning = self.daemon.link.send(key, value)
            if warning:
                log.warning("%s", warning)

    def wipe_secrets(self) -> int:
        return len(self.daemon.cache.wipe_secrets())

    def send(self, key: str, value: str) -> None:
        self.daemon.link.send(key, value)  # a status: queued if XenStore is away
