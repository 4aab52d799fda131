"""``ovm-template-config``: run a target's template-configuration modules.

Oracle's command line (REFERENCE §4) plus ``--root``, ``--dry-run``, ``--json`` and
``--timeout``. Where the params come from: ``--stdin``, ``--input FD`` (how ``ovmd``
runs us: secrets never on a command line), ``--ovf-transport-iso``, or, with none of
them, the running daemon's cache; ``--console-input`` then prompts on the console for
what is missing (alone, it starts from no params).

First boot (``--initial-config``, see :mod:`ovmd.firstboot`): the run happens
only while INITIAL_CONFIG=yes, under the run lock, and sets INITIAL_CONFIG=no when it
succeeded; with ``--console-input`` the dialog stands down as soon as the message path
configured the guest. ``--new-module NAME`` hands over to the module SDK
(:mod:`templateconfig.sdk`).

Start-up matters (this command runs on every first boot): nothing beyond ``os`` and
``sys`` is imported before the command line says what to do, and each path imports only
what it needs.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, Optional

EXIT_OK = 0
EXIT_MODULE_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_ALREADY_CONFIGURED = 4  # ovmd.firstboot.contract (not imported: --help stays cheap)
EXIT_LOCK_TIMEOUT = 5
EXIT_INTERRUPTED = 130

#: Keep in step with templateconfig.runner.DEFAULT_TIMEOUT and
#: templateconfig.runlock.DEFAULT_LOCK_TIMEOUT (not imported: --help must stay cheap;
#: tests check they agree).
DEFAULT_TIMEOUT = 300.0
DEFAULT_LOCK_TIMEOUT = 600.0

_EPILOG = """\
params: --stdin reads JSON from standard input, either one object or one object per line
(what `ovmd -l` prints, so `ovmd -l | ovm-template-config --stdin configure` works);
--input FD reads one JSON object from file descriptor FD until EOF, and --output FD
writes the final params as one JSON object to FD when the run ends. Without an input
option the params come from the running ovmd's cache.

--enumerate prints a JSON list with one entry per enabled module of TARGET, in run order:
[priority, name, [descriptor, ...]] (Oracle's shape).

exit status:
  0  every module succeeded (or the enumeration/dry run worked)
  1  at least one module failed (the others still ran)
  2  bad usage or invalid params (a required key missing, a value outside its
     choices): nothing was run
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

run lock: every run that can change the system (not --dry-run or --enumerate) holds an
exclusive lock on /run/ovmd/run.lock for its whole duration; a second run of the same
root waits for it, up to --lock-timeout seconds.

new module: --new-module NAME [--dest DIR] [--priority N] [--vendor-prefix PREFIX]
[--force] creates DIR/ovm-template-config-NAME/ (the module script, an RPM spec, a
Makefile and a README) and prints the files written.
"""


def _parser():
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
    parser.add_argument("--lock-timeout", metavar="SECS", type=float,
                        default=DEFAULT_LOCK_TIMEOUT,
                        help="wait at most SECS for another run of the same root to finish "
                             "(default %g; 0: do not wait)" % DEFAULT_LOCK_TIMEOUT)
    parser.add_argument("--new-module", metavar="NAME",
                        help="create the skeleton of a new module NAME in DIR (--dest DIR, "
                             "default .) and exit; see 'new module' below")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


#: The command lines ovmd and the units use, parsed without argparse (its import and
#: the parser cost ~4 ms of every first boot): option -> (attribute, type or None for a
#: flag). Anything else (abbreviations, --help, repeated or conflicting options, a value
#: that starts with "-", ...) goes to argparse, which gives the same result or message.
_FAST_OPTIONS = {
    "-e": ("enumerate", None), "--enumerate": ("enumerate", None),
    "--human-readable": ("human_readable", None),
    "-s": ("script", str), "--script": ("script", str),
    "--stdin": ("stdin", None), "--input": ("input", int),
    "--console-input": ("console_input", None), "--output": ("output", int),
    "--root": ("root", str), "--dry-run": ("dry_run", None), "--json": ("json", None),
    "--timeout": ("timeout", float), "--initial-config": ("initial_config", None),
    "--lock-timeout": ("lock_timeout", float),
}


class _Args:
    """What ``_parser().parse_args()`` returns, for the command lines :func:`_fast_args`
    understands (the same attributes and defaults)."""

    def __init__(self) -> None:
        self.target: Optional[str] = None
        self.enumerate = self.human_readable = self.stdin = self.console_input = False
        self.dry_run = self.json = self.initial_config = self.version = False
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


class UsageError(Exception):
    """Bad input: reported with exit status 2."""


def parse_params_text(text: str, source: str) -> Dict[str, Any]:
    """Params given as one JSON object, or as one JSON object per line (merged in order;
    ``ovmd -l`` prints ``{"key": "value"}`` lines). Blank lines are ignored."""
    import json

    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
        params: Dict[str, Any] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise UsageError("%s, line %d: not valid JSON (expected a JSON object, or "
                                 "one per line): %s" % (source, number, exc))
            if not isinstance(item, dict):
                raise UsageError("%s, line %d: expected a JSON object, got a JSON %s"
                                 % (source, number, type(item).__name__))
            params.update(item)
        return _check_params(params, source)
    if not isinstance(value, dict):
        raise UsageError("%s: expected a JSON object of key -> value, got a JSON %s"
                         % (source, type(value).__name__))
    return _check_params(value, source)


def _check_params(params: Dict[str, Any], source: str) -> Dict[str, Any]:
    for key, value in params.items():
        if isinstance(value, (dict, list)):
            raise UsageError("%s: the value of %s must be a string, not a JSON %s"
                             % (source, key, type(value).__name__))
    return params


def _read_fd(fd: int) -> str:
    try:
        with os.fdopen(fd, "rb", closefd=True) as handle:
            data = handle.read()
    except OSError as exc:
        raise UsageError("--input %d: cannot read: %s" % (fd, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError("--input %d: not UTF-8: %s" % (fd, exc))


def _params_from_daemon(paths, timeout: Optional[float] = None) -> Dict[str, Any]:
    from ovmd.control import EXIT_OK as DAEMON_OK
    from ovmd.control import ControlClient

    client = ControlClient(paths.control_socket, timeout=timeout)
    if hasattr(client, "list_params"):
        return dict(client.list_params())
    code, out, err = client.call("list")
    if code != DAEMON_OK:
        raise UsageError("ovmd -l failed: %s" % err.decode("utf-8", "replace").strip())
    return parse_params_text(out.decode("utf-8", "replace"), "ovmd's parameter cache")


def _write_output(fd: int, params: Dict[str, Any]) -> None:
    import json

    data = (json.dumps(params, sort_keys=True) + "\n").encode("utf-8")
    with os.fdopen(fd, "wb", closefd=True) as handle:
        handle.write(data)


def _print_outcome_line(outcome, stream) -> None:
    module = outcome.module
    stream.write("%-7s %2d %-20s %7.3f s%s\n" % (
        outcome.status, module.priority, module.name, outcome.seconds,
        " (already done before an interruption)" if outcome.resumed else ""))
    stream.flush()


def main(argv: Optional[List[str]] = None) -> int:
    """The ``ovm-template-config`` command; returns (and, as a script, exits with) the
    exit status documented in ``--help``."""
    code = _main(sys.argv[1:] if argv is None else argv)
    if argv is None:
        # Everything imported (the runner preloads what modules import) lives until the
        # end anyway: spare the interpreter's last cyclic collection over all of it
        # (~10 ms at exit).
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


def _main(argv: List[str]) -> int:
    if argv == ["--version"]:
        from templateconfig import __version__
        print("ovm-template-config %s" % __version__)
        return EXIT_OK
    if any(arg == "--new-module" or arg.startswith("--new-module=") for arg in argv) \
            and "-h" not in argv and "--help" not in argv:
        return _new_module(argv)
    args = _fast_args(argv)
    if args is None or not args.target or args.timeout <= 0 or args.lock_timeout < 0:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.version:
            from templateconfig import __version__
            print("ovm-template-config %s" % __version__)
            return EXIT_OK
        if not args.target:
            parser.print_usage(sys.stderr)
            sys.stderr.write("ovm-template-config: error: TARGET is required\n")
            return EXIT_USAGE
        if args.timeout <= 0:
            parser.error("--timeout must be positive")
        if args.lock_timeout < 0:
            parser.error("--lock-timeout must not be negative")
    _log_errors_to_stderr()
    import signal
    signal.signal(signal.SIGTERM, _interrupt)
    from ovmd.paths import Paths

    paths = Paths(args.root)
    watch = None
    if args.initial_config and args.console_input and not (args.enumerate or args.human_readable):
        # first-boot console dialog: watch first, then check, so no change is missed
        watch = _watch_sysconfig(paths)
        from ovmd.firstboot.flag import initial_config_enabled
        if not initial_config_enabled(paths):
            if watch is not None:
                watch.close()
            print("ovm-template-config: INITIAL_CONFIG is not yes: the guest is already "
                  "configured; nothing to do")
            return EXIT_OK
    from templateconfig.runlock import LockError
    from templateconfig.runner import Runner, RunnerError, ValidationError
    try:
        runner = Runner(paths, args.target, timeout=args.timeout, dry_run=args.dry_run,
                        only=args.script, lock_timeout=args.lock_timeout)
        runner.on_lock_wait = lambda pid: sys.stderr.write(
            "ovm-template-config: another run of this root (pid %s) is in progress; waiting "
            "up to %g s for it to finish\n" % (pid if pid is not None else "unknown",
                                                 args.lock_timeout))
        if args.enumerate or args.human_readable:
            return _enumerate(runner, args)
        try:
            params = _gather_params(runner, args, paths, watch)
        except _StoodDown:
            print("ovm-template-config: configured by the host; console dialog stopped")
            return EXIT_OK
        finally:
            if watch is not None:
                watch.close()
        on_module = None if args.json else (
            lambda outcome: _print_outcome_line(outcome, sys.stdout))
        if args.initial_config:
            result = _initial_config_run(runner, args, paths, params, on_module)
            if isinstance(result, int):
                return result
        else:
            result = runner.run(params, on_module=on_module)
    except LockError as exc:
        sys.stderr.write("ovm-template-config: %s\n" % exc)
        return EXIT_LOCK_TIMEOUT
    except ValidationError as exc:
        sys.stderr.write("ovm-template-config: %s\n" % exc)
        return EXIT_USAGE
    except (RunnerError, UsageError) as exc:
        sys.stderr.write("ovm-template-config: %s\n" % exc)
        return EXIT_USAGE
    except _DaemonUnreachable as exc:
        sys.stderr.write("ovm-template-config: cannot get the params from ovmd: %s\n" % exc)
        return EXIT_NO_DAEMON
    except KeyboardInterrupt:
        sys.stderr.write("ovm-template-config: interrupted\n")
        return EXIT_INTERRUPTED
    for problem in runner.problems:
        sys.stderr.write("ovm-template-config: warning: %s\n" % problem)
    return _finish(runner, result, args)


def _log_errors_to_stderr() -> None:
    """Errors on stderr; the run's progress goes to the log file (see report.py), and
    module failures are printed once, at the end."""
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.ERROR)
    handler.setFormatter(logging.Formatter("ovm-template-config: %(message)s"))
    logging.getLogger().addHandler(handler)


def _interrupt(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


class _DaemonUnreachable(Exception):
    pass


class _StoodDown(Exception):
    """The console dialog stopped: the guest was configured by the message path."""


def _watch_sysconfig(paths):
    from ovmd.firstboot.watch import SysconfigWatch
    try:
        return SysconfigWatch(paths)
    except OSError as exc:  # no sysconfig directory (then no INITIAL_CONFIG=yes either)
        import logging
        logging.getLogger(__name__).info("cannot watch the sysconfig files: %s", exc)
        return None


def _initial_config_run(runner, args, paths, params, on_module):
    """Run under the lock only if INITIAL_CONFIG is still yes; then set it to no. The
    RunResult, or an exit status when the guest turned out to be configured already."""
    from ovmd.firstboot.flag import initial_config_enabled, mark_configured

    if args.dry_run:  # touches nothing: no lock, no flag change
        if not initial_config_enabled(paths):
            sys.stderr.write("ovm-template-config: INITIAL_CONFIG is not yes: already "
                             "configured; nothing done\n")
            return EXIT_ALREADY_CONFIGURED
        return runner.run(params, on_module=on_module)
    with runner.run_lock():
        if not initial_config_enabled(paths):
            if args.console_input:
                print("ovm-template-config: configured by the host; console dialog stopped")
                return EXIT_OK
            sys.stderr.write("ovm-template-config: INITIAL_CONFIG is not yes: already "
                             "configured; nothing done\n")
            return EXIT_ALREADY_CONFIGURED
        result = runner.run(params, on_module=on_module)
        if result.ok:
            mark_configured(paths)
    return result


def _gather_params(runner, args, paths, watch=None) -> Dict[str, Any]:
    if args.stdin:
        params = parse_params_text(sys.stdin.read(), "standard input")
    elif args.input is not None:
        params = parse_params_text(_read_fd(args.input), "--input %d" % args.input)
    elif args.ovf_transport_iso is not None:
        from templateconfig.ovf import DEFAULT_OVF_DEVICE, OvfError, read_ovf_params
        try:
            params = read_ovf_params(args.ovf_transport_iso or DEFAULT_OVF_DEVICE)
        except OvfError as exc:
            raise UsageError(str(exc))
    elif args.console_input and args.initial_config:
        params = _cached_params_if_any(paths)  # prefill from ovmd when it runs
    elif args.console_input:
        params = {}
    else:
        from ovmd.control import ControlError
        try:
            params = _params_from_daemon(paths)
        except ControlError as exc:
            raise _DaemonUnreachable(str(exc))
    if args.console_input:
        from templateconfig.console import ConsoleCancelled, ConsoleError, prompt_params
        enumeration = [(name, descs) for _, name, descs in runner.enumerate()]
        known = set(params) if args.initial_config else ()
        try:
            params = prompt_params(enumeration, params, known=known, cancel=watch)
        except ConsoleCancelled:
            raise _StoodDown()
        except ConsoleError as exc:
            raise UsageError("console input: %s" % exc)
    return params


def _cached_params_if_any(paths) -> Dict[str, Any]:
    """ovmd's cached params, or none when the daemon is not reachable (the console
    dialog works without it)."""
    from ovmd.control import ControlError
    try:
        return _params_from_daemon(paths, timeout=5.0)
    except (ControlError, UsageError, OSError, ValueError) as exc:
        import logging
        logging.getLogger(__name__).info("no params from ovmd: %s", exc)
        return {}


def _enumerate(runner, args) -> int:
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


def _finish(runner, result, args) -> int:
    import json

    from ovmd.runreport import ModuleStatus

    redact = runner.redact
    if args.dry_run:
        from templateconfig.plan import plan_json, render_plan
        planned = [(o.module.name, o.actions) for o in result.outcomes
                   if o.status == ModuleStatus.OK]
        skipped = [(o.module.name, o.error if o.status == ModuleStatus.SKIPPED
                    else "failed: %s" % o.error)
                   for o in result.outcomes if o.status != ModuleStatus.OK]
        if args.json:
            report = dict(result.report)
            report["plan"] = plan_json(planned, skipped)
            sys.stdout.write(redact(json.dumps(report, indent=2, sort_keys=True)) + "\n")
        else:
            sys.stdout.write(redact(render_plan(planned, skipped)))
    elif args.json:
        sys.stdout.write(json.dumps(result.report, indent=2, sort_keys=True) + "\n")
    for outcome in result.outcomes:
        if outcome.status == ModuleStatus.FAILED:
            sys.stderr.write("ovm-template-config: module %s failed: %s\n"
                             % (outcome.module.name, redact(outcome.error or "")))
    if args.output is not None:
        try:
            _write_output(args.output, result.params)
        except OSError as exc:
            sys.stderr.write("ovm-template-config: --output %d: %s\n"
                             % (args.output, exc.strerror or exc))
            return EXIT_MODULE_FAILED
    return EXIT_OK if result.ok else EXIT_MODULE_FAILED
