"""Inside a forked module process: become what a fresh ``python SCRIPT ARGS`` would be.

A Python module runs in a fork of the runner (:mod:`templateconfig.run.launcher`), which
sets up what a fresh process would see: argv ``[script, TARGET]`` and the process title
of a fresh ``python SCRIPT TARGET`` (:mod:`templateconfig.run.proctitle`: ``ps`` tells
one module from another), pipes on 0/1/2 and no other descriptor, the module
environment, cwd ``/``, default signal dispositions and then Python's own, its own
process group, SIGKILL as its parent-death signal (a module process never outlives its
runner, :mod:`templateconfig.run.runnerdir`; exec'd modules keep it too),
``__name__ == "__main__"`` through ``runpy.run_path``, ``sys.path[0]`` the script's
directory, the exit status from
``SystemExit`` as CPython computes it, tracebacks without the runner's frames, a clean
``atexit`` and logging set-up. Other modules are exec'd.

The runner's objects are the module's too (copy-on-write), so the child touches as few of
them as it can: the parent works out beforehand what the child must reset
(:class:`Prepared`), and the child freezes the inherited objects (``gc.freeze``) so that
the collector does not walk them (which would copy every page they live on).
"""
from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from typing import Any, List, Mapping, NoReturn, Optional, Sequence, Tuple

from templateconfig.run import proctitle
from templateconfig.run.contract import EXIT_NOT_STARTED
from templateconfig.run.scripts import read_shebang


class Prepared:
    """What a child must reset, found by the parent just before the fork (the same
    state the child inherits): the signals whose disposition is not the default, and
    for a forked Python module (``argv``: its script and arguments) the environment
    changes, the loggers the runner set up and its process title. The child then
    touches only what it changes."""

    def __init__(self, env: Mapping[str, str], forked: bool,
                 argv: Sequence[str] = ()) -> None:
        self.parent = os.getpid()
        library = proctitle.libc()
        self.die_with_parent = library.prctl if library is not None else None
        self.signals = _signals_to_reset()
        self.env_removed: List[str] = []
        self.env_set: List[Tuple[str, str]] = []
        self.loggers: Optional[List[Any]] = None
        self.title: Optional[proctitle.Title] = None
        if forked:
            self.title = proctitle.prepare(read_shebang(argv[0]), argv) if argv else None
            environ = os.environ
            self.env_removed = [key for key in environ if key not in env]
            self.env_set = [(key, value) for key, value in env.items()
                            if environ.get(key) != value]
            self.loggers = _loggers_to_reset()


def _die_with_parent(prepared: Prepared) -> None:
    """SIGKILL when the runner dies; if it died already (before the prctl), exit now."""
    if prepared.die_with_parent is not None:
        prepared.die_with_parent(proctitle.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != prepared.parent:
        os._exit(EXIT_NOT_STARTED)


@functools.lru_cache(maxsize=None)
def _catchable_signals() -> Tuple[int, ...]:
    """Every signal a handler can be set for (the answer never changes)."""
    return tuple(sig for sig in sorted(signal.valid_signals())
                 if sig not in (signal.SIGKILL, signal.SIGSTOP))


def _signals_to_reset() -> List[int]:
    """The signals whose handler is not the default (those a fresh process would have
    at their default, or that Python sets itself later)."""
    found = []
    for sig in _catchable_signals():
        try:
            if signal.getsignal(sig) == signal.SIG_DFL:
                continue  # as Python found it at start-up or set it: nothing to undo
        except (OSError, ValueError, RuntimeError):
            continue
        found.append(sig)
    return found


def _loggers_to_reset() -> Optional[List[Any]]:
    """The loggers whose set-up differs from a fresh interpreter's (handlers, filters,
    level, propagation, disabled), root first; None if logging is not imported."""
    logging_module = sys.modules.get("logging")
    if logging_module is None:
        return None
    root = logging_module.root
    found = [root]
    for logger in list(logging_module.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging_module.Logger) and (
                logger.handlers or logger.filters or logger.level != logging_module.NOTSET
                or not logger.propagate or logger.disabled):
            found.append(logger)
    return found


def child_main(forked: bool, script: str, argv: List[str], env: Mapping[str, str],
               fds: Tuple[int, int, int], marker: Optional[bytes], prepared: Prepared,
               go_fd: Optional[int] = None) -> NoReturn:
    """Turn this forked process into the module process; never returns. ``fds``: the
    child's ends of its stdin, stdout and stderr pipes. With ``go_fd`` (a forked Python
    module started ahead), wait for a byte on it before the script is read; at EOF (the
    runner does not need it after all) exit at once."""
    code = EXIT_NOT_STARTED
    #: Objects to keep alive until the exit: dropping the parent's stdio or log streams
    #: would close descriptor numbers the module may be using by then.
    kept: List[Any] = []
    try:
        try:
            os.setpgid(0, 0)
        except OSError:
            pass
        _die_with_parent(prepared)
        go_fd = _own_descriptors(fds, go_fd)
        os.chdir("/")
        _reset_signals(prepared.signals)
        if forked:
            import gc
            gc.freeze()  # keep the collector off the inherited objects (copy-on-write)
            code = _run_python(script, argv, prepared, go_fd, kept)
            if marker is not None:
                os.write(2, marker + b"%d\n" % code)
                for fd in (0, 1, 2):
                    os.close(fd)
        else:
            _exec(script, argv, env)
    except BaseException as exc:  # report on the module's stderr, as a shell would
        try:
            os.write(2, ("ovm-template-config: cannot run %s: %s\n" % (script, exc)).encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _own_descriptors(fds: Tuple[int, int, int], go_fd: Optional[int]) -> Optional[int]:
    """``fds`` on 0, 1 and 2, ``go_fd`` kept (its new number returned), every other
    inherited descriptor closed."""
    import fcntl
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 3) for fd in fds]  # keep off 0-2 first
    if go_fd is not None:
        go_fd = fcntl.fcntl(go_fd, fcntl.F_DUPFD, 3)
    for number, fd in enumerate(high):
        os.dup2(fd, number)
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        open_fds = list(range(3, 1024))
    for fd in open_fds:
        if fd > 2 and fd != go_fd:
            try:
                os.close(fd)
            except OSError:
                pass
    return go_fd


def _reset_signals(signals: Sequence[int]) -> None:
    """Default dispositions for ``signals`` (those :func:`_signals_to_reset` found) and
    an empty signal mask."""
    for sig in signals:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _exec(script: str, argv: List[str], env: Mapping[str, str]) -> NoReturn:
    try:
        os.execve(argv[0], argv, dict(env))
    except OSError as exc:
        shebang = read_shebang(script)
        if exc.errno == errno.ENOENT and shebang and os.path.exists(script):
            reason = "its interpreter %s was not found (#!%s)" % (shebang[0], " ".join(shebang))
        elif exc.errno in (errno.EACCES, errno.ENOEXEC):
            reason = "it is not an executable (%s); give it a #! line and mode 0755" % exc.strerror
        else:
            reason = exc.strerror or str(exc)
        os.write(2, ("ovm-template-config: cannot execute %s: %s\n" % (script, reason)).encode())
    os._exit(EXIT_NOT_STARTED)


def _run_python(script: str, argv: List[str], prepared: Prepared, go_fd: Optional[int],
                kept: List[Any]) -> int:
    """Run ``script`` as ``__main__`` in this (forked) interpreter; its exit status.
    With ``go_fd``, everything up to reading the script is done, then a byte from it
    awaited (see :func:`child_main`)."""
    import atexit
    import runpy

    _fresh_interpreter(argv, prepared, kept)
    if go_fd is not None:
        if not os.read(go_fd, 1):
            os._exit(EXIT_NOT_STARTED)  # not needed: leave no trace
        os.close(go_fd)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = _exit_status(exc)
    except BaseException as exc:
        _print_exception(exc, script)
        code = 1
        if isinstance(exc, KeyboardInterrupt):
            code = 128 + signal.SIGINT
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            code = 120  # as CPython does when flushing stdout fails at exit
    return code


def _fresh_interpreter(argv: List[str], prepared: Prepared, kept: List[Any]) -> None:
    """Python's own signal dispositions, the module's environment, new standard streams
    on 0-2, ``sys.argv``, and no atexit or logging set-up of the runner's."""
    import atexit
    import io

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    for key in prepared.env_removed:
        del os.environ[key]
    for key, value in prepared.env_set:  # only what differs: each change is a putenv()
        os.environ[key] = value
    kept.extend([sys.stdin, sys.stdout, sys.stderr, sys.__stdin__, sys.__stdout__,
                 sys.__stderr__])
    encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"
    sys.stdin = io.open(0, "r", encoding=encoding, closefd=False)
    sys.stdout = io.open(1, "w", encoding=encoding, closefd=False)
    sys.stderr = io.open(2, "w", buffering=1, encoding=encoding, errors="backslashreplace",
                         closefd=False)
    # in a fresh interpreter the original streams are these (the names are final for mypy)
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = (  # type: ignore[misc]
        sys.stdin, sys.stdout, sys.stderr)
    sys.argv = list(argv)
    proctitle.apply(prepared.title)
    atexit._clear()
    _reset_logging(prepared.loggers, kept)


def _exit_status(exc: SystemExit) -> int:
    """The process exit status CPython derives from ``SystemExit``."""
    value = exc.code
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    try:
        sys.stderr.write("%s\n" % (value,))
    except Exception:
        pass
    return 1


def _print_exception(exc: BaseException, script: str) -> None:
    """The traceback a fresh interpreter would print: the runner's frames left out."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != script:
        tb = tb.tb_next
    try:
        exc.__traceback__ = tb
        sys.excepthook(type(exc), exc, tb)
    except Exception:
        pass


def _reset_logging(loggers: Optional[List[Any]], kept: List[Any]) -> None:
    """Forget the runner's log handlers, as a fresh interpreter has none. ``loggers``:
    those :func:`_loggers_to_reset` found (the others are as a fresh interpreter has
    them already); None if logging is not imported."""
    logging_module = sys.modules.get("logging")
    if logging_module is None:
        return
    for logger in loggers or []:
        kept.extend(logger.handlers)
        logger.handlers = []
        logger.filters = []
        if logger is not logging_module.root:
            logger.setLevel(logging_module.NOTSET)
            logger.propagate = True
            logger.disabled = False
    logging_module.root.setLevel(logging_module.WARNING)
    logging_module.disable(logging_module.NOTSET)
    del logging_module._handlerList[:]
    import atexit
    atexit.register(logging_module.shutdown)
