"""``ovm-template-config``: run a target's template-configuration modules.

Oracle's command line (docs/command-lines.md) plus ``--root``, ``--dry-run``, ``--json``,
``--timeout`` and ``--lock-timeout``. This module is the command: its arguments (a fast
path for the command lines ``ovmd`` and the units use, argparse for everything else), and
what it prints and exits with. The work is the runner's (:mod:`templateconfig.run`):
where the params come from (:mod:`templateconfig.run.params`), the run
(:mod:`templateconfig.run.runner`), first boot (:mod:`templateconfig.run.firstboot`).
``--new-module NAME`` hands over to the module SDK (:mod:`templateconfig.sdk`).

Start-up matters (this command runs on every first boot): nothing beyond ``os``, ``sys``,
``typing`` and the runner's constants is imported before the command line says what to
do, and each path imports only what it needs.
"""
from __future__ import annotations

import functools
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, TextIO, Union

from templateconfig.run.contract import DEFAULT_LOCK_TIMEOUT, DEFAULT_TIMEOUT

if TYPE_CHECKING:
    import argparse
    from types import FrameType

    from ovmd.paths import Paths
    from templateconfig.run.firstboot import FirstBootRun
    from templateconfig.run.runner import ModuleOutcome, Runner, RunResult

    #: What the command line parses into: the fast path's or argparse's.
    Arguments = Union["_Args", argparse.Namespace]

EXIT_OK = 0
EXIT_MODULE_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
# 4: --initial-config found the guest configured (ovmd.firstboot.contract)
EXIT_LOCK_TIMEOUT = 5
EXIT_INTERRUPTED = 130

_EPILOG = """\
params: --stdin reads JSON from standard input, either one object or one object per line
(what `ovmd -l` prints, so `ovmd -l | ovm-template-config --stdin configure` works);
--input FD reads one JSON object from file descriptor FD until EOF, and --output FD
writes the final params as one JSON object to FD when the run ends. Without an input
option the params come from the running ovmd's cache.

--enumerate prints a JSON list with one entry per enabled module of TARGET, in run order:
[priority, name, [descriptor, ...]] (Oracle's shape).

exit status:
  0  every module succeeded, with or without warnings (or the enumeration/dry run
     worked)
  1  at least one module failed (the others still ran); each failure is one line
     "NAME failed: REASON" on stderr. Also: the system refused a write of the
     runner's own (a full disk); the next run resumes after the completed modules
  2  bad usage or invalid params (a required key missing, a value outside its
     choices or refused by the module's own validation, a check against the guest),
     or the runner's own files lead out of --root: nothing was run; one line
     "MODULE: KEY: REASON" per problem on stderr
  3  the params were to come from ovmd, and ovmd is not reachable
  4  --initial-config: INITIAL_CONFIG is not yes (the guest is already configured):
     nothing was run. (With --console-input the dialog exits 0 instead.)
  5  another run of the same root held the run lock for longer than --lock-timeout
     (or the lock cannot be opened): nothing was run
  130 interrupted

first boot: --initial-config runs TARGET only while INITIAL_CONFIG=yes (in
/etc/sysconfig/ovm-template-initial-config, else /etc/sysconfig/ovmd), checked under the
run lock, and sets INITIAL_CONFIG=no in both files (those that exist) when every module
succeeded. ovmd runs `--initial-config --input FD --output FD configure` when the host's
parameters arrive; ovm-template-initial-config.service runs `--console-input
--initial-config configure`, which exits 0 at once if the guest is configured, prefills
its questions from ovmd's cache (keys already known are not asked), and stops prompting
("configured by the host; console dialog stopped", exit 0) as soon as the message path
sets INITIAL_CONFIG=no. Whichever completes first wins; the other stands down.

validation: before any module starts, every value is checked: every module's
descriptors (required, choices, depends, requires) and, for the standard modules,
their own validators and checks against the guest (an account, a time zone, a network
device). All problems are listed at once; nothing is changed. A required key that an
earlier successful run of TARGET applied counts as given (not with --initial-config).

warnings: a module that did its work but could not do all of it (a setting ignored, a
command that cannot work on this guest, such as hwclock without a hardware clock)
reports warnings: "NAME: warning: TEXT" on stderr, in the run report and the log; the
run still succeeds (ovmd --status says "done (degraded)").

run lock: every run that can change the system (not --dry-run or --enumerate) holds an
exclusive lock on /run/ovmd/run.lock for its whole duration; a second run of the same
root waits for it, up to --lock-timeout seconds.

before the params: what needs no params starts at once, before the params are read:
the imports, the enumeration, and the modules' prepare work (the ssh module generates
its host keys into a private staging directory under /run/ovmd/runners, removed when
the run ends). ovmd starts its first-boot run that way before the host's params have
come; terminated (SIGTERM) or given end of file on --input before any params, the
command exits at once and leaves nothing behind.

--changed-only runs only the modules whose params changed since they last succeeded
(one of the keys they declare was added or changed; a secret, such as the root
password, counts as changed whenever it is given); the others are skipped. ovmd runs
configure that way when params arrive during a run and for the host's reconfig event.

new module: --new-module NAME [--dest DIR] [--priority N] [--vendor-prefix PREFIX]
[--force] creates DIR/ovm-template-config-NAME/ (the module script, an RPM spec, a
Makefile and a README) and prints the files written.
"""


def _parser() -> argparse.ArgumentParser:
    import argparse

    parser = argparse.ArgumentParser(
        prog="ovm-template-config", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the template-configuration modules enabled for TARGET "
                    "(configure, unconfigure, reconfigure, cleanup, suspend, resume, "
                    "migrate, shutdown) in priority order.")
    parser.add_argument("target", metavar="TARGET", nargs="?")
    parser.add_argument("-e", "--enumerate", action="store_true",
                        help="print the parameters the modules of TARGET take (JSON)")
    parser.add_argument("--human-readable", action="store_true",
                        help="with --enumerate: print a readable table instead of JSON")
    parser.add_argument("-s", "--script", metavar="NAME",
                        help="run (or enumerate) only the module NAME")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--stdin", action="store_true",
                        help="read the params as JSON from standard input")
    source.add_argument("--input", metavar="FD", type=int,
                        help="read the params as one JSON object from file descriptor FD")
    source.add_argument("--ovf-transport-iso", metavar="DEVICE|FILE", nargs="?",
                        const="",
                        help="read the params from an OVF environment (ISO image, device "
                             "or ovf-env.xml; default: the CD-ROM, /dev/cdrom)")
    parser.add_argument("--console-input", action="store_true",
                        help="prompt on the console for the params (passwords without echo)")
    parser.add_argument("--output", metavar="FD", type=int,
                        help="write the final params as one JSON object to file descriptor FD")
    parser.add_argument("--root", metavar="DIR", default="/",
                        help="configure the guest tree under DIR instead of / (default /)")
    parser.add_argument("--dry-run", action="store_true",
                        help="run the modules in plan mode and print what would change "
                             "(diffs and commands); nothing is touched")
    parser.add_argument("--json", action="store_true",
                        help="print a machine-readable run report on standard output")
    parser.add_argument("--timeout", metavar="SECS", type=float, default=DEFAULT_TIMEOUT,
                        help="kill a module that runs longer than SECS (default %g)"
                             % DEFAULT_TIMEOUT)
    parser.add_argument("--initial-config", action="store_true",
                        help="first boot: run only if INITIAL_CONFIG=yes (else exit 4, or 0 "
                             "with --console-input), then set INITIAL_CONFIG=no")
    parser.add_argument("--changed-only", action="store_true",
                        help="run only the modules whose params changed since they last "
                             "succeeded (a reconfiguration); the others are skipped")
    parser.add_argument("--lock-timeout", metavar="SECS", type=float,
                        default=DEFAULT_LOCK_TIMEOUT,
                        help="wait at most SECS for another run of the same root to finish "
                             "(default %g; 0: do not wait)" % DEFAULT_LOCK_TIMEOUT)
    parser.add_argument("--new-module", metavar="NAME",
                        help="create the skeleton of a new module NAME in DIR (--dest DIR, "
                             "default .) and exit; see 'new module' below")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


#: The command lines ovmd and the units use, parsed without argparse (importing it and
#: building the parser would be a cost of every first boot): option -> (attribute, type or
#: None for a flag). Anything else (abbreviations, --help, repeated or conflicting options, a value
#: that starts with "-", ...) goes to argparse, which gives the same result or message.
_FAST_OPTIONS = {
    "-e": ("enumerate", None), "--enumerate": ("enumerate", None),
    "--human-readable": ("human_readable", None),
    "-s": ("script", str), "--script": ("script", str),
    "--stdin": ("stdin", None), "--input": ("input", int),
    "--console-input": ("console_input", None), "--output": ("output", int),
    "--root": ("root", str), "--dry-run": ("dry_run", None), "--json": ("json", None),
    "--timeout": ("timeout", float), "--initial-config": ("initial_config", None),
    "--lock-timeout": ("lock_timeout", float), "--changed-only": ("changed_only", None),
}


class _Args:
    """What ``_parser().parse_args()`` returns, for the command lines :func:`_fast_args`
    understands (the same attributes and defaults)."""

    def __init__(self) -> None:
        self.target: Optional[str] = None
        self.enumerate = self.human_readable = self.stdin = self.console_input = False
        self.dry_run = self.json = self.initial_config = self.version = False
        self.changed_only = False
        self.script: Optional[str] = None
        self.input: Optional[int] = None
        self.output: Optional[int] = None
        self.ovf_transport_iso: Optional[str] = None
        self.root = "/"
        self.timeout = DEFAULT_TIMEOUT
        self.lock_timeout = DEFAULT_LOCK_TIMEOUT
        self.new_module: Optional[str] = None


def _fast_args(argv: List[str]) -> Optional[_Args]:
    """``argv`` parsed as argparse would, if it is a plain command line; else None."""
    args = _Args()
    seen = set()
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if not arg.startswith("-"):
            if args.target is not None:
                return None
            args.target = arg
            continue
        name, equals, value = arg.partition("=")
        option = _FAST_OPTIONS.get(name)
        if option is None or name in seen or (equals and not name.startswith("--")):
            return None
        seen.add(name)
        attribute, kind = option
        if kind is None:
            if equals:
                return None
            setattr(args, attribute, True)
            continue
        if not equals:
            if index >= len(argv):
                return None
            value = argv[index]
            index += 1
        if value.startswith("-"):
            return None
        try:
            setattr(args, attribute, kind(value))
        except ValueError:
            return None
    if len(seen & {"-e", "--enumerate"}) > 1 or len(seen & {"-s", "--script"}) > 1 \
            or ("--stdin" in seen and "--input" in seen):
        return None
    return args


def _print_outcome_line(outcome: ModuleOutcome, stream: TextIO) -> None:
    module = outcome.module
    notes = []
    if outcome.resumed:
        notes.append("already done before an interruption")
    if outcome.warnings:
        notes.append("%d warning%s" % (len(outcome.warnings),
                                       "" if len(outcome.warnings) == 1 else "s"))
    stream.write("%-7s %2d %-20s %7.3f s%s\n" % (
        outcome.status, module.priority, module.name, outcome.seconds,
        " (%s)" % ", ".join(notes) if notes else ""))
    stream.flush()


def main(argv: Optional[List[str]] = None) -> int:
    """The ``ovm-template-config`` command; returns (and, as a script, exits with) the
    exit status documented in ``--help``."""
    code = _main(sys.argv[1:] if argv is None else argv)
    if argv is None:
        # Everything imported (the runner preloads what modules import) lives until the
        # end anyway: spare the interpreter its last cyclic collection over all of it.
        import gc
        gc.freeze()
        sys.exit(code)
    return code


def _new_module(argv: List[str]) -> int:
    """``--new-module NAME [SDK options]``: the SDK's own command line."""
    rest = []
    for arg in argv:
        if arg == "--new-module":
            continue
        rest.append(arg[len("--new-module="):] if arg.startswith("--new-module=") else arg)
    from templateconfig.sdk import main as sdk_main
    return sdk_main(rest)


def _print_version() -> int:
    from templateconfig import __version__
    print("ovm-template-config %s" % __version__)
    return EXIT_OK


def _main(argv: List[str]) -> int:
    if argv == ["--version"]:
        return _print_version()
    if any(arg == "--new-module" or arg.startswith("--new-module=") for arg in argv) \
            and "-h" not in argv and "--help" not in argv:
        return _new_module(argv)
    args: Arguments
    fast = _fast_args(argv)
    if fast is None or not fast.target or fast.timeout <= 0 or fast.lock_timeout < 0:
        parsed = _parse(argv)
        if isinstance(parsed, int):
            return parsed
        args = parsed
    else:
        args = fast
    _log_errors_to_stderr()
    import signal
    signal.signal(signal.SIGTERM, _interrupt)
    return _command(args)


def _parse(argv: List[str]) -> Union[Arguments, int]:
    """``argv`` through argparse: the parsed arguments, or the exit status (usage errors
    and ``--help`` exit from argparse itself)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        return _print_version()
    if not args.target:
        parser.print_usage(sys.stderr)
        sys.stderr.write("ovm-template-config: error: TARGET is required\n")
        return EXIT_USAGE
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.lock_timeout < 0:
        parser.error("--lock-timeout must not be negative")
    return args


def _command(args: Arguments) -> int:
    """Run (or enumerate) as ``args`` say; the exit status documented in ``--help``."""
    from ovmd.paths import Paths
    from templateconfig.run.runner import Runner

    assert args.target, "the parsing refused a command line without TARGET"
    paths = Paths(args.root)
    listing = args.enumerate or args.human_readable
    first_boot = None
    runner: Optional[Runner] = None
    waiting = True  # no params yet: terminated now, an early start leaves quietly
    try:
        if args.initial_config:
            from templateconfig.run.firstboot import FirstBootRun
            first_boot = FirstBootRun(paths, console=args.console_input, dry_run=args.dry_run)
            if args.console_input and not listing:
                first_boot.begin()
        runner = Runner(paths, args.target, timeout=args.timeout, dry_run=args.dry_run,
                        only=args.script, lock_timeout=args.lock_timeout,
                        first_boot=bool(args.initial_config),
                        changed_only=args.changed_only)
        runner.on_lock_wait = functools.partial(_say_lock_wait, args.lock_timeout)
        if listing:
            return _enumerate(runner, args)
        runner.start_early()
        params = _gather(runner, args, paths, first_boot)
        waiting = False
        result = _run(runner, args, params, first_boot)
    except KeyboardInterrupt:
        if not (waiting and args.input is not None):
            sys.stderr.write("ovm-template-config: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:
        code = _stopped(exc, args)
        if code is None:
            raise
        return code
    finally:
        if first_boot is not None:
            first_boot.stop_watching()
        if runner is not None:
            runner.close()
    for problem in runner.problems:
        sys.stderr.write("ovm-template-config: warning: %s\n" % problem)
    return _finish(runner, result, args)


def _stopped(exc: Exception, args: Arguments) -> Optional[int]:
    """Say why the command stopped before or instead of a run; its exit status (None: not
    an error of ours, to be raised on). The error classes are imported here, where one of
    them was raised, not on every run's start-up."""
    from templateconfig.run.firstboot import FirstBootOver
    from templateconfig.run.lock import LockError
    from templateconfig.run.params import DaemonUnreachable, ParamsError
    from templateconfig.run.runner import RunnerError, ValidationError

    if isinstance(exc, ValidationError):
        # one line per problem, then what happened; the report too with --json
        for problem in exc.problems:
            sys.stderr.write("ovm-template-config: %s\n" % problem)
        sys.stderr.write("ovm-template-config: %s\n" % exc)
        if args.json and exc.report is not None:
            import json
            sys.stdout.write(json.dumps(exc.report, indent=2, sort_keys=True) + "\n")
        return EXIT_USAGE
    if isinstance(exc, FirstBootOver):
        stream = sys.stdout if exc.exit_status == EXIT_OK else sys.stderr
        stream.write("ovm-template-config: %s\n" % exc)
        return exc.exit_status
    if isinstance(exc, DaemonUnreachable):
        sys.stderr.write("ovm-template-config: cannot get the params from ovmd: %s\n" % exc)
        return EXIT_NO_DAEMON
    codes = ((LockError, EXIT_LOCK_TIMEOUT),
             (RunnerError, EXIT_USAGE),  # a ValidationError too: nothing was run
             (ParamsError, EXIT_USAGE))
    for kind, code in codes:
        if isinstance(exc, kind):
            sys.stderr.write("ovm-template-config: %s\n" % exc)
            return code
    if isinstance(exc, OSError):
        # the system refused a write of the runner's own (a full disk, a read-only root):
        # the run stopped where it was; what completed is in the run state
        where = " %s:" % exc.filename if exc.filename else ""
        sys.stderr.write("ovm-template-config: the run stopped:%s %s; free the space (or "
                         "fix the file system) and run again: it resumes after the modules "
                         "that completed\n" % (where, exc.strerror or exc))
        return EXIT_MODULE_FAILED
    return None


def _gather(runner: Runner, args: Arguments, paths: Paths,
            first_boot: Optional[FirstBootRun]) -> Dict[str, Any]:
    """The run's params, from the source the command line names."""
    from templateconfig.run.params import gather_params

    try:
        return gather_params(runner, paths, stdin=args.stdin, input_fd=args.input,
                             ovf=args.ovf_transport_iso, console=args.console_input,
                             first_boot=first_boot is not None,
                             cancel=first_boot.cancel if first_boot is not None else None)
    finally:
        if first_boot is not None:
            first_boot.stop_watching()


def _run(runner: Runner, args: Arguments, params: Dict[str, Any],
         first_boot: Optional[FirstBootRun]) -> RunResult:
    on_module = None if args.json else functools.partial(_print_outcome_line,
                                                         stream=sys.stdout)
    if first_boot is not None:
        return first_boot.run(runner, params, on_module)
    return runner.run(params, on_module=on_module)


def _say_lock_wait(lock_timeout: float, pid: Optional[int]) -> None:
    sys.stderr.write("ovm-template-config: another run of this root (pid %s) is in progress; "
                     "waiting up to %g s for it to finish\n"
                     % (pid if pid is not None else "unknown", lock_timeout))


def _log_errors_to_stderr() -> None:
    """Errors on stderr; the run's progress goes to the run log
    (:mod:`templateconfig.run.runlog`), and module failures are printed once, at the end."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("ovm-template-config: %(message)s"))
    logging.getLogger().addHandler(handler)


def _interrupt(signum: int, frame: Optional[FrameType]) -> None:
    raise KeyboardInterrupt("signal %d" % signum)


def _enumerate(runner: Runner, args: Arguments) -> int:
    enumeration = runner.enumerate()
    for name, error in runner.enumerate_errors.items():
        sys.stderr.write("ovm-template-config: %s: %s\n" % (name, error))
    if args.human_readable:
        from templateconfig.descriptors import format_human_readable
        text = format_human_readable(enumeration)
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        import json
        json.dump([[priority, name, descs] for priority, name, descs in enumeration],
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    return EXIT_MODULE_FAILED if runner.enumerate_errors else EXIT_OK


def _finish(runner: Runner, result: RunResult, args: Arguments) -> int:
    import json

    from ovmd.runreport import ModuleStatus

    redact = runner.redact
    if args.dry_run:
        _print_plan(result, args.json, redact)
    elif args.json:
        sys.stdout.write(json.dumps(result.report, indent=2, sort_keys=True) + "\n")
    for outcome in result.outcomes:
        for warning in outcome.warnings:
            sys.stderr.write("ovm-template-config: %s: warning: %s\n"
                             % (outcome.module.name, redact(warning)))
        if outcome.status == ModuleStatus.FAILED:
            sys.stderr.write("ovm-template-config: %s failed: %s\n"
                             % (outcome.module.name, redact(outcome.error or "")))
    if args.output is not None:
        try:
            _write_output(args.output, result.params)
        except OSError as exc:
            sys.stderr.write("ovm-template-config: --output %d: %s\n"
                             % (args.output, exc.strerror or exc))
            return EXIT_MODULE_FAILED
    return EXIT_OK if result.ok else EXIT_MODULE_FAILED


def _print_plan(result: RunResult, as_json: bool, redact: Callable[[str], str]) -> None:
    """The dry run's plan: the diffs and commands, or the report with a ``plan``."""
    import json

    from ovmd.runreport import ModuleStatus
    from templateconfig.run.plan import plan_json, render_plan

    planned = [(o.module.name, o.actions) for o in result.outcomes
               if o.status == ModuleStatus.OK]
    skipped = [(o.module.name, (o.error or "") if o.status == ModuleStatus.SKIPPED
                else "failed: %s" % o.error)
               for o in result.outcomes if o.status != ModuleStatus.OK]
    if as_json:
        report = dict(result.report)
        report["plan"] = plan_json(planned, skipped)
        sys.stdout.write(redact(json.dumps(report, indent=2, sort_keys=True)) + "\n")
    else:
        sys.stdout.write(redact(render_plan(planned, skipped)))


def _write_output(fd: int, params: Dict[str, Any]) -> None:
    import json

    data = (json.dumps(params, sort_keys=True) + "\n").encode("utf-8")
    with os.fdopen(fd, "wb", closefd=True) as handle:
        handle.write(data)
