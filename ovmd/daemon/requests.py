"""The daemon's answers to control requests (``ovmd -g/-p/-l/-r/-x/-e/-s/--status``).

Which requests exist, their flags and how many arguments each takes come from one table,
:data:`ovmd.control.REQUESTS`; this module holds one handler per request and checks the
number of arguments from the table before calling it. A handler that fails with an
``OSError`` (a full disk, say) answers "REQUEST failed: why"; any other exception is a bug:
it is logged with its traceback as an internal error, the client gets a one-line error,
and the daemon keeps running.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..cache import ParamCache
from ..channel import EVENT_KEY, MessageError, UnknownEvent, check_message, event_number
from ..control import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    REQUEST_NAMES,
    REQUESTS,
    ControlConnection,
)
from ..firstboot.machine import FirstBootMachine
from ..status import BootStatus, exit_code, status_text
from .hostlink import HostLink
from .runs import RunSlot
from .sealing import REFUSAL, REFUSED_WHEN_SEALED, DaemonSeal
from .targetrun import RUNNER

log = logging.getLogger(__name__)

Handler = Callable[..., None]


class ControlRequests:
    """One handler per request of :data:`~ovmd.control.REQUESTS`; :meth:`handle` is the
    control server's callback. ``status()`` is the daemon's status object."""

    def __init__(self, cache: ParamCache, link: HostLink, runs: RunSlot,
                 first_boot: FirstBootMachine, status: Callable[[], Dict[str, Any]],
                 sealing: DaemonSeal) -> None:
        self.cache = cache
        self.link = link
        self.runs = runs
        self.first_boot = first_boot
        self.status = status
        self.sealing = sealing
        self.status_waiters: List[Tuple[ControlConnection, Tuple[str, ...]]] = []
        self.handlers: Dict[str, Handler] = {
            request.name: getattr(self, "_" + request.name) for request in REQUESTS}

    def handle(self, conn: ControlConnection, args: List[str]) -> None:
        if not args:
            conn.respond(EXIT_FAILURE, err=b"ovmd: empty request\n")
            return
        request = REQUEST_NAMES.get(args[0])
        if request is None:
            conn.respond(EXIT_FAILURE, err=("ovmd: unknown request %r\n" % args[0]).encode())
            return
        rest = args[1:]
        if not request.arity_ok(len(rest)):
            conn.respond(EXIT_FAILURE, err=b"ovmd: wrong number of arguments\n")
            return
        if self.first_boot.sealed and request.name in REFUSED_WHEN_SEALED:
            conn.respond(EXIT_FAILURE, err=(REFUSAL + "\n").encode())
            return
        try:
            self.handlers[request.name](conn, *rest)
        except OSError as err:  # the environment (a full disk), not a bug: no traceback
            log.error("control request %s failed: %s", request.name, err)
            conn.respond(EXIT_FAILURE, err=one_line("ovmd: %s failed: %s" % (request.name, err)))
        except Exception as err:  # noqa: BLE001 - a bug in a handler never stops the daemon
            log.exception("internal error in control request %s (the daemon keeps running)",
                          request.name)
            conn.respond(EXIT_FAILURE, err=one_line(
                "ovmd: internal error in request %s: %s: %s (see the daemon's log)"
                % (request.name, type(err).__name__, err)))

    # --- status -------------------------------------------------------------------------
    def wake_status_waiters(self) -> None:
        """Answer ``--status --wait`` clients once first boot has reached a final state."""
        if not self.status_waiters:
            return
        status = self.status()
        if status["status"] not in BootStatus.FINAL:
            return
        waiters, self.status_waiters = self.status_waiters, []
        for conn, flags in waiters:
            conn.respond(*status_answer(status, flags))

    def close(self) -> None:
        """The daemon stops: tell the clients still waiting."""
        for conn, _ in self.status_waiters:
            conn.respond(EXIT_FAILURE, err=b"ovmd: the daemon is stopping\n")
        self.status_waiters = []

    # --- the handlers, one per request ----------------------------------------------------
    def _ping(self, conn: ControlConnection) -> None:
        conn.respond(EXIT_OK, b"pong\n")

    def _get(self, conn: ControlConnection, key: str) -> None:
        value = self.cache.get(key)
        if value is None:
            conn.respond(EXIT_FAILURE, err=("ovmd: no parameter %r in the cache\n" % key).encode())
        else:
            conn.respond(EXIT_OK, value.encode("utf-8", "surrogateescape"))

    def _list(self, conn: ControlConnection) -> None:
        lines = [json.dumps({k: v}, ensure_ascii=False) for k, v in self.cache.items()]
        conn.respond(EXIT_OK, "".join(line + "\n" for line in lines).encode("utf-8"))

    def _set(self, conn: ControlConnection, key: str, value: Optional[str] = None) -> None:
        if value is None:  # Oracle's form: one "key=value" argument
            if "=" not in key:
                conn.respond(EXIT_FAILURE, err=b"ovmd: expected KEY=VALUE\n")
                return
            key, value = key.split("=", 1)
        try:
            check_message(key, value)
        except MessageError as err:
            conn.respond(EXIT_FAILURE, err=("ovmd: %s\n" % err).encode())
            return
        if key == EVENT_KEY:
            conn.respond(EXIT_FAILURE, err=b"ovmd: VMAPIEvent is reserved: use -e EVENT\n")
            return
        self.cache.update([(key, value)])
        warning = self.link.send(key, value)
        if warning:
            conn.respond(EXIT_OK, err=("ovmd: stored locally; %s\n" % warning).encode())
        else:
            conn.respond(EXIT_OK)

    def _delete(self, conn: ControlConnection, key: str) -> None:
        if self.cache.delete(key):
            conn.respond(EXIT_OK)
        else:
            conn.respond(EXIT_FAILURE, err=("ovmd: no parameter %r in the cache\n" % key).encode())

    def _clear(self, conn: ControlConnection) -> None:
        self.cache.clear()
        conn.respond(EXIT_OK)

    def _event(self, conn: ControlConnection, event: str) -> None:
        try:
            value = str(event_number(event))
        except UnknownEvent as unknown:
            conn.respond(EXIT_USAGE, err=("ovmd: %s\n" % unknown).encode("utf-8",
                                                                         "backslashreplace"))
            return
        warning = self.link.send(EVENT_KEY, value)
        conn.respond(EXIT_FAILURE if warning and "queued" not in warning else EXIT_OK,
                     err=(("ovmd: %s\n" % warning).encode() if warning else b""))

    def _seal(self, conn: ControlConnection) -> None:
        self.sealing.start(conn)

    def _script(self, conn: ControlConnection, target: str) -> None:
        if self.runs.current is not None:
            conn.respond(EXIT_FAILURE, err=("ovmd: %s %s is already running; try again "
                                            "later\n" % (RUNNER, self.runs.current.target)
                                            ).encode())
            return
        if not target or "/" in target:
            conn.respond(EXIT_USAGE, err=b"ovmd: invalid target\n")
            return
        first_boot = self.first_boot.script_starting(target)
        run = self.runs.start(target, first_boot)
        if self.runs.current is run:
            run.waiters.append(conn)
        else:  # finished at once (could not start): answer now
            conn.respond(EXIT_FAILURE, err=("ovmd: %s\n" % (run.error or "failed")).encode())

    def _status(self, conn: ControlConnection, *flags: str) -> None:
        unknown = [flag for flag in flags if flag not in REQUEST_NAMES["status"].option_names()]
        if unknown:
            conn.respond(EXIT_FAILURE, err=("ovmd: unknown status option %r\n"
                                            % unknown[0]).encode())
            return
        status = self.status()
        if "wait" in flags and status["status"] not in BootStatus.FINAL:
            self.status_waiters.append((conn, flags))
            return
        conn.respond(*status_answer(status, flags))


def status_answer(status: Dict[str, Any], flags: Sequence[str]) -> Tuple[int, bytes]:
    """(exit code, text) of ``ovmd --status`` with ``flags`` (``json``, ``long``)."""
    return exit_code(status), status_text(status, "json" in flags, "long" in flags).encode(
        "utf-8")


def one_line(text: str) -> bytes:
    """``text`` as one line for a client's stderr."""
    return (" ".join(text.split()) + "\n").encode("utf-8", "replace")
