"""The daemon: builds its parts, connects them, and runs them until SIGTERM.

The parts: the :class:`~.loop.EventLoop`; the :class:`~.hostlink.HostLink` (XenStore in
and out) storing into the :class:`~ovmd.cache.ParamCache`; the
:class:`~.addresses.AddressReporter` (the guest's IP addresses to the host, through the
host link); the control socket answered by
:class:`~.requests.ControlRequests`; the :class:`~.runs.RunSlot` for
``ovm-template-config`` children; and the first-boot
:class:`~ovmd.firstboot.machine.FirstBootMachine`, which the daemon feeds events and
which acts through :class:`DaemonFirstBootActions`.
"""
from __future__ import annotations

import logging
import signal
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from .. import __version__
from ..cache import CacheError, ParamCache
from ..channel import MessageError, check_message, printable
from ..control import ControlServer
from ..firstboot.contract import TRIGGER_KEY
from ..firstboot.flag import initial_config_enabled, mark_configured
from ..firstboot.machine import CONFIGURE, FirstBootMachine
from ..paths import Paths
from ..secrets import RedactingFilter
from ..status import compute_status
from .addresses import AddressReporter
from .hostlink import HostLink
from .loop import EventLoop, guarded
from .requests import ControlRequests
from .runs import RunResult, RunSlot
from .service import LogSetup, sd_notify
from .targetrun import RUNNER

log = logging.getLogger(__name__)

QUIET_TIMER = "quiet"


class Daemon:
    """``ovmd --foreground``: everything the daemon does, from start to READY=1 to stop."""

    def __init__(self, paths: Paths, *, xenstore_path: Optional[str] = None,
                 quiet_period: float = 1.0, redactor: Optional[RedactingFilter] = None,
                 log_setup: Optional[LogSetup] = None) -> None:
        self.paths = paths
        self.log_setup = log_setup
        self.loop = EventLoop()
        self.cache = ParamCache(paths, redactor or RedactingFilter())
        self.link = HostLink(self.loop, self.cache, xenstore_path, self._stored)
        self.addresses = AddressReporter(paths, self.loop, self.link)
        self.runs = RunSlot(paths, self.loop, self.cache, self._run_finished)
        self.first_boot = FirstBootMachine(DaemonFirstBootActions(self), quiet_period)
        self.requests = ControlRequests(self.cache, self.link, self.runs, self.first_boot,
                                        self.status)
        self.control: Optional[ControlServer] = None

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        self.loop.on_signals((signal.SIGTERM, signal.SIGINT), self._terminate)
        self.loop.on_signals((signal.SIGHUP,), self._reopen_logs)
        self.loop.on_signals((signal.SIGCHLD,), self.runs.child_exited)
        self.cache.load()
        self.control = ControlServer(self.paths.control_socket, self.requests.handle,
                                     self.loop.selector, self.paths.root)
        self.addresses.start()  # before connecting: it watches device/vif
        self.link.connect(drain_all=True)  # the messages waiting before READY=1
        self.first_boot.started()
        sd_notify("READY=1\nSTATUS=waiting for host messages")
        log.info("ovmd %s ready (root %s)", __version__, self.paths.root)
        try:
            self.loop.run(self.link.work)
        finally:
            self._shutdown()
        return 0

    def _terminate(self) -> None:
        log.info("received a termination signal")
        self.loop.stop()

    def _reopen_logs(self) -> None:
        if self.log_setup is not None:
            self.log_setup.reopen()
        log.info("reopened logs")

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("ovmd stopping")
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
        self.first_boot.messages_stored(keys)

    def _run_finished(self, result: RunResult) -> None:
        # the run has just enumerated the modules: keys not known before may now go to
        # disk (or must leave it), before a successful first boot wipes the secrets
        guarded(self.cache.refresh)
        self.first_boot.run_ended(result.event, result.reason, result.returned)
        for conn in result.run.waiters:
            conn.respond(*result.answer)
        self.requests.wake_status_waiters()

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

    def start_run(self) -> None:
        self.daemon.runs.start(CONFIGURE, first_boot=True)

    def set_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        self.daemon.loop.set_timer(QUIET_TIMER, seconds, callback)

    def cancel_timer(self) -> None:
        self.daemon.loop.cancel_timer(QUIET_TIMER)

    def mark_configured(self) -> None:
        mark_configured(self.daemon.paths)

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
