"""The ``ovmd`` command: Oracle's flags, the daemon, and the client of a running daemon.

Shell scripts call ``ovmd -g KEY`` often during boot, so the common client flags
(``-g -l -p -r -x -e``, optionally after ``--root DIR``) go through a tiny hand-written
dispatcher that imports nothing but ``ovmd.paths`` and ``ovmd.control`` (which uses
``_socket``, not ``socket``): no argparse, json or logging. Everything else, ``--help``
included, goes through argparse in :func:`full_main`.
"""
from __future__ import annotations

import os
import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3
EXIT_PERMISSION = 4

_FAST_ACTIONS = {
    "-g": "get", "--get-param": "get",
    "-r": "delete", "--delete-param": "delete",
    "-e": "event", "--event": "event",
    "-p": "set", "--set-param": "set",
    "-l": "list", "--list-params": "list",
    "-x": "clear", "--delete-params": "clear",
}
_NO_ARGUMENT = ("list", "clear")


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    fast = _fast_parse(args)
    if fast is None:
        return full_main(args)
    root, request = fast
    return _call_daemon(root, request)


def _fast_parse(args):
    """(root, request) for the common client flags, or None to use argparse."""
    root = os.environ.get("OVM_TEMPLATE_CONFIG_ROOT") or "/"
    request = None
    index = 0
    while index < len(args):
        arg = args[index]
        value = None
        if arg.startswith("--") and "=" in arg:
            arg, value = arg.split("=", 1)
        if arg == "--root":
            if value is None:
                if index + 1 >= len(args):
                    return None
                index += 1
                value = args[index]
            root = value
        elif arg in _FAST_ACTIONS and request is None:
            action = _FAST_ACTIONS[arg]
            if action in _NO_ARGUMENT:
                if value is not None:
                    return None
                request = [action]
            else:
                if value is None:
                    if index + 1 >= len(args) or args[index + 1] == "--":
                        return None
                    index += 1
                    value = args[index]
                if action == "set":
                    if "=" not in value:
                        return None  # argparse path prints the proper error
                    request = ["set"] + value.split("=", 1)
                else:
                    request = [action, value]
        else:
            return None
        index += 1
    if request is None:
        return None
    return root, request


def _call_daemon(root: str, request, timeout=None) -> int:
    from .control import ControlClient, ControlError
    from .paths import Paths

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
  2  usage error; --status: done but degraded (a module reported an error),
     as `cloud-init status` (>= 23.4) uses it
  3  the ovmd daemon is not running (no listener on the control socket)
  4  permission denied on the control socket (run as root)

-l prints one JSON object per line, {"key": "value"}, sorted by key, secrets
included (root-only), so that `ovmd -l | ovm-template-config --stdin configure`
works. -g prints the raw value followed by a newline.
-t/--time-period is accepted for compatibility with Oracle's ovmd, whose daemon
polled every SECS seconds; this ovmd is event-driven and ignores it (the first-boot
delay is --quiet-period).
"""


def build_parser():
    import argparse

    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ovmd", description="Oracle VM guest agent: receives host messages through "
        "XenStore, caches them, and runs first-boot configuration.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_mutually_exclusive_group()
    actions.add_argument("-p", "--set-param", metavar="KEY=VALUE", action="append",
                         help="store KEY=VALUE in the cache and send it to the host; "
                              "with KEY alone the value is read from stdin (keeps a "
                              "secret off the command line)")
    actions.add_argument("-g", "--get-param", metavar="KEY", help="print a cached value")
    actions.add_argument("-r", "--delete-param", metavar="KEY", help="delete a cached key")
    actions.add_argument("-x", "--delete-params", action="store_true",
                         help="delete every cached key (secrets included)")
    actions.add_argument("-l", "--list-params", action="store_true",
                         help="print the cache as JSON lines, sorted by key")
    actions.add_argument("-e", "--event", metavar="EVENT",
                         help="send an event to the host (snapshot, migrate, shutdown, "
                         "reconfig, ip-address, user, new-param, system, or a number)")
    actions.add_argument("-s", "--script", metavar="TARGET",
                         help="run an ovm-template-config target with the cached params "
                         "(e.g. cleanup) and report each module's result")
    actions.add_argument("--status", action="store_true",
                         help="first-boot status: not-started, waiting-for-params, "
                         "running, done, failed")
    actions.add_argument("--enable-initial-config", action="store_true",
                         help="set INITIAL_CONFIG=yes (run configure on the next boot)")
    actions.add_argument("--disable-initial-config", action="store_true",
                         help="set INITIAL_CONFIG=no")
    actions.add_argument("-v", "--version", action="version", version="ovmd " + __version__)
    parser.add_argument("--json", action="store_true", help="--status: print JSON")
    parser.add_argument("--wait", action="store_true",
                        help="--status: block until the first-boot run is done or failed")
    parser.add_argument("-d", "--debug", type=int, choices=(0, 1, 2), default=2,
                        help="daemon logging: 0 off, 1 stderr, 2 syslog (default)")
    parser.add_argument("-f", "--pid-file", metavar="FILE",
                        help="daemon pid file (default /run/ovmd/ovmd.pid under --root)")
    parser.add_argument("-t", "--time-period", metavar="SECS", type=float,
                        help="accepted for compatibility; ignored (event-driven)")
    parser.add_argument("--foreground", action="store_true",
                        help="do not daemonize (systemd Type=notify; READY=1 is sent to "
                        "$NOTIFY_SOCKET)")
    parser.add_argument("--quiet-period", metavar="SECS", type=float, default=1.0,
                        help="first boot: wait this long after the last message before "
                        "running configure (default 1)")
    parser.add_argument("--root", metavar="DIR", default=os.environ.get(
                        "OVM_TEMPLATE_CONFIG_ROOT") or "/",
                        help="locate every path under DIR (exported to children as "
                        "OVM_TEMPLATE_CONFIG_ROOT)")
    parser.add_argument("--xenstore", metavar="PATH",
                        help="XenStore socket or device (default: $XENSTORED_PATH, "
                        "/var/run/xenstored/socket, /dev/xen/xenbus)")
    parser.add_argument("--verbose", action="store_true", help="daemon: log debug messages")
    return parser


def full_main(args) -> int:
    parser = build_parser()
    options = parser.parse_args(args)
    root = options.root
    if root not in ("", "/"):
        os.environ["OVM_TEMPLATE_CONFIG_ROOT"] = os.path.abspath(root)
    if options.set_param:
        code = EXIT_OK
        for item in options.set_param:
            if "=" in item:
                key, value = item.split("=", 1)
            else:
                # -p KEY: the value comes from stdin, so a secret stays off the command line
                key, value = item, sys.stdin.read()
                if value.endswith("\n"):
                    value = value[:-1]
            code = max(code, _call_daemon(root, ["set", key, value]))
        return code
    if options.get_param is not None:
        return _call_daemon(root, ["get", options.get_param])
    if options.delete_param is not None:
        return _call_daemon(root, ["delete", options.delete_param])
    if options.delete_params:
        return _call_daemon(root, ["clear"])
    if options.list_params:
        return _call_daemon(root, ["list"])
    if options.event is not None:
        return _call_daemon(root, ["event", options.event])
    if options.script is not None:
        return _call_daemon(root, ["script", options.script])
    if options.status:
        return _status(root, options.json, options.wait)
    if options.enable_initial_config or options.disable_initial_config:
        from .paths import Paths
        from .firstboot.flag import set_initial_config

        files = set_initial_config(Paths(root), bool(options.enable_initial_config))
        print("INITIAL_CONFIG=%s in %s" % ("yes" if options.enable_initial_config else "no",
                                           ", ".join(files)))
        return EXIT_OK
    if options.json or options.wait:
        parser.error("--json and --wait go with --status")
    return run_daemon(options)


def _status(root: str, as_json: bool, wait: bool) -> int:
    from .control import ControlClient, ControlError
    from .paths import Paths

    paths = Paths(root)
    request = ["status"] + (["json"] if as_json else []) + (["wait"] if wait else [])
    try:
        code, out, err = ControlClient(paths.control_socket).call(*request)
    except ControlError as error:
        if error.code != EXIT_NOT_RUNNING:
            _write(2, (str(error) + "\n").encode("utf-8"))
            return error.code
        import json

        from .status import compute_status, exit_code, format_status

        status = compute_status(paths, None)
        text = json.dumps(status, indent=2, sort_keys=True) + "\n" if as_json \
            else format_status(status)
        _write(1, text.encode("utf-8"))
        return exit_code(status)
    _write(1, out)
    if err:
        _write(2, err)
    return code


def run_daemon(options) -> int:
    from .daemon import Daemon, DaemonError, LogSetup, PidFile, check_no_ovmapi
    from .paths import Paths
    from .secrets import RedactingFilter

    paths = Paths(options.root)
    redactor = RedactingFilter()
    log_setup = LogSetup(options.debug, redactor, verbose=options.verbose)
    try:
        check_no_ovmapi(paths)
        pidfile = PidFile(options.pid_file or paths.pid_file).acquire()
    except (DaemonError, OSError) as err:
        print("ovmd: %s" % err, file=sys.stderr)
        return EXIT_FAILURE

    def make_daemon() -> "Daemon":
        return Daemon(paths, xenstore_path=options.xenstore,
                      quiet_period=options.quiet_period, redactor=redactor,
                      log_setup=log_setup)

    if options.foreground:
        log_setup.install()
        try:
            return make_daemon().run()
        finally:
            pidfile.release()
    import daemon as python_daemon  # python-daemon; only when daemonizing

    context = python_daemon.DaemonContext(
        pidfile=pidfile, files_preserve=[pidfile.fd], signal_map={},
        working_directory="/", umask=0o022)
    with context:  # everything with a descriptor is created after the fork
        log_setup.install()
        return make_daemon().run()
