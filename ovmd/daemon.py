"""The ovmd daemon: one event loop over XenStore, the control socket and signals.

Everything is event-driven (no polling loop): a ``selectors`` loop waits on the XenStore
connection (the watch on ``to-guest/last-write``), the control socket, a signal wakeup
descriptor, the pipes of a running ``ovm-template-config`` child, and the nearest timer
(the first-boot quiet period, the XenStore reconnect backoff). Idle, it sleeps in
``select()``.

Message flow: fetch pending host messages -> store them durably in the
:class:`~ovmd.cache.ParamCache` -> delete them from XenStore. First boot: when
INITIAL_CONFIG=yes and ``com.oracle.linux.root-password`` is cached, a quiet period
(restarted by every new message) is followed by ``ovm-template-config configure`` as a
child process; the loop keeps serving meanwhile.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import logging.handlers
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import __version__
from .cache import CacheError, ParamCache
from .channel import EVENT_KEY, EVENTS, Message, MessageChannel, MessageError, check_message
from .control import EXIT_FAILURE, EXIT_OK, ControlConnection, ControlServer
from .paths import ROOT_ENV, Paths
from .secrets import RedactingFilter, redact
from .runreport import ModuleStatus, RunStatus, read_report
from .status import BootStatus, compute_status, format_modules
from .firstboot.contract import (
    EXIT_ALREADY_CONFIGURED, INITIAL_CONFIG_OPTION, STATUS_DONE, STATUS_KEY, TRIGGER_KEY,
    failed_status,
)
from .firstboot.flag import initial_config_enabled, set_initial_config

log = logging.getLogger(__name__)

RUNNER = "ovm-template-config"
RECONNECT_FIRST = 0.1
RECONNECT_MAX = 10.0


class DaemonError(Exception):
    """The daemon cannot start; the message says what to do."""


# --- logging --------------------------------------------------------------------------

class LogSetup:
    """Handlers per ``-d``: 0 none, 1 stderr, 2 syslog; each carries the redactor."""

    def __init__(self, debug: int, redactor: RedactingFilter, verbose: bool = False) -> None:
        self.debug = debug
        self.redactor = redactor
        self.verbose = verbose
        self.handlers: List[logging.Handler] = []

    def install(self) -> None:
        root = logging.getLogger()
        for handler in self.handlers:
            root.removeHandler(handler)
            handler.close()
        self.handlers = []
        handler: logging.Handler
        if self.debug == 0:
            handler = logging.NullHandler()
        elif self.debug == 1:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("ovmd[%(process)d] %(levelname)s %(message)s"))
        else:
            handler = _syslog_handler()
        handler.addFilter(self.redactor)
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if self.verbose else logging.INFO)
        self.handlers.append(handler)

    reopen = install


def _syslog_handler() -> logging.Handler:
    for address in ("/dev/log", "/var/run/syslog"):
        if os.path.exists(address):
            try:
                handler: logging.Handler = logging.handlers.SysLogHandler(
                    address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
                handler.setFormatter(logging.Formatter("ovmd[%(process)d]: %(message)s"))
                return handler
            except OSError:
                continue
    handler = logging.StreamHandler(sys.stderr)  # no syslog socket (a container)
    handler.setFormatter(logging.Formatter("ovmd[%(process)d] %(levelname)s %(message)s"))
    return handler


# --- pid file and systemd ---------------------------------------------------------------

class PidFile:
    """A pid file guarded by ``fcntl.flock``: it cannot go stale.

    The lock lives as long as the daemon's open file description: after a crash (even
    SIGKILL) the kernel releases it and the next start succeeds; while a daemon runs, a
    second one fails at once with a clear message. Usable as python-daemon's ``pidfile``
    (``__enter__`` writes the pid after the fork; the descriptor must be preserved).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: Optional[int] = None

    def acquire(self) -> "PidFile":
        from .fsutil import ensure_private_dir

        ensure_private_dir(os.path.dirname(self.path))
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            other = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DaemonError("ovmd is already running (pid %s holds the lock on %s)"
                                  % (other, self.path)) from None
            raise
        self.fd = fd
        self.write_pid()
        return self

    def write_pid(self) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, b"%d\n" % os.getpid(), 0)

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None

    # python-daemon's pidfile protocol
    def __enter__(self) -> "PidFile":
        if self.fd is None:
            self.acquire()
        else:
            self.write_pid()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def sd_notify(state: str, environ: Optional[Dict[str, str]] = None) -> bool:
    """Tell systemd (``NOTIFY_SOCKET``) our state, e.g. ``READY=1``; plain socket code."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
        return True
    except OSError as err:
        log.warning("cannot notify systemd at %s: %s", address, err)
        return False


# --- running a template-config target ------------------------------------------------

def runner_command() -> str:
    """``ovm-template-config`` next to our interpreter (a virtualenv), else on PATH."""
    local = os.path.join(os.path.dirname(sys.executable), RUNNER)
    if os.access(local, os.X_OK):
        return local
    import shutil

    return shutil.which(RUNNER) or RUNNER


class TargetRun:
    """One ``ovm-template-config --input FD --output FD [--root DIR] TARGET`` child.

    Params go in as one JSON object on the input pipe (never on argv); the resulting
    params come back on the output pipe; stdout/stderr lines are logged (redacted by the
    log filter). Completion is noticed through SIGCHLD, so a module that leaves a
    background process holding our pipes cannot hang the daemon.
    """

    def __init__(self, paths: Paths, target: str, params: Dict[str, str],
                 selector: selectors.BaseSelector,
                 on_done: Callable[["TargetRun"], None], initial_config: bool = False) -> None:
        self.paths = paths
        self.target = target
        #: a first-boot run: the runner re-checks INITIAL_CONFIG under its run lock, exits
        #: ALREADY_CONFIGURED if the console dialog won, and sets the flag to no on success
        self.initial_config = initial_config
        self.params = params
        self.selector = selector
        self.on_done = on_done
        self.started = time.time()
        self.output = bytearray()
        self.returncode: Optional[int] = None
        self.error: Optional[str] = None
        self.waiters: List[ControlConnection] = []
        self._stderr_tail = bytearray()
        self._fds: List[int] = []
        self.process: Optional[subprocess.Popen] = None
        self._readers: Dict[int, Callable[[int], None]] = {}
        self._start()

    def _start(self) -> None:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        argv = [runner_command(), "--input", str(in_r), "--output", str(out_w)]
        if self.paths.root != "/":
            argv += ["--root", self.paths.root]
        if self.initial_config:
            argv.append(INITIAL_CONFIG_OPTION)
        argv.append(self.target)
        env = dict(os.environ)
        env[ROOT_ENV] = self.paths.root
        try:
            self.process = subprocess.Popen(
                argv, pass_fds=(in_r, out_w), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, close_fds=True)
        except OSError as err:
            for fd in (in_r, in_w, out_r, out_w):
                os.close(fd)
            self.error = "cannot start %s: %s" % (argv[0], err.strerror)
            self.returncode = 127
            return
        os.close(in_r)
        os.close(out_w)
        log.info("started %s %s (pid %d)", RUNNER, self.target, self.process.pid)
        self._pending_input = memoryview(json.dumps(self.params).encode("utf-8"))
        for fd in (in_w, out_r):
            os.set_blocking(fd, False)
        self._fds = [in_w, out_r]
        self._readers = {out_r: self._read_output}
        self.selector.register(in_w, selectors.EVENT_WRITE, lambda m: self._write(in_w))
        self.selector.register(out_r, selectors.EVENT_READ, lambda m: self._read_output(out_r))
        console = self.process.stdout
        assert console is not None
        os.set_blocking(console.fileno(), False)
        self._fds.append(console.fileno())
        self._readers[console.fileno()] = self._read_console
        self.selector.register(console.fileno(), selectors.EVENT_READ,
                               lambda m: self._read_console(console.fileno()))

    @property
    def finished(self) -> bool:
        return self.returncode is not None

    def _write(self, fd: int) -> None:
        try:
            while self._pending_input:
                self._pending_input = self._pending_input[os.write(fd, self._pending_input):]
        except BlockingIOError:
            return
        except OSError as err:  # the child exited without reading (EPIPE)
            log.debug("%s did not read its input: %s", RUNNER, err)
        self._close_fd(fd)

    def _drain(self, fd: int) -> bytes:
        """What the non-blocking ``fd`` holds now; closes it at end of file."""
        chunks = []
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not data:
                self._close_fd(fd)
                break
            chunks.append(data)
        return b"".join(chunks)

    def _read_output(self, fd: int) -> None:
        self.output += self._drain(fd)

    def _read_console(self, fd: int) -> None:
        self._stderr_tail += self._drain(fd)
        *lines, rest = self._stderr_tail.split(b"\n")
        self._stderr_tail = bytearray(rest)
        for line in lines:
            if line.strip():
                log.info("%s: %s", RUNNER, line.decode("utf-8", "replace"))

    def _close_fd(self, fd: int) -> None:
        if fd in self._fds:
            self._fds.remove(fd)
            try:
                self.selector.unregister(fd)
            except (KeyError, ValueError):
                pass
            if self.process is not None and self.process.stdout is not None \
                    and fd == self.process.stdout.fileno():
                self.process.stdout.close()
            else:
                os.close(fd)

    def check_exit(self) -> bool:
        """Called on SIGCHLD: True once the child has exited and been collected."""
        if self.process is None or self.returncode is not None:
            return self.returncode is not None
        code = self.process.poll()
        if code is None:
            return False
        for fd, reader in list(self._readers.items()):  # what the child left in the pipes
            if fd in self._fds:
                try:
                    reader(fd)
                except OSError:
                    pass
        for fd in list(self._fds):
            self._close_fd(fd)
        self.returncode = code
        return True

    def result_params(self) -> Optional[Dict[str, str]]:
        """The params the runner returned, or None if it returned nothing usable."""
        text = bytes(self.output).decode("utf-8", "replace").strip()
        if not text:
            return None
        try:
            data = json.loads(text)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        return {str(k): str(v) for k, v in data.items()}

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()


# --- the daemon -------------------------------------------------------------------------

class Daemon:
    """The event loop and everything it drives."""

    def __init__(self, paths: Paths, *, xenstore_path: Optional[str] = None,
                 quiet_period: float = 1.0, redactor: Optional[RedactingFilter] = None,
                 log_setup: Optional[LogSetup] = None) -> None:
        self.paths = paths
        self.xenstore_path = xenstore_path
        self.quiet_period = quiet_period
        self.redactor = redactor or RedactingFilter()
        self.log_setup = log_setup
        self.selector = selectors.DefaultSelector()
        self.cache = ParamCache(paths, self.redactor)
        self.client = None
        self.channel: Optional[MessageChannel] = None
        self.control: Optional[ControlServer] = None
        self.outbox: Deque[Tuple[str, str]] = deque()
        self.events: Deque[Dict[str, Any]] = deque(maxlen=50)
        self.timers: Dict[str, Tuple[float, Callable[[], None]]] = {}
        self.run_child: Optional[TargetRun] = None
        self.status_waiters: List[Tuple[ControlConnection, bool]] = []
        self.armed = False          # first boot: root password arrived, run pending
        self.rearm = False          # a root password arrived during a run
        self.last_result: Optional[str] = None
        self.backoff = RECONNECT_FIRST
        self.stopping = False
        self.ready = False
        self._dirty = False
        self._xs_fd: Optional[int] = None
        self._signals: set = set()
        self._wakeup: Optional[Tuple[socket.socket, socket.socket]] = None

    # --- life cycle -------------------------------------------------------------------
    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; returns the exit code."""
        self._install_signals()
        self.cache.load()
        self.control = ControlServer(self.paths.control_socket, self._handle_request,
                                     self.selector)
        self._connect()
        self.armed = initial_config_enabled(self.paths) and TRIGGER_KEY in self.cache
        if self.armed:
            log.info("first-boot configuration is pending (root password cached): "
                     "running it after the quiet period")
            self._set_timer("quiet", self.quiet_period, self._quiet_period_over)
        self.ready = True
        sd_notify("READY=1\nSTATUS=waiting for host messages")
        log.info("ovmd %s ready (root %s)", __version__, self.paths.root)
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        while not self.stopping:
            if self._dirty and self.client is not None:
                self._guarded(self._drain)
            timeout = 0.0 if self._dirty else self._next_timeout()
            for key, mask in self.selector.select(timeout):
                self._guarded(key.data, mask)
            self._guarded(self._handle_signals)
            self._guarded(self._run_timers)

    @staticmethod
    def _guarded(callback: Callable[..., None], *args: Any) -> None:
        """Run one loop callback; a bug in one never stops the daemon."""
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - logged with its traceback, loop goes on
            log.exception("internal error (the daemon keeps running)")

    def _shutdown(self) -> None:
        sd_notify("STOPPING=1")
        log.info("ovmd stopping")
        if self.run_child is not None:
            # the runner keeps resumable progress; a restart finishes the job
            log.info("leaving %s %s to finish on its own", RUNNER, self.run_child.target)
        for conn, _ in self.status_waiters:
            conn.respond(EXIT_FAILURE, err=b"ovmd: the daemon is stopping\n")
        if self.control is not None:
            self.control.close()
        self._disconnect(reconnect=False)
        self.cache.close()
        signal.set_wakeup_fd(-1)

    # --- signals and timers -------------------------------------------------------------
    def _install_signals(self) -> None:
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._wakeup = (reader, writer)
        signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)
        self.selector.register(reader, selectors.EVENT_READ, self._drain_wakeup)

    def _on_signal(self, signum: int, _frame) -> None:
        self._signals.add(signum)

    def _drain_wakeup(self, _mask: int) -> None:
        assert self._wakeup is not None
        try:
            while self._wakeup[0].recv(4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, set()
        if signal.SIGTERM in signals or signal.SIGINT in signals:
            log.info("received a termination signal")
            self.stopping = True
        if signal.SIGHUP in signals:
            if self.log_setup is not None:
                self.log_setup.reopen()
            log.info("reopened logs")
        if signal.SIGCHLD in signals and self.run_child is not None:
            if self.run_child.check_exit():
                self._run_finished(self.run_child)

    def _set_timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self.timers[name] = (time.monotonic() + delay, callback)

    def _next_timeout(self) -> Optional[float]:
        if not self.timers:
            return None
        return max(0.0, min(d for d, _ in self.timers.values()) - time.monotonic())

    def _run_timers(self) -> None:
        now = time.monotonic()
        for name, (deadline, callback) in list(self.timers.items()):
            if deadline <= now and self.timers.get(name, (None,))[0] == deadline:
                del self.timers[name]
                callback()

    # --- XenStore -------------------------------------------------------------------------
    def _connect(self) -> None:
        from .xenstore import XenStoreClient

        try:
            client = XenStoreClient.open(self.xenstore_path, request_timeout=30)
        except OSError as err:
            self._schedule_reconnect("cannot connect to XenStore (%s)" % err)
            return
        channel = MessageChannel(client)
        try:
            channel.watch()
            self.client, self.channel = client, channel
            self._xs_fd = client.fileno()
            self.selector.register(self._xs_fd, selectors.EVENT_READ, self._on_xenstore)
            self._drain()
            while self._dirty and not self.ready and self.client is not None:
                self._drain()  # at start-up, consume everything waiting before READY=1
            self._flush_outbox()
        except OSError as err:
            self._disconnect()
            self._schedule_reconnect("XenStore connection failed (%s)" % err)
            return
        if self.backoff > RECONNECT_FIRST:
            log.info("connected to XenStore again")
        self.backoff = RECONNECT_FIRST

    def _schedule_reconnect(self, why: str) -> None:
        log.warning("%s; retrying in %.1f s", why, self.backoff)
        self._set_timer("reconnect", self.backoff, self._connect)
        self.backoff = min(self.backoff * 2, RECONNECT_MAX)

    def _disconnect(self, reconnect: bool = True) -> None:
        if self._xs_fd is not None:
            try:
                self.selector.unregister(self._xs_fd)
            except (KeyError, ValueError, OSError):
                pass
            self._xs_fd = None
        if self.client is not None:
            self.client.close()
        self.client, self.channel = None, None
        self._dirty = False
        if reconnect and not self.stopping:
            self._schedule_reconnect("lost the XenStore connection")

    def _on_xenstore(self, _mask: int) -> None:
        try:
            assert self.client is not None
            self.client.receive_events()
            self._drain()
        except OSError as err:
            log.warning("XenStore error: %s", err)
            self._disconnect()

    def _drain(self) -> None:
        """Fetch one batch, store it durably, then delete it from XenStore."""
        assert self.client is not None and self.channel is not None
        try:
            messages = self.channel.fetch()
            if messages:
                self._accept(messages)
                self.channel.acknowledge(messages)
            self._dirty = bool(messages) or self.channel.has_more \
                or bool(self.client.pending_events())
        except CacheError as err:
            # not stored, so not deleted: the messages stay in XenStore; try again later
            log.error("%s; retrying in 5 s", err)
            self._dirty = False
            if self.channel is not None:
                self.channel.reset()
            self._set_timer("retry-store", 5.0, self._mark_dirty)
        except OSError as err:
            log.warning("XenStore error: %s", err)
            self._disconnect()

    def _mark_dirty(self) -> None:
        self._dirty = True

    def _accept(self, messages: List[Message]) -> None:
        params = []
        for message in messages:
            if message.is_event:
                self._record_event(message)
            else:
                params.append((message.key, message.value))
        self.cache.update(params)  # durable before the caller deletes the nodes
        if params:
            keys = [k for k, _ in params]
            log.info("stored %d parameter(s) from the host%s", len(keys),
                     ": " + ", ".join(keys) if len(keys) <= 8 else "")
        if initial_config_enabled(self.paths):
            if any(k == TRIGGER_KEY for k, _ in params):
                if self.run_child is not None:
                    self.rearm = True
                else:
                    self.armed = True
            if self.armed and self.run_child is None:
                self._set_timer("quiet", self.quiet_period, self._quiet_period_over)

    def _record_event(self, message: Message) -> None:
        names = []
        value = message.value.strip()
        bits = int(value, 0) if value.isdigit() or value.startswith("0x") else None
        if bits is not None:
            names = [name for name, bit in EVENTS.items() if bits & bit]
        entry = {"time": time.time(), "event": value[:64], "names": names}
        self.events.append(entry)
        log.info("host event %s%s", value[:64], " (%s)" % ", ".join(names) if names else "")

    def send(self, key: str, value: str) -> Optional[str]:
        """Send to the host now, or queue until XenStore is back; returns a warning."""
        if self.channel is None:
            self.outbox.append((key, value))
            return "not connected to XenStore: queued for sending"
        try:
            self.channel.send(key, value)
        except OSError as err:
            if getattr(err, "name", None) in ("EACCES", "EPERM", "EINVAL", "E2BIG"):
                return "could not send %s to the host: %s" % (key, err)
            self.outbox.append((key, value))
            self._disconnect()
            return "XenStore connection lost: queued for sending"
        return None

    def _flush_outbox(self) -> None:
        while self.outbox and self.channel is not None:
            key, value = self.outbox.popleft()
            try:
                self.channel.send(key, value)
            except OSError as err:
                if getattr(err, "name", None) in ("EACCES", "EPERM"):
                    log.warning("could not send %s to the host: %s", key, err)
                    continue
                self.outbox.appendleft((key, value))
                raise

    # --- first boot -----------------------------------------------------------------------
    def _quiet_period_over(self) -> None:
        if self.run_child is not None or not self.armed:
            return
        if not initial_config_enabled(self.paths):
            self.armed = False
            return
        if TRIGGER_KEY not in self.cache:
            self.armed = False
            return
        self.armed = False
        log.info("quiet period over: running first-boot configuration")
        self._start_run("configure", initial_config=True)

    def _start_run(self, target: str, initial_config: bool = False) -> TargetRun:
        run = TargetRun(self.paths, target, self.cache.as_dict(), self.selector,
                        self._run_finished, initial_config=initial_config)
        self.run_child = run
        if run.finished:  # could not even start
            self._run_finished(run)
        return run

    def _run_finished(self, run: TargetRun) -> None:
        if self.run_child is not run:
            return
        self.run_child = None
        if run.initial_config and run.returncode == EXIT_ALREADY_CONFIGURED:
            self._first_boot_stand_down(run)
            return
        report = read_report(self.paths)
        if report is not None and report.get("target") != run.target:
            report = None
        ok = run.returncode == 0 and run.error is None and \
            (report is None or report.get("status") != RunStatus.FAILED)
        error = run.error or self._run_error(run, report)
        secrets = self.cache.secret_values()
        if ok:
            log.info("%s %s finished successfully", RUNNER, run.target)
        else:
            log.error("%s %s failed: %s", RUNNER, run.target, redact(error, secrets))
        if run.initial_config:
            self._first_boot_done(run, ok, redact(error, secrets), report)
        summary = self._run_summary(run, ok, error, report)
        for conn in run.waiters:
            conn.respond(EXIT_OK if ok else EXIT_FAILURE, summary.encode("utf-8"))
        self._wake_status_waiters()
        if self.rearm:
            self.rearm = False
            if initial_config_enabled(self.paths):
                self.armed = True
                self._set_timer("quiet", self.quiet_period, self._quiet_period_over)

    @staticmethod
    def _run_error(run: TargetRun, report: Optional[Dict[str, Any]]) -> str:
        failed = [m for m in (report or {}).get("modules") or [] if m.get("status") == ModuleStatus.FAILED]
        if failed:
            return "; ".join("module %s failed: %s" % (m.get("name"),
                                                      str(m.get("error") or "").strip()[:300])
                             for m in failed)
        if run.returncode not in (0, None):
            return "%s exited with status %s" % (RUNNER, run.returncode)
        return ""

    def _first_boot_stand_down(self, run: TargetRun) -> None:
        """The console dialog configured the guest first: nothing to do but tidy up."""
        wiped = self.cache.wipe_secrets()
        self.rearm = False
        self.last_result = BootStatus.DONE
        log.info("first boot already configured (console dialog); standing down; wiped %d "
                 "secret(s)", len(wiped))
        for conn in run.waiters:
            conn.respond(EXIT_OK, b"first boot already configured; nothing done\n")
        self._wake_status_waiters()

    def _first_boot_done(self, run: TargetRun, ok: bool, error: str,
                         report: Optional[Dict[str, Any]]) -> None:
        if not ok:
            self.last_result = BootStatus.FAILED
            self.send(STATUS_KEY, failed_status(error))
            log.error("first-boot configuration failed; INITIAL_CONFIG stays yes: send the "
                      "root password again to retry")
            return
        set_initial_config(self.paths, False)
        self.last_result = BootStatus.DONE
        result = run.result_params() or {}
        changed = [k for k, v in sorted(result.items()) if run.params.get(k) != v]
        for key in (report or {}).get("changed_keys") or []:
            if key in result and key not in changed:
                changed.append(key)
        from .secrets import is_secret_key

        public = [(k, result[k]) for k in changed if not is_secret_key(k)]
        if public:
            self.cache.update(public)
        wiped = self.cache.wipe_secrets()
        log.info("first-boot configuration done; INITIAL_CONFIG=no; wiped %d secret(s)",
                 len(wiped))
        for key, value in public:
            try:
                check_message(key, value)
            except MessageError as err:
                log.warning("not sending %s back: %s", key, err)
                continue
            warning = self.send(key, value)
            if warning:
                log.warning("%s", warning)
        self.send(STATUS_KEY, STATUS_DONE)

    @staticmethod
    def _run_summary(run: TargetRun, ok: bool, error: str,
                     report: Optional[Dict[str, Any]]) -> str:
        lines = ["%s %s: %s" % (RUNNER, run.target, "ok" if ok else "failed")]
        if report:
            lines.extend(format_modules(report))
        if not ok and error:
            lines.append("error: %s" % error)
        return "\n".join(lines) + "\n"

    # --- status ---------------------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        info = {
            "running_target": self.run_child.target if self.run_child else None,
            "armed": self.armed,
            "last_result": self.last_result,
            "events": list(self.events),
        }
        status = compute_status(self.paths, info)
        status["xenstore_connected"] = self.client is not None
        return status

    def _wake_status_waiters(self) -> None:
        if not self.status_waiters:
            return
        status = self.status()
        if status["status"] not in BootStatus.FINAL:
            return
        waiters, self.status_waiters = self.status_waiters, []
        for conn, as_json in waiters:
            conn.respond(*_status_answer(status, as_json))

    # --- control requests -----------------------------------------------------------------
    def _handle_request(self, conn: ControlConnection, args: List[str]) -> None:
        if not args:
            conn.respond(EXIT_FAILURE, err=b"ovmd: empty request\n")
            return
        command, rest = REQUEST_ALIASES.get(args[0], args[0]), args[1:]
        handler = getattr(self, "_cmd_" + command.replace("-", "_"), None)
        if handler is None:
            conn.respond(EXIT_FAILURE, err=("ovmd: unknown request %r\n" % command).encode())
            return
        try:
            handler(conn, *rest)
        except TypeError:
            conn.respond(EXIT_FAILURE, err=b"ovmd: wrong number of arguments\n")
        except Exception as err:  # one bad request never stops the daemon
            log.exception("control request %s failed", command)
            conn.respond(EXIT_FAILURE, err=("ovmd: %s failed: %s\n" % (command, err)).encode())

    def _cmd_ping(self, conn: ControlConnection) -> None:
        conn.respond(EXIT_OK, b"pong\n")

    def _cmd_get(self, conn: ControlConnection, key: str) -> None:
        value = self.cache.get(key)
        if value is None:
            conn.respond(EXIT_FAILURE, err=("ovmd: no parameter %r in the cache\n" % key).encode())
        else:
            conn.respond(EXIT_OK, value.encode("utf-8", "surrogateescape"))

    def _cmd_list(self, conn: ControlConnection) -> None:
        lines = [json.dumps({k: v}, ensure_ascii=False) for k, v in self.cache.items()]
        conn.respond(EXIT_OK, "".join(line + "\n" for line in lines).encode("utf-8"))

    def _cmd_set(self, conn: ControlConnection, key: str, value: Optional[str] = None) -> None:
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
        warning = self.send(key, value)
        if warning:
            conn.respond(EXIT_OK, err=("ovmd: stored locally; %s\n" % warning).encode())
        else:
            conn.respond(EXIT_OK)

    def _cmd_delete(self, conn: ControlConnection, key: str) -> None:
        if self.cache.delete(key):
            conn.respond(EXIT_OK)
        else:
            conn.respond(EXIT_FAILURE, err=("ovmd: no parameter %r in the cache\n" % key).encode())

    def _cmd_clear(self, conn: ControlConnection) -> None:
        self.cache.clear()
        conn.respond(EXIT_OK)

    def _cmd_event(self, conn: ControlConnection, event: str) -> None:
        name = event.strip().lower()
        if name in EVENTS:
            value = str(EVENTS[name])
        elif name.isdigit() or (name.startswith("0x") and len(name) > 2):
            value = str(int(name, 0))
        else:
            conn.respond(EXIT_FAILURE, err=("ovmd: unknown event %r (one of %s, or a number)\n"
                                            % (event, ", ".join(EVENTS))).encode())
            return
        warning = self.send(EVENT_KEY, value)
        conn.respond(EXIT_FAILURE if warning and "queued" not in warning else EXIT_OK,
                     err=(("ovmd: %s\n" % warning).encode() if warning else b""))

    def _cmd_script(self, conn: ControlConnection, target: str) -> None:
        if self.run_child is not None:
            conn.respond(EXIT_FAILURE, err=("ovmd: %s %s is already running; try again "
                                            "later\n" % (RUNNER, self.run_child.target)).encode())
            return
        if not target or "/" in target:
            conn.respond(EXIT_FAILURE, err=b"ovmd: invalid target\n")
            return
        self.timers.pop("quiet", None) if target == "configure" else None
        run = self._start_run(target, initial_config=(
            target == "configure" and initial_config_enabled(self.paths)))
        if self.run_child is run:
            run.waiters.append(conn)
        else:  # finished at once (could not start): answer now
            conn.respond(EXIT_FAILURE, err=("ovmd: %s\n" % (run.error or "failed")).encode())

    def _cmd_status(self, conn: ControlConnection, *flags: str) -> None:
        status = self.status()
        if "wait" in flags and status["status"] not in BootStatus.FINAL:
            self.status_waiters.append((conn, "json" in flags))
            return
        conn.respond(*_status_answer(status, "json" in flags))


#: Oracle's flags are accepted as request names too (``call("-l")``).
REQUEST_ALIASES = {
    "-g": "get", "--get-param": "get", "-l": "list", "--list-params": "list",
    "-p": "set", "--set-param": "set", "-r": "delete", "--delete-param": "delete",
    "-x": "clear", "--delete-params": "clear", "-e": "event", "--event": "event",
    "-s": "script", "--script": "script", "--status": "status",
}


def _status_answer(status: Dict[str, Any], as_json: bool) -> Tuple[int, bytes]:
    from .status import exit_code, format_status

    text = json.dumps(status, indent=2, sort_keys=True) + "\n" if as_json \
        else format_status(status)
    return exit_code(status), text.encode("utf-8")


def check_no_ovmapi(paths: Paths) -> None:
    from .channel import ovmapi_loaded

    found = ovmapi_loaded(paths.root)
    if found:
        raise DaemonError(
            "Oracle's ovmapi kernel module is loaded (%s): it consumes the same XenStore "
            "messages, so two consumers would race. Unload it (`rmmod ovmapi`, and "
            "blacklist it) or keep Oracle's ovmd instead of this one "
            "(`systemctl disable --now ovmd` for the other package)." % found)
