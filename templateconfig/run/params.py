"""Where a run's params come from: ``--stdin``, ``--input FD``, an OVF environment,
ovmd's cache, the console (docs/command-lines.md).

``--stdin`` and ``--input`` take one JSON object, or one object per line (what ``ovmd -l``
prints); every value must be a string. ``--input FD`` is how ``ovmd`` hands the params
over: secrets never on a command line.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Dict, Optional

from ovmd.paths import Paths

if TYPE_CHECKING:
    from ovmd.firstboot.watch import SysconfigWatch
    from templateconfig.run.runner import Runner

log = logging.getLogger(__name__)


class ParamsError(Exception):
    """The params given are unusable (not JSON, not strings, unreadable); nothing ran."""


class DaemonUnreachable(Exception):
    """The params were to come from ovmd, and ovmd is not reachable."""


def parse_params_text(text: str, source: str) -> Dict[str, Any]:
    """Params given as one JSON object, or as one JSON object per line (merged in order;
    ``ovmd -l`` prints ``{"key": "value"}`` lines). Blank lines are ignored."""
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        params: Dict[str, Any] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise ParamsError("%s, line %d: not valid JSON (expected a JSON object, or "
                                  "one per line): %s" % (source, number, exc))
            if not isinstance(item, dict):
                raise ParamsError("%s, line %d: expected a JSON object, got a JSON %s"
                                  % (source, number, type(item).__name__))
            params.update(item)
        return _check_params(params, source)
    if not isinstance(value, dict):
        raise ParamsError("%s: expected a JSON object of key -> value, got a JSON %s"
                          % (source, type(value).__name__))
    return _check_params(value, source)


def _check_params(params: Dict[str, Any], source: str) -> Dict[str, Any]:
    for key, value in params.items():
        if isinstance(value, (dict, list)):
            raise ParamsError("%s: the value of %s must be a string, not a JSON %s"
                              % (source, key, type(value).__name__))
    return params


def read_fd(fd: int) -> str:
    """Everything on file descriptor ``fd`` (closed afterwards), as UTF-8."""
    try:
        with os.fdopen(fd, "rb", closefd=True) as handle:
            data = handle.read()
    except OSError as exc:
        raise ParamsError("--input %d: cannot read: %s" % (fd, exc.strerror or exc))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParamsError("--input %d: not UTF-8: %s" % (fd, exc))


def params_from_daemon(paths: Paths, timeout: Optional[float] = None) -> Dict[str, Any]:
    """ovmd's cached params; :class:`ovmd.control.ControlError` if it is not reachable."""
    from ovmd.control import EXIT_OK as DAEMON_OK
    from ovmd.control import ControlClient

    client = ControlClient(paths.control_socket, timeout=timeout)
    if hasattr(client, "list_params"):
        return dict(client.list_params())
    code, out, err = client.call("list")
    if code != DAEMON_OK:
        raise ParamsError("ovmd -l failed: %s" % err.decode("utf-8", "replace").strip())
    return parse_params_text(out.decode("utf-8", "replace"), "ovmd's parameter cache")


def cached_params_if_any(paths: Paths) -> Dict[str, Any]:
    """ovmd's cached params, or none when the daemon is not reachable (the console
    dialog works without it)."""
    from ovmd.control import ControlError

    try:
        return params_from_daemon(paths, timeout=5.0)
    except (ControlError, ParamsError, OSError, ValueError) as exc:
        log.info("no params from ovmd: %s", exc)
        return {}


def gather_params(runner: Runner, paths: Paths, *, stdin: bool = False,
                  input_fd: Optional[int] = None, ovf: Optional[str] = None,
                  console: bool = False, first_boot: bool = False,
                  cancel: Optional[SysconfigWatch] = None) -> Dict[str, Any]:
    """The params from the source the command line names (``ovf`` ``""``: the default
    device), or from ovmd's cache; with ``console``, then what the console adds. On
    first boot the console starts from ovmd's cache if it runs, and asks only for keys
    not known yet; ``cancel`` (the first-boot watch) ending the dialog raises
    :class:`~templateconfig.run.firstboot.StoodDown`."""
    if stdin:
        params = parse_params_text(sys.stdin.read(), "standard input")
    elif input_fd is not None:
        text = read_fd(input_fd)
        if not text:  # the parent went away before it had params for us
            raise ParamsError("--input %d: end of file before any params; nothing was run"
                              % input_fd)
        params = parse_params_text(text, "--input %d" % input_fd)
    elif ovf is not None:
        from templateconfig.ovf import DEFAULT_OVF_DEVICE, OvfError, read_ovf_params
        try:
            params = read_ovf_params(ovf or DEFAULT_OVF_DEVICE)
        except OvfError as exc:
            raise ParamsError(str(exc))
    elif console:
        params = cached_params_if_any(paths) if first_boot else {}
    else:
        from ovmd.control import ControlError
        try:
            params = params_from_daemon(paths)
        except ControlError as exc:
            raise DaemonUnreachable(str(exc))
    if console:
        params = _prompt(runner, params, first_boot, cancel)
    return params


def _prompt(runner: Runner, params: Dict[str, Any], first_boot: bool,
            cancel: Optional[SysconfigWatch]) -> Dict[str, Any]:
    from templateconfig.console import ConsoleCancelled, ConsoleError, prompt_params

    enumeration = [(name, descs) for _, name, descs in runner.enumerate()]
    known = set(params) if first_boot else ()
    try:
        return prompt_params(enumeration, params, known=known, cancel=cancel,
                             check=runner.check_answer)
    except ConsoleCancelled:
        from templateconfig.run.firstboot import StoodDown
        raise StoodDown() from None
    except ConsoleError as exc:
        raise ParamsError("console input: %s" % exc)
