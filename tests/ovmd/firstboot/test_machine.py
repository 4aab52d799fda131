"""The first-boot state machine, row by row of its table (ovmd/firstboot/machine.py).

The machine is a pure object: it acts only through the actions object it is given. The
``Recorder`` below is that object for a test: it records what the machine asked for, in
order, and holds the flag and the cache as two booleans (``mark_configured`` turns the
flag to no, as the real one does). This tests the table itself; the daemon that feeds
the machine is tested end to end in tests/ovmd/daemon/test_firstboot.py.
"""
from __future__ import annotations

import logging
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
FIRST_BOOT_RUN = ("start_run", True)
RECONFIGURE_RUN = ("start_run", False)
WIPE = ("wipe_secrets",)
MARK = ("mark_configured",)
IDENTITY = ("record_identity",)
KEEP = ("keep_results", RETURNED)
DONE_ACTIONS = (KEEP, WIPE, ("send", STATUS_KEY, STATUS_DONE))
FAILED_ACTIONS = (("send", STATUS_KEY, failed_status(REASON)),)


class Recorder:
    """The daemon's side, recorded: each request of the machine in order."""

    def __init__(self, enabled: bool = True, cached: bool = True, newer: bool = False) -> None:
        self.enabled = enabled
        self.cached = cached
        self.newer = newer
        self.calls: List[Tuple[object, ...]] = []
        self.timer: Optional[Callable[[], None]] = None
        self.on_start_run: Optional[Callable[[], None]] = None

    def initial_config_enabled(self) -> bool:
        return self.enabled

    def trigger_cached(self) -> bool:
        return self.cached

    def params_newer(self) -> bool:
        return self.newer

    def start_run(self, first_boot: bool) -> None:
        self.calls.append(("start_run", first_boot))
        if self.on_start_run is not None:
            self.on_start_run()

    def set_timer(self, seconds: float, callback: Callable[[], None]) -> None:
        self.calls.append(("set_timer", seconds))
        self.timer = callback

    def cancel_timer(self) -> None:
        self.calls.append(CANCEL_TIMER)
        self.timer = None

    def mark_configured(self) -> None:
        self.calls.append(MARK)
        self.enabled = False

    def record_identity(self) -> None:
        self.calls.append(IDENTITY)

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
    elif event == Event.RECONFIG:
        machine.reconfig_requested()
    elif event == Event.FLAG_NO:
        machine.flag_turned_no()
    elif event == Event.QUIET_OVER:
        machine.quiet_period_over()
    elif event == Event.SCRIPT:
        machine.script_starting(target)
    elif event == Event.SEALED:
        machine.sealed_now()
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
    newer: bool = False         # the cache holds params the ended run was not given
    reconfigure: bool = False   # a configure run is wanted although INITIAL_CONFIG=no
    resume: str = State.WAITING
    late: bool = False
    first_boot: bool = True     # the run going is a first-boot run
    target: str = "configure"   # SCRIPT only
    new_resume: Optional[str] = None   # checked while a run is going
    new_late: Optional[bool] = None
    new_reconfigure: Optional[bool] = None
    last_result: Optional[str] = None  # checked when given
    logged: str = ""            # what the log says (to the operator), when given

    def __str__(self) -> str:
        guards = [] if self.yes else ["no"]
        guards += [] if self.cached else ["not-cached"]
        guards += ["newer"] if self.newer else []
        guards += ["reconfigure"] if self.reconfigure else []
        guards += [] if self.resume == State.WAITING else ["resume=" + self.resume]
        guards += ["late"] if self.late else []
        guards += [] if self.first_boot or self.state != State.RUNNING else ["reconfiguring"]
        guards += [self.target] if self.event == Event.SCRIPT else []
        return "-".join([self.state, self.event] + guards)


#: What the log says of params that a configured guest stores and does not apply.
NOT_APPLIED = "not applied; to apply them the host sends VMAPIEvent reconfig (8)"


def _idle_rows(state: str) -> List[Row]:
    rows = [
        Row(state, Event.STORED, state),
        Row(state, Event.STORED, state, yes=False, logged=NOT_APPLIED),
        Row(state, Event.TRIGGER, State.QUIET, (SET_TIMER,)),
        Row(state, Event.TRIGGER, state, yes=False, logged=NOT_APPLIED),
        Row(state, Event.RECONFIG, State.QUIET, (SET_TIMER,), yes=False, new_reconfigure=True),
        Row(state, Event.RECONFIG, State.QUIET, (SET_TIMER,), new_reconfigure=False),
        Row(state, Event.RECONFIG, state, cached=False,
            logged="first boot still waits for " + TRIGGER_KEY),
        Row(state, Event.QUIET_OVER, state),
        Row(state, Event.SCRIPT, State.RUNNING, new_resume=state),
        Row(state, Event.SCRIPT, State.BUSY, yes=False, new_resume=state),
        Row(state, Event.SCRIPT, State.BUSY, target="cleanup", new_resume=state),
    ]
    if state in (State.WAITING, State.FAILED):  # the console dialog configured the guest
        rows.append(Row(state, Event.FLAG_NO, State.STOOD_DOWN, (WIPE,), yes=False))
    else:
        rows.append(Row(state, Event.FLAG_NO, state, yes=False))
    rows += [Row(state, event, state)
             for event in (Event.RUN_OK, Event.RUN_FAILED, Event.RUN_ALREADY)]
    rows.append(Row(state, Event.SEALED, State.SEALED))
    rows.append(Row(state, Event.SEALED, State.SEALED, yes=False))
    if state != State.WAITING:
        rows.append(Row(state, Event.START, state))  # the daemon starts in WAITING
    return rows


def _running_rows(first_boot: bool) -> List[Row]:
    """A run of ours ends: ``done`` or ``failed`` only when it had the newest params."""
    yes = first_boot  # a first-boot run starts with the flag yes, a reconfiguration no
    mark = ((MARK,) if first_boot else ()) + (IDENTITY,)  # the VM it was configured as
    run = dict(yes=yes, first_boot=first_boot)
    return [
        Row(State.RUNNING, Event.RUN_OK, State.DONE, mark + DONE_ACTIONS,
            last_result=BootStatus.DONE, **run),
        # the params changed meanwhile: configure again, the host is told nothing yet
        Row(State.RUNNING, Event.RUN_OK, State.QUIET, mark + (KEEP, SET_TIMER), newer=True,
            new_reconfigure=True, last_result=None, **run),
        Row(State.RUNNING, Event.RUN_OK, State.DONE, mark + DONE_ACTIONS, resume=State.PENDING,
            last_result=BootStatus.DONE, **run),  # configured: nothing is pending any more
        Row(State.RUNNING, Event.RUN_FAILED, State.FAILED, FAILED_ACTIONS,
            last_result=BootStatus.FAILED, **run),
        Row(State.RUNNING, Event.RUN_FAILED, State.QUIET, (SET_TIMER,), newer=True,
            new_reconfigure=not yes, last_result=None, **run),
        Row(State.RUNNING, Event.RUN_ALREADY, State.STOOD_DOWN, (WIPE,),
            last_result=BootStatus.DONE, **run),
        Row(State.RUNNING, Event.RUN_ALREADY, State.STOOD_DOWN, (WIPE,), resume=State.PENDING,
            last_result=BootStatus.DONE, **run),
    ]


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
    Row(State.QUIET, Event.STORED, State.QUIET, (SET_TIMER,), yes=False, reconfigure=True),
    Row(State.QUIET, Event.STORED, State.QUIET, yes=False),
    Row(State.QUIET, Event.TRIGGER, State.QUIET, (SET_TIMER,)),
    Row(State.QUIET, Event.TRIGGER, State.QUIET, (SET_TIMER,), yes=False, reconfigure=True),
    Row(State.QUIET, Event.TRIGGER, State.QUIET, yes=False),
    Row(State.QUIET, Event.RECONFIG, State.QUIET, (SET_TIMER,), yes=False,
        new_reconfigure=True),
    Row(State.QUIET, Event.RECONFIG, State.QUIET, (SET_TIMER,)),
    Row(State.QUIET, Event.FLAG_NO, State.STOOD_DOWN, (CANCEL_TIMER, WIPE), yes=False),
    Row(State.QUIET, Event.QUIET_OVER, State.RUNNING, (FIRST_BOOT_RUN,),
        new_resume=State.WAITING, new_late=False),
    Row(State.QUIET, Event.QUIET_OVER, State.RUNNING, (RECONFIGURE_RUN,), yes=False,
        reconfigure=True, new_resume=State.WAITING, new_reconfigure=False),
    Row(State.QUIET, Event.QUIET_OVER, State.WAITING, yes=False),
    Row(State.QUIET, Event.QUIET_OVER, State.WAITING, cached=False),
    Row(State.QUIET, Event.SCRIPT, State.RUNNING, (CANCEL_TIMER,), new_resume=State.PENDING),
    Row(State.QUIET, Event.SCRIPT, State.BUSY, (CANCEL_TIMER,), yes=False, reconfigure=True,
        new_resume=State.PENDING, new_reconfigure=False),  # the full run applies it all
    Row(State.QUIET, Event.SCRIPT, State.BUSY, target="cleanup", new_resume=State.QUIET),
    Row(State.QUIET, Event.RUN_OK, State.QUIET),
    Row(State.QUIET, Event.RUN_FAILED, State.QUIET),
    Row(State.QUIET, Event.RUN_ALREADY, State.QUIET),
    Row(State.QUIET, Event.SEALED, State.SEALED, (CANCEL_TIMER,)),
    Row(State.QUIET, Event.SEALED, State.SEALED, (CANCEL_TIMER,), yes=False, reconfigure=True,
        new_reconfigure=False),
    # PENDING: wanted, no timer; the next message restarts the quiet period
    Row(State.PENDING, Event.START, State.PENDING),
    Row(State.PENDING, Event.STORED, State.QUIET, (SET_TIMER,)),
    Row(State.PENDING, Event.STORED, State.PENDING, yes=False),
    Row(State.PENDING, Event.TRIGGER, State.QUIET, (SET_TIMER,)),
    Row(State.PENDING, Event.TRIGGER, State.PENDING, yes=False),
    Row(State.PENDING, Event.RECONFIG, State.QUIET, (SET_TIMER,), yes=False,
        new_reconfigure=True),
    Row(State.PENDING, Event.RECONFIG, State.QUIET, (SET_TIMER,)),
    Row(State.PENDING, Event.FLAG_NO, State.STOOD_DOWN, (WIPE,), yes=False),
    Row(State.PENDING, Event.QUIET_OVER, State.PENDING),
    Row(State.PENDING, Event.SCRIPT, State.RUNNING, new_resume=State.PENDING),
    Row(State.PENDING, Event.SCRIPT, State.BUSY, target="cleanup", new_resume=State.PENDING),
    Row(State.PENDING, Event.RUN_OK, State.PENDING),
    Row(State.PENDING, Event.RUN_FAILED, State.PENDING),
    Row(State.PENDING, Event.RUN_ALREADY, State.PENDING),
    Row(State.PENDING, Event.SEALED, State.SEALED),
    # RUNNING: a run of ours; messages meanwhile are judged when it ends (newer)
    Row(State.RUNNING, Event.START, State.RUNNING),
    Row(State.RUNNING, Event.STORED, State.RUNNING, new_late=False),
    Row(State.RUNNING, Event.TRIGGER, State.RUNNING, new_late=False),
    Row(State.RUNNING, Event.RECONFIG, State.RUNNING, yes=False, first_boot=False,
        new_reconfigure=False),
    Row(State.RUNNING, Event.FLAG_NO, State.RUNNING, yes=False),  # the run set it
    Row(State.RUNNING, Event.QUIET_OVER, State.RUNNING),
    Row(State.RUNNING, Event.SCRIPT, State.RUNNING),
    Row(State.RUNNING, Event.SEALED, State.RUNNING),  # the daemon refuses to seal meanwhile
] + _running_rows(first_boot=True) + _running_rows(first_boot=False) + [
    # BUSY: another target holds the runner; first boot resumes when it ends
    Row(State.BUSY, Event.START, State.BUSY),
    Row(State.BUSY, Event.STORED, State.BUSY, new_late=False),
    Row(State.BUSY, Event.STORED, State.BUSY, yes=False, new_late=False, logged=NOT_APPLIED),
    Row(State.BUSY, Event.TRIGGER, State.BUSY, new_late=True),
    Row(State.BUSY, Event.TRIGGER, State.BUSY, yes=False, new_late=False,
        logged=NOT_APPLIED),
    Row(State.BUSY, Event.RECONFIG, State.BUSY, yes=False, new_late=True,
        new_reconfigure=True),
    Row(State.BUSY, Event.RECONFIG, State.BUSY, new_late=True, new_reconfigure=False),
    Row(State.BUSY, Event.FLAG_NO, State.BUSY, (CANCEL_TIMER, WIPE), yes=False,
        resume=State.QUIET, new_resume=State.STOOD_DOWN),
    Row(State.BUSY, Event.FLAG_NO, State.BUSY, (WIPE,), yes=False, resume=State.PENDING,
        new_resume=State.STOOD_DOWN),
    Row(State.BUSY, Event.FLAG_NO, State.BUSY, yes=False, new_resume=State.WAITING),
    Row(State.BUSY, Event.QUIET_OVER, State.BUSY, resume=State.QUIET, new_resume=State.PENDING),
    Row(State.BUSY, Event.QUIET_OVER, State.BUSY, new_resume=State.WAITING),
    Row(State.BUSY, Event.SCRIPT, State.BUSY),
    Row(State.BUSY, Event.RUN_OK, State.WAITING),
    Row(State.BUSY, Event.RUN_OK, State.FAILED, resume=State.FAILED),
    Row(State.BUSY, Event.RUN_OK, State.QUIET, resume=State.QUIET),  # its timer still runs
    Row(State.BUSY, Event.RUN_OK, State.PENDING, resume=State.PENDING),
    Row(State.BUSY, Event.RUN_OK, State.WAITING, (CANCEL_TIMER,), yes=False,
        resume=State.QUIET),  # nothing is wanted any more
    Row(State.BUSY, Event.RUN_OK, State.WAITING, yes=False, resume=State.PENDING),
    Row(State.BUSY, Event.RUN_OK, State.QUIET, (SET_TIMER,), late=True),
    Row(State.BUSY, Event.RUN_OK, State.QUIET, (SET_TIMER,), late=True, yes=False,
        reconfigure=True, resume=State.DONE),
    Row(State.BUSY, Event.RUN_OK, State.DONE, late=True, yes=False, resume=State.DONE),
    Row(State.BUSY, Event.RUN_FAILED, State.WAITING),
    Row(State.BUSY, Event.RUN_FAILED, State.QUIET, (SET_TIMER,), late=True),
    Row(State.BUSY, Event.RUN_ALREADY, State.STOOD_DOWN, resume=State.STOOD_DOWN),
    Row(State.BUSY, Event.SEALED, State.BUSY),  # the seal's cleanup run ends first
] + [
    # SEALED: INITIAL_CONFIG=yes is the clones'; nothing reaches this boot any more
    Row(State.SEALED, event, State.SEALED) for event in Event.ALL
] + [
    Row(State.SEALED, Event.TRIGGER, State.SEALED, cached=True),
    Row(State.SEALED, Event.RECONFIG, State.SEALED, yes=False),
]


def machine_in(row: Row) -> Tuple[FirstBootMachine, Recorder]:
    actions = Recorder(enabled=row.yes, cached=row.cached, newer=row.newer)
    machine = FirstBootMachine(actions, QUIET)
    machine.state, machine.resume, machine.late = row.state, row.resume, row.late
    machine.reconfigure, machine.first_boot = row.reconfigure, row.first_boot
    return machine, actions


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_transition(row, caplog):
    machine, actions = machine_in(row)
    before = machine.last_result
    with caplog.at_level(logging.INFO, logger="ovmd.firstboot.machine"):
        fire(machine, row.event, row.target)
    assert row.logged in caplog.text
    if not row.logged:
        assert NOT_APPLIED not in caplog.text
    assert machine.state == row.new_state
    assert tuple(actions.calls) == row.actions
    if row.new_resume is not None:
        assert machine.resume == row.new_resume
    if row.new_late is not None:
        assert machine.late is row.new_late
    if row.new_reconfigure is not None:
        assert machine.reconfigure is row.new_reconfigure
    if row.last_result is not None:
        assert machine.last_result == row.last_result
    elif row.event in (Event.RUN_OK, Event.RUN_FAILED) and row.state == State.RUNNING:
        assert machine.last_result == before  # nothing final yet: a run comes again
    if machine.state not in (State.RUNNING, State.BUSY):
        assert machine.late is False  # a late event lives only as long as its run
    if machine.state in State.IDLE:
        assert machine.reconfigure is False and not machine.armed


def test_the_rows_cover_every_state_and_event():
    covered = {(row.state, row.event) for row in ROWS}
    missing = [(s, e) for s in State.ALL for e in Event.ALL if (s, e) not in covered]
    assert missing == []


def test_every_transition_of_the_table_has_a_row():
    covered = {(row.state, row.event) for row in ROWS if row.actions or row.new_state
               != row.state or row.new_late or row.new_resume not in (None, row.resume)
               or row.new_reconfigure not in (None, row.reconfigure) or row.logged}
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
        assert machine.state == State.QUIET and FIRST_BOOT_RUN not in actions.calls
        machine.quiet_period_over()
        # the run starts only after the last message restarted the quiet period
        assert actions.calls == [SET_TIMER, SET_TIMER, SET_TIMER, FIRST_BOOT_RUN]
        machine.run_ended(Event.RUN_OK, returned=RETURNED)
        assert machine.state == State.DONE and machine.last_result == BootStatus.DONE
        assert actions.calls[-5:] == [MARK, IDENTITY] + list(DONE_ACTIONS)

    def test_daemon_start_with_the_trigger_cached_runs_it(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.started()
        assert machine.state == State.QUIET and machine.armed
        actions.timer()
        assert machine.state == State.RUNNING and actions.calls == [SET_TIMER, FIRST_BOOT_RUN]

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

    def test_a_second_password_during_the_run_is_applied_before_done(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.messages_stored([TRIGGER_KEY])
        machine.quiet_period_over()
        machine.messages_stored([TRIGGER_KEY])  # the host sends a new password meanwhile
        actions.newer = True                    # (the daemon sees it differs)
        machine.run_ended(Event.RUN_OK, returned=RETURNED)
        # configured, but not done: the new password is not applied yet
        assert machine.state == State.QUIET and machine.reconfigure and machine.armed
        assert ("send", STATUS_KEY, STATUS_DONE) not in actions.calls
        assert WIPE not in actions.calls        # the new password is still needed
        machine.quiet_period_over()
        assert actions.calls[-1] == RECONFIGURE_RUN  # only what changed runs again
        actions.newer = False
        machine.run_ended(Event.RUN_OK)
        assert machine.state == State.DONE and machine.last_result == BootStatus.DONE
        assert actions.calls[-3:] == [("keep_results", ()), WIPE, ("send", STATUS_KEY,
                                                                   STATUS_DONE)]
        assert actions.calls.count(MARK) == 1

    def test_a_late_key_after_a_failure_runs_first_boot_again_and_reports_its_outcome(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.messages_stored([TRIGGER_KEY])
        machine.quiet_period_over()
        machine.messages_stored(["com.example.fixed"])
        actions.newer = True
        machine.run_ended(Event.RUN_FAILED, reason=REASON)
        assert machine.state == State.QUIET and not machine.reconfigure
        assert not [call for call in actions.calls if call[0] == "send"]
        actions.newer = False
        machine.quiet_period_over()
        assert actions.calls[-1] == FIRST_BOOT_RUN  # INITIAL_CONFIG is still yes
        machine.run_ended(Event.RUN_FAILED, reason=REASON)
        assert machine.state == State.FAILED and actions.calls[-1] == FAILED_ACTIONS[0]

    def test_reconfig_after_first_boot_runs_the_changed_params(self):
        actions = Recorder(enabled=False, cached=False)
        machine = FirstBootMachine(actions, QUIET)
        machine.started()
        machine.messages_stored(["com.oracle.linux.network.hostname"])
        assert machine.state == State.WAITING and actions.calls == []  # stored, logged
        machine.reconfig_requested()
        assert machine.state == State.QUIET and machine.armed
        machine.messages_stored(["com.oracle.linux.network.hostname"])  # one more
        machine.quiet_period_over()
        assert actions.calls == [SET_TIMER, SET_TIMER, RECONFIGURE_RUN]
        machine.run_ended(Event.RUN_OK)
        assert machine.state == State.DONE and MARK not in actions.calls
        assert actions.calls[-1] == ("send", STATUS_KEY, STATUS_DONE)
        machine.messages_stored(["com.oracle.linux.network.hostname"])
        assert machine.state == State.DONE and not machine.armed  # stored, not applied

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

    def test_the_console_dialog_configured_the_guest_while_the_daemon_waited(self):
        actions = Recorder(cached=False)
        machine = FirstBootMachine(actions, QUIET)
        machine.started()
        actions.enabled = False  # the console dialog's run set INITIAL_CONFIG=no
        machine.flag_turned_no()
        assert machine.state == State.STOOD_DOWN and actions.calls == [WIPE]
        assert not machine.armed

    def test_armed_while_a_run_is_wanted(self):
        machine = FirstBootMachine(Recorder(), QUIET)
        assert not machine.armed
        machine.messages_stored([TRIGGER_KEY])
        assert machine.armed
        machine.script_starting("cleanup")  # the quiet period still runs meanwhile
        assert machine.state == State.BUSY and machine.armed
        machine.run_ended(Event.RUN_OK)
        assert machine.state == State.QUIET

    def test_a_sealed_guest_runs_nothing_more_on_this_boot(self):
        """``ovmd --seal`` arms first boot for the clones (INITIAL_CONFIG=yes): the boot
        that sealed the template must not take it for its own."""
        actions = Recorder(enabled=False, cached=False)
        machine = FirstBootMachine(actions, QUIET)
        machine.started()
        machine.script_starting("cleanup")  # the seal's cleanup run
        machine.run_ended(Event.RUN_OK)
        actions.enabled = True  # the seal set INITIAL_CONFIG=yes
        machine.sealed_now()
        assert machine.sealed and not machine.armed and not machine.running
        actions.cached = True
        machine.messages_stored([TRIGGER_KEY])
        machine.reconfig_requested()
        machine.started()
        assert machine.state == State.SEALED and actions.calls == []
        assert actions.timer is None

    def test_sealing_while_first_boot_waits_cancels_its_quiet_period(self):
        actions = Recorder()
        machine = FirstBootMachine(actions, QUIET)
        machine.messages_stored([TRIGGER_KEY])
        machine.script_starting("cleanup")
        machine.run_ended(Event.RUN_OK)
        assert machine.state == State.QUIET  # its timer runs on
        machine.sealed_now()
        assert machine.sealed and actions.calls == [SET_TIMER, CANCEL_TIMER]

    def test_a_successful_configure_records_the_vm_it_ran_on(self):
        actions = Recorder(enabled=False, cached=False)
        machine = FirstBootMachine(actions, QUIET)
        machine.reconfig_requested()
        machine.quiet_period_over()
        machine.run_ended(Event.RUN_FAILED, reason=REASON)
        assert IDENTITY not in actions.calls  # a failed run configured nothing for sure
        machine.reconfig_requested()
        machine.quiet_period_over()
        machine.run_ended(Event.RUN_OK)
        assert actions.calls.count(IDENTITY) == 1
