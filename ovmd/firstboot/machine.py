"""First boot on the daemon's side: one state machine decides when to run ``configure``.

The host sends its parameters as messages, the trigger key (the root password) last; a
quiet period, restarted by every message, lets a burst finish before the first-boot run
starts (docs/protocol.md). A message that arrives later is never lost: if the params
changed while a run went on, configure runs again when it ends (with ``--changed-only``,
so that only the modules whose params changed do anything), and the host is told
``done`` (or the failure) only once a run has had the newest params. On a configured
guest (INITIAL_CONFIG=no) params are stored, not applied, until the host sends the
``reconfig`` event. The daemon feeds :class:`FirstBootMachine` events and the machine
asks the daemon to act through :class:`FirstBootActions`; nothing else keeps or changes
first-boot state.

States:

    WAITING     no run is wanted: the trigger has not arrived (or the quiet period found
                nothing to run), or the guest is configured and nothing asks for more
    QUIET       a run is wanted; the quiet timer runs
    PENDING     a run is wanted, but the quiet period was cancelled (``ovmd -s
                configure``) or ended while another run held the runner: the next
                stored message restarts it
    RUNNING     a configure run the machine started: the first-boot run
                (``ovm-template-config --initial-config configure``) or, on a configured
                guest, a reconfiguration (``--changed-only configure``)
    BUSY        another run (``ovmd -s TARGET``) holds the runner
    DONE        the last run succeeded, with the newest params (``done`` was sent)
    FAILED      the last run failed (``failed: ...`` was sent)
    STOOD_DOWN  the guest was configured by someone else (the console dialog): the
                runner found INITIAL_CONFIG not yes (exit ``EXIT_ALREADY_CONFIGURED``), or
                the flag turned no while the machine waited
    SEALED      the guest was sealed as a template (``ovmd --seal``): INITIAL_CONFIG=yes
                is for its clones, not for this boot; nothing runs until the daemon stops

WAITING, DONE, FAILED and STOOD_DOWN are the idle states: they react alike and differ
only in :attr:`FirstBootMachine.last_result`, which ``ovmd --status`` reports. Besides
the state the machine keeps ``reconfigure`` (a configure run is wanted although
INITIAL_CONFIG=no: the reconfig event came, or the params changed during the last run),
and while a run is going ``resume``, the state it left to start the run (QUIET becomes
PENDING when its timer is cancelled or fires meanwhile), ``late`` (while another target
held the runner, the trigger or the reconfig event came) and ``first_boot`` (the run
is a first-boot run).

Events: START the daemon has started (after consuming the messages waiting in XenStore);
STORED host messages were stored, the trigger not among them; TRIGGER host messages were
stored, the trigger among them; RECONFIG the host's ``VMAPIEvent`` with the reconfig bit
(8); FLAG_NO INITIAL_CONFIG turned from yes to no, not by a run of ours (the console
dialog configured the guest); QUIET_OVER the quiet timer fired; SCRIPT ``ovmd -s TARGET``
starts a run (the daemon refuses one while a run is going); RUN_OK, RUN_FAILED,
RUN_ALREADY the run ended (RUN_ALREADY: a first-boot run exited
``EXIT_ALREADY_CONFIGURED``); SEALED ``ovmd --seal`` sealed the guest (its cleanup run
ended well and ovmd's state is gone).

Before START the daemon may have re-armed first boot itself (``DETECT_CLONE=yes``, a
guest that starts as another VM than the one configured last: INITIAL_CONFIG=yes, the
cache cleared; ovmd/daemon/clone.py); the machine reads the flag as it finds it.

Transitions. Guards, read when the event is handled: "yes" INITIAL_CONFIG=yes; "cached"
the trigger is in the cache; "newer" the cache holds params the run that ended was not
given (added or changed; not those it returned); "wanted" yes and cached, or not yes and
reconfigure. ``[...]``: what the daemon is asked to do. A pair not listed changes nothing.

    state        event        guard             new state      actions
    -----------  -----------  ----------------  -------------  --------------------------
    WAITING      START        yes and cached    QUIET          [set timer]
    idle, BUSY   STORED,      not yes and not   (same)         [log: stored, not applied,
                 TRIGGER      reconfigure                      and how to apply them]
    idle         TRIGGER      yes               QUIET          [set timer]
    idle         RECONFIG     not yes           QUIET          [set timer]; reconfigure
                              yes and cached    QUIET          [set timer]
                              otherwise         (same)         [log: waiting for the trigger]
    WAITING,     FLAG_NO                        STOOD_DOWN     [wipe secrets]
    FAILED
    idle         SCRIPT                         RUNNING (a first-boot run) or BUSY;
                                                resume = this state; configure: not
                                                reconfigure (it applies everything)
    QUIET        START        yes and cached    QUIET          [set timer]
                              otherwise         WAITING        [cancel timer]
    QUIET        STORED,      wanted            QUIET          [set timer]
                 TRIGGER
    QUIET        RECONFIG     as idle           QUIET          [set timer]
    QUIET        FLAG_NO                        STOOD_DOWN     [cancel timer, wipe secrets]
    QUIET        QUIET_OVER   yes and cached    RUNNING        [start a first-boot run];
                                                               resume WAITING
                              not yes and       RUNNING        [start a --changed-only
                              reconfigure                      run]; resume WAITING
                              otherwise         WAITING
    QUIET        SCRIPT       configure         as idle, resume PENDING  [cancel timer]
                              another target    BUSY, resume QUIET (the timer runs on)
    PENDING      STORED,      wanted            QUIET          [set timer]
                 TRIGGER
    PENDING      RECONFIG     as idle           QUIET          [set timer]
    PENDING      FLAG_NO                        STOOD_DOWN     [wipe secrets]
    PENDING      SCRIPT                         as idle, resume PENDING
    RUNNING      RUN_OK       newer             QUIET          [mark configured (a first-
                                                               boot run), record the VM's
                                                               identity, keep and send the
                                                               returned params, set timer];
                                                               reconfigure unless yes
                              otherwise         after(DONE)    [mark configured (a first-
                                                               boot run), record the VM's
                                                               identity, keep and send the
                                                               returned params, wipe
                                                               secrets, send status done]
    RUNNING      RUN_FAILED   newer             QUIET          [set timer]; reconfigure
                                                               unless yes
                              otherwise         after(FAILED)  [send "failed: <reason>"]
    RUNNING      RUN_ALREADY                    STOOD_DOWN     [wipe secrets]
    BUSY         TRIGGER      yes               BUSY           late
    BUSY         RECONFIG                       BUSY           late; reconfigure unless yes
    BUSY         FLAG_NO      resume QUIET or   BUSY           resume STOOD_DOWN  [cancel
                              PENDING                          timer, wipe secrets]
    BUSY         QUIET_OVER                     BUSY           resume QUIET becomes PENDING
    BUSY         RUN_*                          after(resume, or WAITING if resume is not
                                                idle)
    idle, QUIET  SEALED                         SEALED         [cancel timer (QUIET)];
    PENDING                                                    reconfigure forgotten
    SEALED       any                            SEALED         (nothing, until the daemon
                                                               stops)

    after(X): late and wanted: QUIET [set timer]; else resume if it is QUIET or PENDING
    and wanted; else X (a QUIET resume's timer cancelled; reconfigure forgotten).
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, Optional, Protocol, Sequence, Tuple

from ..status import BootStatus
from .contract import STATUS_DONE, STATUS_KEY, TRIGGER_KEY, failed_status

log = logging.getLogger(__name__)

#: The target a first-boot run runs.
CONFIGURE = "configure"
#: The setting in /etc/sysconfig/ovmd for the quiet period (seconds), and its default.
QUIET_PERIOD = "QUIET_PERIOD"
DEFAULT_QUIET_PERIOD = 0.1


class State:
    """The states of :class:`FirstBootMachine` (see the module's table)."""

    WAITING = "waiting"
    QUIET = "quiet"
    PENDING = "pending"
    RUNNING = "running"
    BUSY = "busy"
    DONE = "done"
    FAILED = "failed"
    STOOD_DOWN = "stood-down"
    SEALED = "sealed"
    IDLE = (WAITING, DONE, FAILED, STOOD_DOWN)
    ALL = (WAITING, QUIET, PENDING, RUNNING, BUSY, DONE, FAILED, STOOD_DOWN, SEALED)


class Event:
    """The events the daemon feeds :class:`FirstBootMachine`."""

    START = "start"
    STORED = "stored"
    TRIGGER = "trigger"
    RECONFIG = "reconfig"
    FLAG_NO = "flag-no"
    QUIET_OVER = "quiet-over"
    SCRIPT = "script"
    RUN_OK = "run-ok"
    RUN_FAILED = "run-failed"
    RUN_ALREADY = "run-already-configured"
    SEALED = "sealed"
    ALL = (START, STORED, TRIGGER, RECONFIG, FLAG_NO, QUIET_OVER, SCRIPT, RUN_OK, RUN_FAILED,
           RUN_ALREADY, SEALED)


class FirstBootActions(Protocol):
    """What the machine asks of the daemon; the daemon gives it one object doing this."""

    def initial_config_enabled(self) -> bool:
        """INITIAL_CONFIG=yes now."""

    def trigger_cached(self) -> bool:
        """The trigger key is in the parameter cache."""

    def params_newer(self) -> bool:
        """The cache holds a param the run that just ended was not given (added or
        changed since it started, not one it returned)."""

    def start_run(self, first_boot: bool) -> None:
        """Start configure with the cached params: ``ovm-template-config
        --initial-config configure`` (``first_boot``), else ``--changed-only configure``;
        may report the run's end (:meth:`FirstBootMachine.run_ended`) before returning."""

    def set_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        """(Re)start the quiet timer: ``callback`` after ``seconds``."""

    def cancel_timer(self) -> None:
        """Cancel the quiet timer, if it runs."""

    def mark_configured(self) -> None:
        """Set INITIAL_CONFIG=no (unless it is no already)."""

    def record_identity(self) -> None:
        """Record which VM the guest was configured as (for ``DETECT_CLONE``)."""

    def keep_results(self, params: Sequence[Tuple[str, str]]) -> None:
        """Store the params the run returned in the cache and send them to the host."""

    def wipe_secrets(self) -> int:
        """Forget every cached secret; how many there were."""

    def send(self, key: str, value: str) -> None:
        """Send a message to the host (or queue it until XenStore is back)."""


class FirstBootMachine:
    """First boot's state machine; the module docstring is its table.

    The daemon calls :meth:`started`, :meth:`messages_stored`, :meth:`reconfig_requested`,
    :meth:`flag_turned_no`, :meth:`script_starting`, :meth:`run_ended` and
    :meth:`sealed_now`; the quiet timer calls :meth:`quiet_period_over`.
    """

    def __init__(self, actions: FirstBootActions, quiet_period: float) -> None:
        self.actions = actions
        self.quiet_period = quiet_period
        self.state = State.WAITING
        #: a configure run is wanted although INITIAL_CONFIG=no
        self.reconfigure = False
        #: while a run is going: the state to return to when it ends
        self.resume = State.WAITING
        #: while another target holds the runner: configure is wanted once it ends
        self.late = False
        #: while a run is going: it is a first-boot run
        self.first_boot = False
        #: the outcome of the last run, as ``ovmd --status`` names it
        self.last_result: Optional[str] = None

    # --- what the daemon calls ------------------------------------------------------
    def started(self) -> None:
        """The daemon has started and consumed the messages waiting in XenStore."""
        self._handle(Event.START)

    def messages_stored(self, keys: Iterable[str]) -> None:
        """A batch of host messages was stored durably (``keys``: its parameters)."""
        keys = list(keys)
        self._handle(Event.TRIGGER if TRIGGER_KEY in keys else Event.STORED, keys=keys)

    def reconfig_requested(self) -> None:
        """The host sent ``VMAPIEvent`` with the reconfig bit."""
        self._handle(Event.RECONFIG)

    def flag_turned_no(self) -> None:
        """INITIAL_CONFIG turned from yes to no, and not by a run of ours."""
        self._handle(Event.FLAG_NO)

    def quiet_period_over(self) -> None:
        self._handle(Event.QUIET_OVER)

    def script_starting(self, target: str) -> bool:
        """``ovmd -s TARGET`` starts a run now: True if it is a first-boot run."""
        first_boot = target == CONFIGURE and self.actions.initial_config_enabled()
        self._handle(Event.SCRIPT, target=target, first_boot=first_boot)
        return first_boot

    def run_ended(self, event: str, reason: str = "",
                  returned: Sequence[Tuple[str, str]] = ()) -> None:
        """The run ended: ``event`` is RUN_OK, RUN_FAILED or RUN_ALREADY; ``reason`` why
        it failed (redacted); ``returned`` the public params the run returned."""
        self._handle(event, reason=reason, returned=returned)

    def sealed_now(self) -> None:
        """``ovmd --seal`` sealed the guest: first boot is for its clones."""
        self._handle(Event.SEALED)

    @property
    def sealed(self) -> bool:
        return self.state == State.SEALED

    @property
    def armed(self) -> bool:
        """A configure run is wanted and not started yet."""
        pending = (State.QUIET, State.PENDING)
        return self.state in pending or (self.running and (self.resume in pending
                                                           or self.late))

    @property
    def running(self) -> bool:
        return self.state in (State.RUNNING, State.BUSY)

    # --- the table ----------------------------------------------------------------------
    def _handle(self, event: str, **details: object) -> None:
        transition = TRANSITIONS.get((self.state, event))
        if transition is None:
            log.debug("first boot: %s ignored in state %s", event, self.state)
            return
        transition(self, **details)

    def _enabled(self) -> bool:
        return self.actions.initial_config_enabled()

    def _wanted(self) -> bool:
        if self._enabled():
            return self.actions.trigger_cached()
        return self.reconfigure

    def _quiet(self) -> None:
        self.state = State.QUIET
        self.actions.set_timer(self.quiet_period, self.quiet_period_over)

    def _start_at_boot(self) -> None:
        if self._enabled() and self.actions.trigger_cached():
            log.info("first-boot configuration is pending (root password cached): "
                     "running it after the quiet period")
            self._quiet()
        elif self.state == State.QUIET:
            self.actions.cancel_timer()
            self.state = State.WAITING

    def _stored(self, keys: Sequence[str] = ()) -> None:
        """Messages while nothing will apply them: say so, and how to apply them."""
        if self._enabled() or self.reconfigure:
            return
        log.info("stored %d parameter(s) while the guest is configured (INITIAL_CONFIG=no): "
                 "not applied; to apply them the host sends VMAPIEvent reconfig (8), or run "
                 "`ovmd -s configure` here", len(keys))

    def _trigger_when_idle(self, keys: Sequence[str] = ()) -> None:
        if self._enabled():
            self._quiet()
        else:
            self._stored(keys)

    def _restart_quiet(self, **_: object) -> None:
        if self._wanted():
            self._quiet()

    def _reconfig(self) -> None:
        if not self._enabled():
            log.info("the host asked to reconfigure: running configure with the cached "
                     "params after the quiet period (modules whose params changed)")
            self.reconfigure = True
            self._quiet()
        elif self.actions.trigger_cached():
            self._quiet()
        else:
            log.info("reconfig event: first boot still waits for %s; nothing to run yet",
                     TRIGGER_KEY)

    def _reconfig_while_busy(self) -> None:
        self.late = True
        if not self._enabled():
            self.reconfigure = True

    def _note_late_trigger(self, keys: Sequence[str] = ()) -> None:
        if self._enabled():
            self.late = True
        else:
            self._stored(keys)

    def _configured_elsewhere(self) -> None:
        """The console dialog (or an operator) configured the guest meanwhile."""
        if self.state == State.QUIET:
            self.actions.cancel_timer()
        wiped = self.actions.wipe_secrets()
        log.info("INITIAL_CONFIG turned no (the console dialog configured the guest): "
                 "first boot stands down; wiped %d secret(s)", wiped)
        self.state = State.STOOD_DOWN

    def _configured_elsewhere_while_busy(self) -> None:
        if self.resume in (State.QUIET, State.PENDING):
            if self.resume == State.QUIET:
                self.actions.cancel_timer()
            self.actions.wipe_secrets()
            self.resume = State.STOOD_DOWN

    def _quiet_over(self) -> None:
        first_boot = self._enabled()
        if not self._wanted():
            self.state, self.reconfigure = State.WAITING, False
            return
        log.info("quiet period over: running %s", "first-boot configuration" if first_boot
                 else "configure again, for the params that changed")
        self._enter_run(State.RUNNING, State.WAITING, first_boot)
        self.reconfigure = False
        self.actions.start_run(first_boot)

    def _quiet_over_while_busy(self) -> None:
        if self.resume == State.QUIET:
            self.resume = State.PENDING

    def _script(self, target: str, first_boot: bool) -> None:
        resume = self.state
        if target == CONFIGURE:
            self.reconfigure = False  # a full run applies every param
            if resume == State.QUIET:
                self.actions.cancel_timer()
                resume = State.PENDING
        self._enter_run(State.RUNNING if first_boot else State.BUSY, resume, first_boot)

    def _enter_run(self, state: str, resume: str, first_boot: bool) -> None:
        self.state, self.resume, self.late, self.first_boot = state, resume, False, first_boot

    def _again(self) -> bool:
        """After a run of ours: if the params changed meanwhile, run configure again."""
        if not self.actions.params_newer():
            return False
        log.info("params changed during the run: running configure again after the quiet "
                 "period; the host hears the outcome then")
        self.reconfigure = not self._enabled()
        self._quiet()
        return True

    def _done(self, returned: Sequence[Tuple[str, str]] = (), **_: object) -> None:
        if self.first_boot:
            self.actions.mark_configured()
        self.actions.record_identity()
        self.actions.keep_results(returned)
        if self._again():
            return
        self.last_result = BootStatus.DONE
        wiped = self.actions.wipe_secrets()
        log.info("configuration done; INITIAL_CONFIG=no; wiped %d secret(s)", wiped)
        self.actions.send(STATUS_KEY, STATUS_DONE)
        self._after_run(State.DONE)

    def _failed(self, reason: str = "", **_: object) -> None:
        if self._again():
            return
        self.last_result = BootStatus.FAILED
        self.actions.send(STATUS_KEY, failed_status(reason))
        if self._enabled():
            log.error("first-boot configuration failed; INITIAL_CONFIG stays yes: send the "
                      "root password again to retry")
        else:
            log.error("configure failed: the host sends VMAPIEvent reconfig (8) to retry")
        self._after_run(State.FAILED)

    def _stand_down(self, **_: object) -> None:
        """The console dialog configured the guest first: nothing to do but tidy up."""
        wiped = self.actions.wipe_secrets()
        self.last_result = BootStatus.DONE
        log.info("first boot already configured (console dialog); standing down; wiped %d "
                 "secret(s)", wiped)
        self.late = self.reconfigure = False
        self.state = State.STOOD_DOWN

    def _seal(self) -> None:
        if self.state == State.QUIET:
            self.actions.cancel_timer()
        log.info("sealed: first boot is for the clones; this boot runs nothing more")
        self.state, self.reconfigure = State.SEALED, False

    def _other_run_ended(self, **_: object) -> None:
        self._after_run(self.resume if self.resume in State.IDLE else State.WAITING)

    def _after_run(self, outcome: str) -> None:
        late, self.late = self.late, False
        wanted = self._wanted()
        if late and wanted:
            self._quiet()
        elif self.resume in (State.QUIET, State.PENDING) and wanted:
            self.state = self.resume
        else:
            if self.resume == State.QUIET:
                self.actions.cancel_timer()
            self.reconfigure = False
            self.state = outcome


_Transition = Callable[..., None]


def _rows() -> Dict[Tuple[str, str], _Transition]:
    """The module docstring's table; a missing (state, event) pair changes nothing."""
    m = FirstBootMachine
    rows: Dict[Tuple[str, str], _Transition] = {
        (State.WAITING, Event.START): m._start_at_boot,
        (State.QUIET, Event.START): m._start_at_boot,
        (State.QUIET, Event.QUIET_OVER): m._quiet_over,
        (State.BUSY, Event.QUIET_OVER): m._quiet_over_while_busy,
        (State.BUSY, Event.RECONFIG): m._reconfig_while_busy,
        (State.BUSY, Event.FLAG_NO): m._configured_elsewhere_while_busy,
        (State.BUSY, Event.STORED): m._stored,
        (State.BUSY, Event.TRIGGER): m._note_late_trigger,
        (State.RUNNING, Event.RUN_OK): m._done,
        (State.RUNNING, Event.RUN_FAILED): m._failed,
        (State.RUNNING, Event.RUN_ALREADY): m._stand_down,
    }
    for state in State.IDLE:
        rows[(state, Event.STORED)] = m._stored
        rows[(state, Event.TRIGGER)] = m._trigger_when_idle
    for state in State.IDLE + (State.QUIET, State.PENDING):
        rows[(state, Event.SCRIPT)] = m._script
        rows[(state, Event.RECONFIG)] = m._reconfig
    for state in (State.WAITING, State.FAILED, State.QUIET, State.PENDING):
        rows[(state, Event.FLAG_NO)] = m._configured_elsewhere
    for state in (State.QUIET, State.PENDING):
        rows[(state, Event.STORED)] = m._restart_quiet
        rows[(state, Event.TRIGGER)] = m._restart_quiet
    for event in (Event.RUN_OK, Event.RUN_FAILED, Event.RUN_ALREADY):
        rows[(State.BUSY, event)] = m._other_run_ended
    for state in State.IDLE + (State.QUIET, State.PENDING):
        rows[(state, Event.SEALED)] = m._seal
    return rows


#: (state, event) -> transition; see the module docstring.
TRANSITIONS = _rows()
