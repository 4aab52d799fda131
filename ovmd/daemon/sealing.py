"""``ovmd --seal`` on a running guest: the daemon seals it (:mod:`ovmd.seal` says what
sealing is).

The daemon stops taking in host messages (they stay in XenStore: params stored now
would go into the template) and runs the cleanup target as ``ovmd -s cleanup`` does
(refused while another run goes). When it succeeded, the daemon empties its cache
(memory and files, secrets included), removes what :attr:`ovmd.paths.Paths.SEALED`
names, sets INITIAL_CONFIG=yes and seals the first-boot machine: that flag is the
clones', so this boot keeps no first-boot runner standing by and runs nothing more.
Until it stops, the daemon takes in no host messages and refuses the requests that
would change the cache or run a target; it still answers ``-g``, ``-l`` and
``--status``. If cleanup failed, nothing is removed, and the daemon reads the messages
that came meanwhile and goes on as before; if a file cannot be removed, sealing stops
there and the daemon serves again what the cache's files still hold. The client gets
the runner's summary and every removal, one line each.
"""
from __future__ import annotations

import logging
from typing import Callable, List, Optional

from ..cache import ParamCache
from ..control import EXIT_FAILURE, EXIT_OK, ControlConnection
from ..firstboot.machine import Event, FirstBootMachine
from ..paths import Paths
from ..seal import CLEANUP, SealError, finish, nothing_linked, stopped_message
from .hostlink import HostLink
from .runs import RunResult, RunSlot
from .targetrun import RUNNER, TargetRun

log = logging.getLogger(__name__)

#: What the client is told last once the guest is sealed.
SEALED_LINE = ("sealed: shut the guest down now (shutdown -h now); until then ovmd takes "
               "no host messages and runs nothing")
#: The requests a sealed daemon refuses (they would change the cache or run a target).
REFUSED_WHEN_SEALED = ("set", "delete", "clear", "script", "seal")
REFUSAL = ("ovmd: the guest is sealed (ovmd --seal): shut it down now; its next boot is a "
           "first boot (restart ovmd to use it before that)")


class DaemonSeal:
    """One ``seal`` request at a time: its cleanup run, then the rest."""

    def __init__(self, paths: Paths, cache: ParamCache, link: HostLink, runs: RunSlot,
                 first_boot: FirstBootMachine, feed: Callable[..., None]) -> None:
        self.paths = paths
        self.cache = cache
        self.link = link
        self.runs = runs
        self.first_boot = first_boot
        #: how the daemon hands the first-boot machine an event (``feed(method, *args)``)
        self.feed = feed
        self.conn: Optional[ControlConnection] = None
        self.run: Optional[TargetRun] = None

    @property
    def active(self) -> bool:
        """A seal is in progress (its cleanup run goes)."""
        return self.conn is not None

    def owns(self, run: TargetRun) -> bool:
        return self.active and self.run in (None, run)

    def start(self, conn: ControlConnection) -> None:
        if self.first_boot.sealed:
            conn.respond(EXIT_FAILURE, err=(REFUSAL + "\n").encode())
            return
        if self.active or self.runs.current is not None:
            target = self.runs.current.target if self.runs.current is not None else CLEANUP
            conn.respond(EXIT_FAILURE, err=("ovmd: %s %s is running; seal when it has "
                                            "ended\n" % (RUNNER, target)).encode())
            return
        log.info("sealing the guest as a template (ovmd --seal)")
        self.conn, self.run = conn, None
        self.link.hold_messages()
        self.runs.stand_down()  # no first-boot runner may stand by meanwhile
        if not self.paths.linked_modules(CLEANUP):
            self._seal([nothing_linked(self.paths)])
            return
        self.first_boot.script_starting(CLEANUP)
        run = self.runs.start(CLEANUP)
        if self.active and self.runs.current is run:
            self.run = run

    def run_ended(self, result: RunResult) -> None:
        """The cleanup run ended (the first-boot machine was told already)."""
        code, out, err = result.answer
        if result.event != Event.RUN_OK:
            log.error("sealing stopped: the cleanup target failed")
            self.link.release_messages()
            self._answer(code or EXIT_FAILURE, out,
                         err + (stopped_message(code or EXIT_FAILURE) + "\n").encode())
            return
        self._seal(out.decode("utf-8", "replace").splitlines())

    def _seal(self, lines: List[str]) -> None:
        self.cache.forget()  # memory; the files go with the rest, each one said
        try:
            finish(self.paths, False, lines.append)
        except SealError as err:
            log.error("sealing stopped: %s", err)
            self.cache.load()  # what the files still hold is served again
            self.link.release_messages()
            self._answer(EXIT_FAILURE, _text(lines), ("ovmd: %s\n" % err).encode())
            return
        self.feed(self.first_boot.sealed_now)
        for line in lines:
            log.info("seal: %s", line)
        lines.append(SEALED_LINE)
        self._answer(EXIT_OK, _text(lines), b"")

    def _answer(self, code: int, out: bytes, err: bytes) -> None:
        conn, self.conn, self.run = self.conn, None, None
        if conn is not None:
            conn.respond(code, out, err)


def _text(lines: List[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode("utf-8")
