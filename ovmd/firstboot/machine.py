"""First boot on the daemon's side: one state machine decides when to run ``configure``.

The host sends its parameters as messages, the trigger key (the root password) last; a
quiet period, restarted by every message, lets a burst finish before the first-boot run
starts (docs/protocol.md). The daemon feeds :class:`FirstBootMachine` events and the
machine asks the daemon to act through :class:`FirstBootActions`; nothing else keeps or
changes first-boot state.

States:

    WAITING     no first-boot run is wanted: the trigger has not arrived (or the quiet
                period found INITIAL_CONFIG not yes, or the trigger gone)
    QUIET       the trigger is cached; the quiet timer runs
    PENDING     the trigger is cached, but the quiet period was cancelled (``ovmd -s
                configure``) or ended while another run held the runner: the next
                stored message restarts it
    RUNNING     the first-boot run (``ovm-template-config --initial-config configure``)
    BUSY        another run (``ovmd -s TARGET``) holds the runner
    DONE        the last first-boot run succeeded (INITIAL_CONFIG=no)
    FAILED      the last first-boot run failed (INITIAL_CONFIG stays yes)
    STOOD_DOWN  the runner found the guest configured already (the console dialog won,
                exit ``EXIT_ALREADY_CONFIGURED``): nothing was run

WAITING, DONE, FAILED and STOOD_DOWN are the idle states: they react alike and differ
only in :attr:`FirstBootMachine.last_result`, which ``ovmd --status`` reports. While a
run is going the machine keeps ``resume``, the state it left to start the run (QUIET
becomes PENDING when its timer is cancelled or fires meanwhile), and ``late``, set when
the trigger arrives during the run.

Events: START the daemon has started (after consuming the messages waiting in XenStore);
STORED host messages were stored, the trigger not among them; TRIGGER host messages were
stored, the trigger among them; QUIET_OVER the quiet timer fired; SCRIPT ``ovmd -s
TARGET`` starts a run (the daemon refuses one while a run is going); RUN_OK, RUN_FAILED,
RUN_ALREADY the run ended (RUN_ALREADY: a first-boot run exited
``EXIT_ALREADY_CONFIGURED``).

Transitions. "yes": INITIAL_CONFIG=yes, read when the event is handled; "cached": the
trigger is in the cache; ``[...]``: what the daemon is asked to do. A pair not listed
changes nothing.

    state        event        guard             new state      actions
    -----------  -----------  ----------------  -------------  --------------------------
    WAITING      START        yes and cached    QUIET          [set timer]
    idle         TRIGGER      yes               QUIET          [set timer]
    idle         SCRIPT                         RUNNING (a first-boot run) or BUSY;
                                                resume = this state
    QUIET        START        yes and cached    QUIET          [set timer]
                              otherwise         WAITING        [cancel timer]
    QUIET        STORED       yes               QUIET          [set timer]
    QUIET        TRIGGER      yes               QUIET          [set timer]
    QUIET        QUIET_OVER   yes and cached    RUNNING        [start run]; resume WAITING
                              otherwise         WAITING
    QUIET        SCRIPT       configure         as idle, resume PENDING  [cancel timer]
                              another target    BUSY, resume QUIET (the timer runs on)
    PENDING      STORED       yes               QUIET          [set timer]
    PENDING      TRIGGER      yes               QUIET          [set timer]
    PENDING      SCRIPT                         as idle, resume PENDING
    RUNNING      TRIGGER      yes               RUNNING        late
    RUNNING      RUN_OK                         after(DONE)    [mark configured, keep
                                                               and send the returned
                                                               params, wipe secrets, send
                                                               status done]
    RUNNING      RUN_FAILED                     after(FAILED)  [send "failed: <reason>"]
    RUNNING      RUN_ALREADY  resume PENDING    PENDING        [wipe secrets]; late dropped
                              otherwise         STOOD_DOWN     [wipe secrets]; late dropped
    BUSY         TRIGGER      yes               BUSY           late
    BUSY         QUIET_OVER                     BUSY           resume QUIET becomes PENDING
    BUSY         RUN_*                          after(resume)

    after(X): late and yes: QUIET [set timer]; else resume if it is QUIET or PENDING;
    else X.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, Optional, Protocol, Sequence, Tuple

from ..status import BootStatus
from .contract import STATUS_DONE, STATUS_KEY, TRIGGER_KEY, failed_status

log = logging.getLogger(__name__)

#: The target a first-boot run runs.
CONFIGURE = "configure"


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
    IDLE = (WAITING, DONE, FAILED, STOOD_DOWN)
    ALL = (WAITING, QUIET, PENDING, RUNNING, BUSY, DONE, FAILED, STOOD_DOWN)


class Event:
    """The events the daemon feeds :class:`FirstBootMachine`."""

    START = "start"
    STORED = "stored"
    TRIGGER = "trigger"
    QUIET_OVER = "quiet-over"
    SCRIPT = "script"
    RUN_OK = "run-ok"
    RUN_FAILED = "run-failed"
    RUN_ALREADY = "run-already-configured"
    ALL = (START, STORED, TRIGGER, QUIET_OVER, SCRIPT, RUN_OK, RUN_FAILED, RUN_ALREADY)


class FirstBootActions(Protocol):
    """What the machine asks of the daemon; the daemon gives it one object doing this."""

    def initial_config_enabled(self) -> bool:
        """INITIAL_CONFIG=yes now."""

    def trigger_cached(self) -> bool:
        """The trigger key is in the parameter cache."""

    def start_run(self) -> None:
        """Start ``ovm-template-config --initial-config configure`` with the cached params;
        may report the run's end (:meth:`FirstBootMachine.run_ended`) before returning."""

    def set_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        """(Re)start the quiet timer: ``callback`` after ``seconds``."""

    def cancel_timer(self) -> None:
        """Cancel the quiet timer, if it runs."""

    def mark_configured(self) -> None:
        """Set INITIAL_CONFIG=no."""

    def keep_results(self, params: Sequence[Tuple[str, str]]) -> None:
        """Store the params the run returned in the cache and send them to the host."""

    def wipe_secrets(self) -> int:
        """Forget every cached secret; how many there were."""

    def send(self, key: str, value: str) -> None:
        """Send a message to the host (or queue it until XenStore is back)."""


class FirstBootMachine:
    """First boot's state machine; the module docstring is its table.

    The daemon calls :meth:`started`, :meth:`messages_stored`, :meth:`script_starting`
    and :meth:`run_ended`; the quiet timer calls :meth:`quiet_period_over`.
    """

    def __init__(self, actions: FirstBootActions, quiet_period: float) -> None:
        self.actions = actions
        self.quiet_period = quiet_period
        self.state = State.WAITING
        #: while a run is going: the state to return to when it ends
        self.resume = State.WAITING
        #: while a run is going: the trigger was stored meanwhile
        self.late = False
        #: the outcome of the last first-boot run, as ``ovmd --status`` names it
        self.last_result: Optional[str] = None

    # --- what the daemon calls ------------------------------------------------------
    def started(self) -> None:
        """The daemon has started and consumed the messages waiting in XenStore."""
        self._handle(Event.START)

    def messages_stored(self, keys: Iterable[str]) -> None:
        """A batch of host messages was stored durably (``keys``: its parameters)."""
        self._handle(Event.TRIGGER if TRIGGER_KEY in set(keys) else Event.STORED)

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
        it failed (redacted); ``returned`` the public params a first-boot run returned."""
        self._handle(event, reason=reason, returned=returned)

    @property
    def armed(self) -> bool:
        """A first-boot run is wanted and not started yet."""
        pending = (State.QUIET, State.PENDING)
        return self.state in pending or (self.running and self.resume in pending)

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

    def _restart_quiet(self) -> None:
        if self._enabled():
            self._quiet()

    def _note_late_trigger(self) -> None:
        if self._enabled():
            self.late = True

    def _quiet_over(self) -> None:
        if not (self._enabled() and self.actions.trigger_cached()):
            self.state = State.WAITING
            return
        log.info("quiet period over: running first-boot configuration")
        self._enter_run(State.RUNNING, State.WAITING)
        self.actions.start_run()

    def _quiet_over_while_busy(self) -> None:
        if self.resume == State.QUIET:
            self.resume = State.PENDING

    def _script(self, target: str, first_boot: bool) -> None:
        resume = self.state
        if resume == State.QUIET and target == CONFIGURE:
            self.actions.cancel_timer()
            resume = State.PENDING
        self._enter_run(State.RUNNING if first_boot else State.BUSY, resume)

    def _enter_run(self, state: str, resume: str) -> None:
        self.state, self.resume, self.late = state, resume, False

    def _done(self, returned: Sequence[Tuple[str, str]] = (), **_: object) -> None:
        self.actions.mark_configured()
        self.last_result = BootStatus.DONE
        self.actions.keep_results(returned)
        wiped = self.actions.wipe_secrets()
        log.info("first-boot configuration done; INITIAL_CONFIG=no; wiped %d secret(s)", wiped)
        self.actions.send(STATUS_KEY, STATUS_DONE)
        self._after_run(State.DONE)

    def _failed(self, reason: str = "", **_: object) -> None:
        self.last_result = BootStatus.FAILED
        self.actions.send(STATUS_KEY, failed_status(reason))
        log.error("first-boot configuration failed; INITIAL_CONFIG stays yes: send the "
                  "root password again to retry")
        self._after_run(State.FAILED)

    def _stand_down(self, **_: object) -> None:
        """The console dialog configured the guest first: nothing to do but tidy up."""
        wiped = self.actions.wipe_secrets()
        self.last_result = BootStatus.DONE
        log.info("first boot already configured (console dialog); standing down; wiped %d "
                 "secret(s)", wiped)
        self.late = False
        self.state = State.PENDING if self.resume == State.PENDING else State.STOOD_DOWN

    def _other_run_ended(self, **_: object) -> None:
        self._after_run(self.resume)

    def _after_run(self, outcome: str) -> None:
        late, self.late = self.late, False
        if late and self._enabled():
            self._quiet()
        elif self.resume in (State.QUIET, State.PENDING):
            self.state = self.resume
        else:
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
        (State.RUNNING, Event.RUN_OK): m._done,
        (State.RUNNING, Event.RUN_FAILED): m._failed,
        (State.RUNNING, Event.RUN_ALREADY): m._stand_down,
    }
    for state in State.IDLE:
        rows[(state, Event.TRIGGER)] = m._restart_quiet
    for state in State.IDLE + (State.QUIET, State.PENDING):
        rows[(state, Event.SCRIPT)] = m._script
    for state in (State.QUIET, State.PENDING):
        rows[(state, Event.STORED)] = m._restart_quiet
        rows[(state, Event.TRIGGER)] = m._restart_quiet
    for state in (State.RUNNING, State.BUSY):
        rows[(state, Event.TRIGGER)] = m._note_late_trigger
    for event in (Event.RUN_OK, Event.RUN_FAILED, Event.RUN_ALREADY):
        rows[(State.BUSY, event)] = m._other_run_ended
    return rows


#: (state, event) -> transition; see the module docstring.
TRANSITIONS = _rows()
