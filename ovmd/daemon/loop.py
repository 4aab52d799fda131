"""The daemon's event loop: one ``selectors`` loop over descriptors, signals and timers.

Nothing polls: idle, the daemon sleeps in ``select()`` until a descriptor is ready, a
signal arrives (through the wakeup descriptor of :func:`signal.set_wakeup_fd`) or the
nearest named timer is due. Every callback runs guarded: a bug in one is logged with its
traceback and the loop goes on.
"""
from __future__ import annotations

import logging
import selectors
import signal
import socket
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

log = logging.getLogger(__name__)

#: Called before each ``select()``; True if it has more work, so the loop must not sleep.
Work = Callable[[], bool]


def guarded(callback: Callable[..., None], *args: Any) -> None:
    """Run one loop callback; a bug in one never stops the daemon."""
    try:
        callback(*args)
    except Exception:  # noqa: BLE001 - logged with its traceback, loop goes on
        log.exception("internal error (the daemon keeps running)")


class EventLoop:
    """Descriptors, signals and named timers, served until :meth:`stop`."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.timers: Dict[str, Tuple[float, Callable[[], None]]] = {}
        self.stopping = False
        self._signal_handlers: List[Tuple[Tuple[int, ...], Callable[[], None]]] = []
        self._signals: Set[int] = set()
        self._wakeup: Optional[Tuple[socket.socket, socket.socket]] = None

    # --- descriptors --------------------------------------------------------------------
    def add_reader(self, fd: Any, callback: Callable[[int], None]) -> None:
        """``callback(mask)`` whenever ``fd`` (a descriptor or an object with fileno) is
        readable."""
        self.selector.register(fd, selectors.EVENT_READ, callback)

    def add_writer(self, fd: Any, callback: Callable[[int], None]) -> None:
        self.selector.register(fd, selectors.EVENT_WRITE, callback)

    def remove(self, fd: Any) -> None:
        """Stop watching ``fd``; quietly if it is not watched (or closed already)."""
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError, OSError):
            pass

    # --- signals ------------------------------------------------------------------------
    def on_signals(self, signums: Iterable[int], callback: Callable[[], None]) -> None:
        """``callback()`` once per loop turn in which any of ``signums`` arrived; handlers
        run in the order they were added."""
        if self._wakeup is None:
            self._install_wakeup()
        signums = tuple(signums)
        for signum in signums:
            signal.signal(signum, self._on_signal)
        self._signal_handlers.append((signums, callback))

    def _install_wakeup(self) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        self.add_reader(reader, self._drain_wakeup)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals.add(signum)

    def _drain_wakeup(self, _mask: int) -> None:
        assert self._wakeup is not None
        try:
            while self._wakeup[0].recv(4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        arrived, self._signals = self._signals, set()
        for signums, callback in self._signal_handlers:
            if arrived.intersection(signums):
                guarded(callback)

    # --- timers -------------------------------------------------------------------------
    def set_timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` in ``delay`` seconds; replaces a timer of the same name."""
        self.timers[name] = (time.monotonic() + delay, callback)

    def cancel_timer(self, name: str) -> None:
        self.timers.pop(name, None)

    def _next_timeout(self) -> Optional[float]:
        if not self.timers:
            return None
        return max(0.0, min(d for d, _ in self.timers.values()) - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        for name, (deadline, callback) in list(self.timers.items()):
            if deadline <= now and self.timers.get(name, (None,))[0] == deadline:
                del self.timers[name]
                guarded(callback)

    # --- running ------------------------------------------------------------------------
    def run(self, work: Work) -> None:
        """Serve until :meth:`stop`; ``work`` runs before each wait (see :data:`Work`)."""
        while not self.stopping:
            busy = False
            try:
                busy = work()
            except Exception:  # noqa: BLE001 - as guarded(), keeping the result
                log.exception("internal error (the daemon keeps running)")
            timeout = 0.0 if busy else self._next_timeout()
            for key, mask in self.selector.select(timeout):
                guarded(key.data, mask)
            self._handle_signals()
            self._run_timers()

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        """Give the signal wakeup descriptor back (the loop has ended)."""
        signal.set_wakeup_fd(-1)
