"""The first-boot state machine, row by row of its table (ovmd/firstboot/machine.py).

The machine is a pure object: it acts only through the actions object it is given. The
``Recorder`` below is that object for a test: it records what the machine asked for, in
order, and holds the flag and the cache as two booleans (``mark_configured`` turns the
flag to no, as the real one does). This tests the table itself; the daemon that feeds
the machine is tested end to end in tests/ovmd/daemon/test_firstboot.py.
"""
from __future__ import annotations

from typing import Callable, List, NamedTuple, Optional, Tuple

import pytest

from ovmd.firstboot.contract import STATUS_DONE, STATUS_KEY, TRIGGER_KEY, failed_status
from ovmd.firstboot.machine import TRANSITIONS, Event, FirstBootMachine, State
from ovmd.status import BootStatus

QUIET = 2.5
RETURNED = (("com.example.generated", "made-by-module"),)
REASON = "module fail failed: disk on fire"

SET_TIMER = ("set_timer", QUIET)
CANCEL_TIMER = ("cancel_timer",)
START_RUN = ("start_run",)
WIPE = ("wipe_secrets",)
DONE_ACTIONS = (("mark_configured",), ("keep_results", RETURNED), WIPE,
                ("send", STATUS_KEY, STATUS_DONE))
FAILED_ACTIONS = (("send", STATUS_KEY, failed_status(REASON)),)


class Recorder:
    """The daemon's side, recorded: each request of the machine in order."""

    def __init__(self, enabled: bool = True, cached: bool = True) -> None:
        self.enabled = enabled
        self.cached = cached
        self.calls: List[Tuple[object, ...]] = []
        self.timer: Optional[Callable[[], None]] = None
        self.on_start_run: Optional[Callable[[], None]] = None

    def initial_config_enabled(self) -> bool:
        return self.enabled

    def trigger_cached(self) -> bool:
        return self.cached

    def start_run(self) -> None:
        self.calls.append(START_RUN)
        if self.on_start_run is not None:
            self.on_start_run()

    def set_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        self.calls.append(("set_timer", seconds))
        self.timer = callback

    def cancel_timer(self) -> None:
        self.calls.append(CANCEL_TIMER)
        self.timer = None

    def mark_configured(self) -> None:
        self.calls.append(("mark_configured",))
        self.enabled = False

    def keep_results(self, params) -> None:
        self.calls.append(("keep_results", tuple(params)))

    def wipe_secrets(self) -> int:
        self.calls.append(WIPE)
        return 2

    def send(self, key: str, value: str) -> None:
        self.calls.append(("send", key, value))


def fire(machine: FirstBootMachine, event: str, target: str = "configure") -> None:
    """Deliver ``event`` as the daemon does."""
    if event == Event.START:
        machine.started()
    elif event == Event.STORED:
        machine.messages_stored(["com.example.hostname"])
    elif event == Event.TRIGGER:
        machine.messages_stored(["com.example.hostname", TRIGGER_KEY])
    elif event == Event.QUIET_OVER:
        machine.quiet_period_over()
    elif event == Event.SCRIPT:
        machine.script_starting(target)
    elif event == Event.RUN_OK:
        machine.run_ended(Event.RUN_OK, returned=RETURNED)
    else:
        machine.run_ended(event, reason=REASON)


class Row(NamedTuple):
    state: str
    event: str
    new_state: str
    actions: Tuple[Tuple[object, ...], ...] = ()
    yes: bool = True            # INITIAL_CONFIG=yes
    cached: bool = True         # the trigger is in the cache
    resume: str = State.WAITING
    late: bool = False
    target: str = "configure"   # SCRIPT only
    new_resume: Optional[str] = None   # checked while a run is going
    new_late: Optional[bool] = None
    last_result: Optional[str] = None  # checked when given

    def __str__(self) -> str:
        guards = [] if self.yes else ["no"]
        guards += [] if self.cached else ["not-cached"]
        guards += [] if self.resume == State.WAITING else ["resume=" + self.resume]
        guards += ["late"] if self.late else []
        guards += [self.target] if self.event == Event.SCRIPT else []
        return "-".join([self.state, self.event] + guards)


def _idle_rows(state: str) -> List[Row]:
    rows = [
        Row(state, Event.STORED, state),
        Row(state, Event.TRIGGER, State.QUIET, (SET_TIMER,)),
        Row(state, Event.TRIGGER, state, yes=False),
        Row(state, Event.QUIET_OVER, state),
        Row(state, Event.SCRIPT, State.RUNNING, new_resume=state),
        Row(state, Event.SCRIPT, State.BUSY, yes=False, new_resume=state),
        Row(state, Event.SCRIPT, State.BUSY, target="cleanup", new_resume=state),
    ]
    rows += [Row(state, event, state)
             for event in (Event.RUN_OK, Event.RUN_FAILED, Event.RUN_ALREADY)]
    if state != State.WAITING:
        rows.append(Row(state, Event.START, state))  # the daemon starts in WAITING
    return rows


ROWS = [
    Row(State.WAITING, Event.START, State.QUIET, (SET_TIMER,)),
    Row(State.WAITING, Event.START, State.WAITING, yes=False),
    Row(State.WAITING, Event.START, State.WAITING, cached=False),
] + [row for state in State.IDLE for row in _idle_rows(state)] + [
    # QUIET: every message restarts the period; its end starts the run
    Row(State.QUIET, Event.START, State.QUIET, (SET_TIMER,)),
    Row(State.QUIET, Event.START, State.WAITING, (CANCEL_TIMER,), yes=False),
    Row(State.QUIET, Event.START, State.WAITING, (CANCEL_TIMER,), cached=False),
    Row(State.QUIET, Event.STORED, State.QUIET, (SET_TIMER,)),
    Row(State.QUIET, Event.STORED, State.QUIET, yes=False),
    Row(State.QUIET, Event.TRIGGER, State.QUIET, (SET_TIMER,)),
    Row(State.QUIET, Event.TRIGGER, State.QUIET, yes=False),
    Row(State.QUIET, Event.QUIET_OVER, State.RUNNING, (START_RUN,), new_resume=State.WAITING,
        new_late=False),
    Row(State.QUIET, Event.QUIET_OVER, State.WAITING, yes=False),
    Row(State.QUIET, Event.QUIET_OVER, State.WAITING, cached=False),
    Row(State.QUIET, Event.SCRIPT, State.RUNNING, (CANCEL_TIMER,), new_resume=State.PENDING),
    Row(State.QUIET, Event.SCRIPT, State.BUSY, (CANCEL_TIMER,), yes=False,
        new_resume=State.PENDING),
    Row(State.QUIET, Event.SCRIPT, State.BUSY, target="cleanup", new_resume=State.QUIET),
    Row(State.QUIET, Event.RUN_OK, State.QUIET),
    Row(State.QUIET, Event.RUN_FAILED, State.QUIET),
    Row(State.QUIET, Event.RUN_ALREADY, State.QUIET),
    # PENDING: wanted, no timer; the next message restarts the quiet period
    Row(State.PENDING, Event.START, State.PENDING),
    Row(State.PENDING, Event.STORED, State.QUIET, (SET_TIMER,)),
    Row(State.PENDING, Event.STORED, State.PENDING, yes=False),
    Row(State.PENDING, Event.TRIGGER, State.QUIET, (SET_TIMER,)),
    Row(State.PENDING, Event.TRIGGER, State.PENDING, yes=False),
    Row(State.PENDING, Event.QUIET_OVER, State.PENDING),
    Row(State.PENDING, Event.SCRIPT, State.RUNNING, new_resume=State.PENDING),
    Row(State.PENDING, Event.SCRIPT, State.BUSY, target="cleanup", new_resume=State.PENDING),
    Row(State.PENDING, Event.RUN_OK, State.PENDING),
    Row(State.PENDING, Event.RUN_FAILED, State.PENDING),
    Row(State.PENDING, Event.RUN_ALREADY, State.PENDING),
    # RUNNING: the first-boot run
    Row(State.RUNNING, Event.START, State.RUNNING),
    Row(State.RUNNING, Event.STORED, State.RUNNING, new_late=False),
    Row(State.RUNNING, Event.TRIGGER, State.RUNNING, new_late=True),
    Row(State.RUNNING, Event.TRIGGER, State.RUNNING, yes=False, new_late=False),
    Row(State.RUNNING, Event.QUIET_OVER, State.RUNNING),
    Row(State.RUNNING, Event.SCRIPT, State.RUNNING),
    Row(State.RUNNING, Event.RUN_OK, State.DONE, DONE_ACTIONS, last_result=BootStatus.DONE),
    Row(State.RUNNING, Event.RUN_OK, State.DONE, DONE_ACTIONS, late=True,
        last_result=BootStatus.DONE),  # configured: the flag is no, the late trigger moot
    Row(State.RUNNING, Event.RUN_OK, State.PENDING, DONE_ACTIONS, resume=State.PENDING,
        last_result=BootStatus.DONE),
    Row(State.RUNNING, Event.RUN_FAILED, State.FAILED, FAILED_ACTIONS,
        last_result=BootStatus.FAILED),
    Row(State.RUNNING, Event.RUN_FAILED, State.QUIET, FAILED_ACTIONS + (SET_TIMER,), late=True,
        last_result=BootStatus.FAILED),
    Row(State.RUNNING, Event.RUN_FAILED, State.PENDING, FAILED_ACTIONS, resume=State.PENDING,
        last_result=BootStatus.FAILED),
    Row(State.RUNNING, Event.RUN_ALREADY, State.STOOD_DOWN, (WIPE,),
        last_result=BootStatus.DONE),
    Row(State.RUNNING, Event.RUN_ALREADY, State.STOOD_DOWN, (WIPE,), late=True,
        last_result=BootStatus.DONE),
    Row(State.RUNNING, Event.RUN_ALREADY, State.PENDING, (WIPE,), resume=State.PENDING,
        last_result=BootStatus.DONE),
    # BUSY: another target holds the runner; first boot resumes when it ends
    Row(State.BUSY, Event.START, State.BUSY),
    Row(State.BUSY, Event.STORED, State.BUSY, new_late=False),
    Row(State.BUSY, Event.TRIGGER, State.BUSY, new_late=True),
    Row(State.BUSY, Event.TRIGGER, State.BUSY, yes=False, new_late=False),
    Row(State.BUSY, Event.QUIET_OVER, State.BUSY, resume=State.QUIET, new_resume=State.PENDING),
    Row(State.BUSY, Event.QUIET_OVER, State.BUSY, new_resume=State.WAITING),
    Row(State.BUSY, Event.SCRIPT, State.BUSY),
    Row(State.BUSY, Event.RUN_OK, State.WAITING),
    Row(State.BUSY, Event.RUN_OK, State.FAILED, resume=State.FAILED),
    Row(State.BUSY, Event.RUN_OK, State.QUIET, resume=State.QUIET),  # its timer still runs
    Row(State.BUSY, Event.RUN_OK, State.PENDING, resume=State.PENDING),
    Row(State.BUSY, Event.RUN_OK, State.QUIET, (SET_TIMER,), late=True),
    Row(State.BUSY, Event.RUN_OK, State.DONE, late=True, yes=False, resume=State.DONE),
    Row(State.BUSY, Event.RUN_FAILED, State.WAITING),
    Row(State.BUSY, Event.RUN_FAILED, State.QUIET, (SET_TIMER,), late=True),
    Row(State.BUSY, Event.RUN_ALREADY, State.STOOD_DOWN, resume=State.STOOD_DOWN),
]


def machine_in(row: Row) -> Tuple[FirstBootMachine, Recorder]:
    actions = Recorder(enabled=row.yes, cached=row.cached)
    machine = FirstBootMachine(actions, QUIET)
    machine.state, machine.resume, machine.late = row.state, row.resume, row.late
    return machine, actions


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_transition(row):
    machine, actions = machine_in(row)
    fire(machine, row.event, row.target)
    assert machine.state == row.new_state
    assert tuple(actions.calls) == row.actions
    if row.new_resume is not None:
        assert machine.resume == row.new_resume
    if row.new_late is not None:
        assert machine.late is row.new_late
    if row.last_result is not None:
        assert machine.last_result == row.last_result
    if machine.state not in (State.RUNNING, State.BUSY):
        assert machine.late is False  # a late trigger lives only as long as its run


def test_the_rows_cover_every_state_and_event():
    covered = {(row.state, row.event) for row in ROWS}
    missing = [(s, e) for s in State.ALL for e in Event.ALL if (s, e) not in covered]
    assert missing == []


def test_every_transition_of_the_table_has_a_row():
    covered = {(row.state, row.event) for row in ROWS if row.actions or row.new_state
               != row.state or row.new_late or row.new_resume not in (None, row.resume)}
    assert set(TRANSITIONS) - covered == set()


class TestScenarios:
    """Whole first boots, event after event, as the daemon delivers them."""

    def test_a_burst_runs_once_after_its_last_message(self):
        actions = Recorder(cached=False)
        machine = FirstBootMachine(actions, QUIET)
        machine.started()
        assert machine.state == State.WAITING and actions.calls == []
        actions.cached = True
        machine.messages_stored(["com.example.a", TRIGGER_KEY])
        machine.messages_stored(["com.example.b"])
        machine.messages_stored(["com.example.c"])
        assert machine.state == State.QUIET and START_RUN not in actions.calls
        machine.quiet_period_over()
        # the run starts only after the last message restarted the quiet period
        assert actions.calls == [SET_TIMER, SET_TIMER, SET_TIMER, START_RUN]
        machine.run_ended(Event.RUN_OK, returned=RETURNED)
        assert machine.state == State.DONE and machine.last_result == BootStatus.DONE
        assert actions.calls[-4:] == list(DONE_ACTIONS)

    def test_daemon_start_with_the_trigger_cached_runs_it(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.started()
        assert machine.state == State.QUIET and machine.armed
        actions.timer()
        assert machine.state == State.RUNNING and actions.calls == [SET_TIMER, START_RUN]

    def test_failure_then_a_new_trigger_retries(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.messages_stored([TRIGGER_KEY])
        machine.quiet_period_over()
        machine.run_ended(Event.RUN_FAILED, reason=REASON)
        assert machine.state == State.FAILED and not machine.armed
        machine.messages_stored(["com.example.later"])  # not the trigger: no retry
        assert machine.state == State.FAILED
        machine.messages_stored([TRIGGER_KEY])
        assert machine.state == State.QUIET
        assert machine.last_result == BootStatus.FAILED  # until the retry ends
        machine.quiet_period_over()
        machine.run_ended(Event.RUN_OK)
        assert machine.last_result == BootStatus.DONE

    def test_a_late_trigger_during_the_run_reruns_after_a_failure(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.messages_stored([TRIGGER_KEY])
        machine.quiet_period_over()
        machine.messages_stored([TRIGGER_KEY])
        assert machine.state == State.RUNNING and machine.late
        machine.run_ended(Event.RUN_FAILED, reason=REASON)
        assert machine.state == State.QUIET and actions.calls[-1] == SET_TIMER

    def test_a_run_that_cannot_start_ends_inside_start_run(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        actions.on_start_run = lambda: machine.run_ended(Event.RUN_FAILED, reason=REASON)
        machine.messages_stored([TRIGGER_KEY])
        machine.quiet_period_over()
        assert machine.state == State.FAILED
        assert actions.calls == [SET_TIMER, START_RUN] + list(FAILED_ACTIONS)

    def test_the_console_dialog_won(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.messages_stored([TRIGGER_KEY])
        machine.quiet_period_over()
        machine.run_ended(Event.RUN_ALREADY)
        assert machine.state == State.STOOD_DOWN and machine.last_result == BootStatus.DONE
        assert STATUS_KEY not in [call[1] for call in actions.calls if call[0] == "send"]

    def test_script_configure_is_a_first_boot_run_only_while_the_flag_is_yes(self):
        assert FirstBootMachine(Recorder(enabled=True), QUIET).script_starting("configure")
        assert not FirstBootMachine(Recorder(enabled=False), QUIET).script_starting("configure")
        assert not FirstBootMachine(Recorder(enabled=True), QUIET).script_starting("cleanup")

    def test_armed_while_a_run_is_wanted(self):
        machine = FirstBootMachine(Recorder(), QUIET)
        assert not machine.armed
        machine.messages_stored([TRIGGER_KEY])
        assert machine.armed
        machine.script_starting("cleanup")  # the quiet period still runs meanwhile
        assert machine.state == State.BUSY and machine.armed
        machine.run_ended(Event.RUN_OK)
        assert machine.state == State.QUIET
