"""The ``ovmd`` command: Oracle's flags, the daemon, and the client of a running daemon.

Shell scripts call ``ovmd -g KEY`` often during boot, so the common client flags
(the requests marked ``fast`` in :data:`ovmd.control.REQUESTS`: ``-g -l -p -r -x -e``,
optionally after ``--root DIR``) go through a tiny hand-written dispatcher that imports
nothing but ``ovmd.paths`` and ``ovmd.control`` (which uses ``_socket``, not ``socket``):
no argparse, json or logging. Everything else, ``--help`` included, goes through
argparse in :func:`full_main`. Both take the request flags from the one table,
:data:`~ovmd.control.REQUESTS`, and the fast path accepts only command lines that
argparse reads the same way.
"""
from __future__ import annotations

import os
import sys

from .control import REQUEST_NAMES, REQUESTS, ControlClient, ControlError, Request

TYPE_CHECKING = False  # typing costs start-up time; type checkers read this as True
if TYPE_CHECKING:
    import argparse

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION = 4

#: ``-p`` values longer than this many characters (perhaps over 8192 bytes in UTF-8) are
#: checked against the channel's limits before anything is sent.
_CHECK_LOCALLY = 2048

#: flag -> request, for the requests the fast path handles
_FAST_ACTIONS = {flag: request for request in REQUESTS if request.fast
                 for flag in request.flags}
#: option flag -> the request it goes with, for those requests
_FAST_OPTIONS = {flag: request for request in REQUESTS if request.fast
                 for flag, _ in request.options}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    fast = _fast_parse(args)
    if fast is None:
        return full_main(args)
    root, request = fast
    if _refuse_root(root, args):
        return EXIT_USAGE
    if request[0] == "status":
        return _status(root, request[1:])
    return _call_daemon(root, request)


def _refuse_root(root: str, args: list[str]) -> bool:
    """True (after saying why) if ``root`` is not a guest root (:func:`ovmd.paths.root_problem`)."""
    from .paths import ROOT_ENV, check_root

    given = any(arg == "--root" or arg.startswith("--root=") for arg in args)
    message = check_root("ovmd", root, "--root" if given else ROOT_ENV)
    if message is None:
        return False
    _write(2, message.encode("utf-8", "surrogateescape"))
    return True


def _fast_parse(args: list[str]) -> tuple[str, list[str]] | None:
    """(root, request) for the common client flags, or None to use argparse.

    A separate argument starting with ``-`` is left to argparse, which may read it as an
    option (``-g -x`` is a usage error there, not a request for the key ``-x``).
    """
    root = os.environ.get("OVM_TEMPLATE_CONFIG_ROOT") or "/"
    request: list[str] | None = None
    options: list[str] = []
    index = 0
    while index < len(args):
        arg, value = args[index], None
        index += 1
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        if arg in _FAST_OPTIONS:
            if value is not None or arg in options:
                return None
            options.append(arg)
            continue
        action = _FAST_ACTIONS.get(arg)
        if arg != "--root" and (action is None or request is not None):
            return None
        if action is not None and action.metavar is None:
            if value is not None:
                return None
            request = [action.name]
            continue
        if value is None:
            if index >= len(args) or args[index].startswith("-"):
                return None
            value = args[index]
            index += 1
        if action is None:
            root = value
        elif not action.pair:
            request = [action.name, value]
        elif "=" in value:
            request = [action.name] + value.split("=", 1)
        else:
            return None  # KEY alone: argparse's path reads the value from stdin
    if request is None:
        return None
    if options:
        owner = REQUEST_NAMES[request[0]]
        if any(_FAST_OPTIONS[option] is not owner for option in options):
            return None
        request += [flag.lstrip("-") for flag, _ in owner.options if flag in options]
    return root, request


def _call_daemon(root: str, request: list[str], timeout: float | None = None) -> int:
    from .paths import Paths

    if request[0] == "set" and len(request) == 3 and len(request[2]) > _CHECK_LOCALLY:
        # a long value: say what the limit is here rather than send megabytes
        from .channel import MessageError, check_message

        try:
            check_message(request[1], request[2])
        except MessageError as refused:
            _write(2, ("ovmd: %s\n" % refused).encode("utf-8", "backslashreplace"))
            return EXIT_FAILURE
    if request[0] == "event":
        # bad usage is said as such, whether or not a daemon answers
        from .channel import UnknownEvent, event_number

        try:
            event_number(request[1])
        except UnknownEvent as unknown:
            _write(2, ("ovmd: %s\n" % unknown).encode("utf-8", "backslashreplace"))
            return EXIT_USAGE
    client = ControlClient(Paths(root).control_socket, timeout=timeout)
    try:
        code, out, err = client.call(*request)
    except ControlError as error:
        _write(2, (str(error) + "\n").encode("utf-8"))
        return error.code
    if request[0] == "get" and code == 0:
        out += b"\n"
    if out:
        _write(1, out)
    if err:
        _write(2, err)
    return code


def _write(fd: int, data: bytes) -> None:
    stream = sys.stdout if fd == 1 else sys.stderr
    stream.flush()
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        pass


EPILOG = """\
With no action flag, ovmd runs the daemon (daemonized, unless --foreground).

exit codes:
  0  success (--status: done, or not finished yet)
  1  failure: key not found (-g, -r), request refused (bad key/value, run in
     progress), target failed (-s), first-boot configuration failed (--status),
     daemon cannot start (already running, ovmapi module loaded)
  2  usage error; --status: done but degraded (a module reported warnings or an
     error), as `cloud-init status` (>= 23.4) uses it
  3  the ovmd daemon is not running (no listener on the control socket)
  4  permission denied on the control socket (run as root)
-s TARGET exits with the runner's status (ovm-template-config(8): 0 done, with or
without warnings; 1 a module failed; 2 bad usage or invalid params, its messages on
stderr; 5 the run lock was busy) and prints this run's modules, each with its state,
one-line reason and warnings.

-l prints one JSON object per line, {"key": "value"}, sorted by key, secrets
included (root-only), so that `ovmd -l | ovm-template-config --stdin configure`
works. -g prints the raw value followed by a newline.
-t/--time-period is accepted for compatibility with Oracle's ovmd, whose daemon
polled every SECS seconds; this ovmd is event-driven and ignores it (the first-boot
delay is --quiet-period).

first boot: with INITIAL_CONFIG=yes, configure runs once the root password has come
and no message arrived for the quiet period. Params that arrive while it runs are not
lost: configure runs again for them (only the modules whose params changed), and the
host hears `done` (or the failure) once a run had the newest params. On a configured
guest params are stored, not applied, until the host sends the reconfig event
(VMAPIEvent 8): then configure runs for the params that changed.
lifecycle: the host's VMAPIEvent shutdown (4) runs the shutdown target, migrate (2)
the migrate target, with the cached params; when the guest itself shuts down (not when
ovmd alone is stopped or restarted) the daemon runs the shutdown target before it
exits, at most SHUTDOWN_TIMEOUT seconds. A target with no module linked starts nothing.

sealing: --seal runs the cleanup target, removes ovmd's cache and secrets, the run log,
report and state, and sets INITIAL_CONFIG=yes, printing each removal; a running daemon
does it (then it reads no host messages and runs nothing until the guest shuts down),
else ovmd itself, e.g. on a mounted disk image: ovmd --seal --root /mnt, which changes
nothing outside /mnt. --seal --dry-run shows it all and changes nothing.

/etc/sysconfig/ovmd: QUIET_PERIOD=SECS (--quiet-period wins); DETECT_CLONE=yes (re-arm
first boot when the guest starts as another VM than the one configured last);
SHUTDOWN_TIMEOUT=SECS (default 30); OVMD_OPTIONS, the options ovmd.service and the
SysV script start the daemon with.
"""


def build_parser() -> argparse.ArgumentParser:
    import argparse

    from . import __version__
    from .argtypes import seconds

    parser = argparse.ArgumentParser(
        prog="ovmd", description="Oracle VM guest agent: receives host messages through "
        "XenStore, caches them, and runs first-boot configuration.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_mutually_exclusive_group()
    for request in REQUESTS:
        if not request.flags:
            continue
        if request.metavar is None:
            actions.add_argument(*request.flags, action="store_true", help=request.help)
        else:
            actions.add_argument(*request.flags, metavar=request.metavar, help=request.help,
                                 action="append" if request.repeat else "store")
    actions.add_argument("--enable-initial-config", action="store_true",
                         help="set INITIAL_CONFIG=yes (run configure on the next boot)")
    actions.add_argument("--disable-initial-config", action="store_true",
                         help="set INITIAL_CONFIG=no")
    actions.add_argument("--seal", action="store_true",
                         help="seal this VM (with --root: the guest tree there, e.g. a "
                         "mounted disk image) as a template: run the cleanup target, "
                         "remove ovmd's cache and secrets, the run log and run state, set "
                         "INITIAL_CONFIG=yes; prints what it removed")
    actions.add_argument("-v", "--version", action="version", version="ovmd " + __version__)
    for request in REQUESTS:
        for flag, text in request.options:
            parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("-d", "--debug", type=int, choices=(0, 1, 2), default=2,
                        help="daemon logging: 0 off, 1 stderr, 2 syslog (default)")
    parser.add_argument("-f", "--pid-file", metavar="FILE",
                        help="daemon pid file (default /run/ovmd/ovmd.pid under --root)")
    parser.add_argument("-t", "--time-period", metavar="SECS", type=float,
                        help="accepted for compatibility; ignored (event-driven)")
    parser.add_argument("--foreground", action="store_true",
                        help="do not daemonize (systemd Type=notify; READY=1 is sent to "
                        "$NOTIFY_SOCKET)")
    parser.add_argument("--quiet-period", metavar="SECS", type=seconds, default=None,
                        help="first boot: wait this long after the last message before "
                        "running configure (default: QUIET_PERIOD in /etc/sysconfig/ovmd, "
                        "else 0.1)")
    parser.add_argument("--root", metavar="DIR", default=os.environ.get(
                        "OVM_TEMPLATE_CONFIG_ROOT") or "/",
                        help="locate every path under DIR (exported to children as "
                        "OVM_TEMPLATE_CONFIG_ROOT)")
    parser.add_argument("--xenstore", metavar="PATH",
                        help="XenStore socket or device (default: $XENSTORED_PATH, "
                        "/var/run/xenstored/socket, /dev/xen/xenbus)")
    parser.add_argument("--verbose", action="store_true", help="daemon: log debug messages")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --seal: show what it would run and remove, change "
                        "nothing")
    return parser


def client_requests(options: argparse.Namespace) -> list[list[str]]:
    """The requests to send to the daemon for the request flags argparse found, with
    their options (none for a daemon command line)."""
    for request in REQUESTS:
        if not request.flags:
            continue
        value = getattr(options, request.dest)
        if value is None or value is False:
            continue
        if request.metavar is None:
            return [[request.name] + [name for name in request.option_names()
                                      if getattr(options, name)]]
        return [_request_line(request, item) for item in (value if request.repeat else [value])]
    return []


def _stray_options(options: argparse.Namespace, requests: list[list[str]]) -> list[str]:
    """Option flags given without the request flag they go with."""
    sent = {requests[0][0]} if requests else set()
    return [flag for request in REQUESTS if request.name not in sent
            for flag, _ in request.options if getattr(options, flag.lstrip("-"))]


def _daemon_options(options: argparse.Namespace) -> list[tuple[str, bool]]:
    """(flag, given) of the options only the daemon uses. ``-d`` and ``-t`` are not among
    them: Oracle's command lines give them with any flag (they do nothing there)."""
    return [("--foreground", options.foreground), ("--verbose", options.verbose),
            ("--pid-file", options.pid_file is not None),
            ("--quiet-period", options.quiet_period is not None),
            ("--xenstore", options.xenstore is not None)]


def _action_flag(args: list[str]) -> str:
    """The action flag on the command line, as given (for a message)."""
    names = {flag for request in REQUESTS for flag in request.flags} | {
        "--enable-initial-config", "--disable-initial-config", "--seal"}
    return next((arg.split("=", 1)[0] for arg in args if arg.split("=", 1)[0] in names),
                "an action flag")


def _request_line(request: Request, value: str) -> list[str]:
    if not request.pair:
        return [request.name, value]
    if "=" in value:
        return [request.name] + value.split("=", 1)
    # -p KEY: the value comes from stdin, so a secret stays off the command line
    return [request.name, value, _read_value(value)]


def _read_value(key: str) -> str:
    """The value of ``-p KEY``: from a terminal, asked for without echo (a secret stays
    off the screen too); else all of stdin, one trailing newline removed. Bytes that are
    not UTF-8 are kept (the daemon refuses them with a clear message)."""
    if sys.stdin.isatty():
        import getpass

        try:
            return getpass.getpass("value for %s (not shown): " % key)
        except (EOFError, KeyboardInterrupt):
            sys.stderr.write("\n")
            raise SystemExit("ovmd: -p %s: no value given; nothing sent" % key) from None
    text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    return text[:-1] if text.endswith("\n") else text


def full_main(args: list[str]) -> int:
    parser = build_parser()
    options = parser.parse_args(args)
    root = options.root
    if _refuse_root(root, args):
        return EXIT_USAGE
    if root not in ("", "/"):
        os.environ["OVM_TEMPLATE_CONFIG_ROOT"] = os.path.abspath(root)
    requests = client_requests(options)
    stray = _stray_options(options, requests)
    if stray:
        parser.error("%s go%s with %s" % (" and ".join(stray), "es" if len(stray) == 1 else "",
                                          "--status"))
    acting = (requests or options.seal or options.enable_initial_config
              or options.disable_initial_config)
    daemon_only = [flag for flag, given in _daemon_options(options) if given]
    if acting and daemon_only:
        parser.error("%s go%s with running the daemon (no action flag), not with %s"
                     % (" and ".join(daemon_only), "es" if len(daemon_only) == 1 else "",
                        _action_flag(args)))
    if options.dry_run and not options.seal:
        parser.error("--dry-run goes with --seal")
    if options.seal:
        from .paths import Paths
        from .seal import seal

        return seal(Paths(root), options.dry_run)
    if requests and requests[0][0] == "status":
        return _status(root, requests[0][1:])
    if requests:
        code = EXIT_OK
        for request in requests:
            code = max(code, _call_daemon(root, request))
        return code
    if options.enable_initial_config or options.disable_initial_config:
        from .firstboot.flag import set_initial_config
        from .oserror import os_error
        from .paths import Paths

        try:
            files = set_initial_config(Paths(root), bool(options.enable_initial_config))
        except OSError as err:
            print("ovmd: cannot set INITIAL_CONFIG: %s" % os_error(err), file=sys.stderr)
            return EXIT_PERMISSION if isinstance(err, PermissionError) else EXIT_FAILURE
        print("INITIAL_CONFIG=%s in %s" % ("yes" if options.enable_initial_config else "no",
                                           ", ".join(files)))
        return EXIT_OK
    return run_daemon(options)


def _status(root: str, flags: list[str]) -> int:
    """``--status`` with its options (``json``, ``long``, ``wait``): the daemon's answer,
    or, with no daemon running, the status from the files; then the exit status is the
    status's own once first boot is done or failed (the files say all there is), else 3
    (not running: nothing will happen, and there is nothing to wait for)."""
    from .paths import Paths

    paths = Paths(root)
    try:
        code, out, err = ControlClient(paths.control_socket).call("status", *flags)
    except ControlError as error:
        if error.code != EXIT_NOT_RUNNING:
            _write(2, (str(error) + "\n").encode("utf-8"))
            return error.code
        from .status import BootStatus, compute_status, exit_code, status_text

        status = compute_status(paths, None)
        _write(1, status_text(status, "json" in flags, "long" in flags).encode("utf-8"))
        if status["status"] in (BootStatus.DONE, BootStatus.FAILED):
            return exit_code(status)
        _write(2, (str(error) + "\n").encode("utf-8"))
        return EXIT_NOT_RUNNING
    _write(1, out)
    if err:
        _write(2, err)
    return code


def _refuse_xenstore(option: str | None) -> str | None:
    """The error for a XenStore path the operator named (``--xenstore``, else
    ``$XENSTORED_PATH``) that cannot be one: it is missing, or not a socket or device.
    Fatal at start, unlike the default paths, which the daemon waits for (the xenbus
    device may appear after it starts), and unlike a socket nobody answers on yet."""
    from .xenstore.transport import path_problem

    named, source = (option, "--xenstore") if option else (
        os.environ.get("XENSTORED_PATH"), "XENSTORED_PATH=")
    if not named:
        return None
    problem = path_problem(named)
    if problem is None:
        return None
    return ("ovmd: %s%s%s: %s; give xenstored's socket (/var/run/xenstored/socket) or the "
            "guest's device (/dev/xen/xenbus), or leave it out to use those"
            % (source, "" if source.endswith("=") else " ", named, problem))


def run_daemon(options: argparse.Namespace) -> int:
    from .daemon import Daemon, DaemonError, LogSetup, PidFile, check_no_ovmapi
    from .paths import Paths
    from .secrets import RedactingFilter

    paths = Paths(options.root)
    refused = _refuse_xenstore(options.xenstore)
    if refused:
        print(refused, file=sys.stderr)
        return EXIT_FAILURE
    redactor = RedactingFilter()
    log_setup = LogSetup(options.debug, redactor, verbose=options.verbose)
    try:
        check_no_ovmapi(paths)
        pidfile = PidFile(options.pid_file or paths.pid_file,
                          None if options.pid_file else paths.root).acquire()
    except DaemonError as err:
        print("ovmd: %s" % err, file=sys.stderr)
        return EXIT_FAILURE
    except OSError as err:
        from .oserror import os_error

        print("ovmd: cannot start: %s" % os_error(err), file=sys.stderr)
        return EXIT_FAILURE

    def make_daemon() -> "Daemon":
        return Daemon(paths, xenstore_path=options.xenstore,
                      quiet_period=options.quiet_period, redactor=redactor,
                      log_setup=log_setup)

    if options.foreground:
        log_setup.install()
        try:
            return _serve(make_daemon)
        finally:
            pidfile.release()
    import daemon as python_daemon  # python-daemon; only when daemonizing

    context = python_daemon.DaemonContext(
        pidfile=pidfile, files_preserve=[pidfile.fd], signal_map={},
        working_directory="/", umask=0o022)
    with context:  # everything with a descriptor is created after the fork
        log_setup.install()
        return _serve(make_daemon)


def _serve(make_daemon) -> int:
    """Run the daemon; a file or directory it cannot use (an unreadable cache, a full
    disk at start) stops it with one line in its log and on stderr, not a traceback."""
    import logging

    from .oserror import os_error

    try:
        return make_daemon().run()
    except OSError as err:
        log = logging.getLogger("ovmd")
        message = "ovmd: cannot run: %s" % os_error(err)
        log.error("%s", message)
        log.debug("where it failed", exc_info=True)
        print(message, file=sys.stderr)
        return EXIT_FAILURE
