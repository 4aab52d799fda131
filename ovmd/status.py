"""First-boot status, as ``ovmd --status`` shows it (modelled on ``cloud-init status``).

States: ``not-started`` (the daemon is not running, or first-boot configuration is
disabled and never ran), ``waiting-for-params`` (INITIAL_CONFIG=yes, the root password
has not arrived yet or the quiet period is still running), ``running`` (also while a
configured guest waits for the quiet period before configure runs again), ``done``,
``failed``. A report left ``running`` by a runner that was killed counts as failed
(:func:`ovmd.runreport.read_report`). Exit codes follow cloud-init >= 23.4: 0 ok (done,
or not finished yet), 1 failed, 2 degraded (done, but a module reported warnings or an
error).

The text shows each module of the last run with its state, its one-line reason and its
warnings; ``--long`` adds each module's stderr as the run report kept it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .firstboot.flag import initial_config_enabled
from .paths import Paths
from .runreport import ModuleStatus, RunStatus, read_configure_report, read_report


class BootStatus:
    """What ``ovmd --status`` says about first boot."""

    NOT_STARTED = "not-started"
    WAITING = "waiting-for-params"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    FINAL = (NOT_STARTED, DONE, FAILED)


def compute_status(paths: Paths, daemon: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The status object; ``daemon`` is what a running daemon knows (``running``,
    ``armed``, ``last_result``), None if no daemon answered."""
    enabled = initial_config_enabled(paths)
    report = read_report(paths)
    configure_report = read_configure_report(paths)
    if daemon and daemon.get("running_target") == "configure":
        state = BootStatus.RUNNING
    elif daemon and daemon.get("armed"):  # a configure run is about to start
        state = BootStatus.WAITING if enabled else BootStatus.RUNNING
    elif configure_report and configure_report.get("status") == RunStatus.FAILED and enabled:
        state = BootStatus.FAILED
    elif daemon and daemon.get("last_result") == BootStatus.FAILED and enabled:
        state = BootStatus.FAILED
    elif enabled:
        state = BootStatus.WAITING if daemon else (
            BootStatus.RUNNING if configure_report
            and configure_report.get("status") == RunStatus.RUNNING else BootStatus.NOT_STARTED)
    elif configure_report and configure_report.get("status") == RunStatus.DONE:
        state = BootStatus.DONE
    elif configure_report and configure_report.get("status") == RunStatus.FAILED:
        state = BootStatus.FAILED
    elif daemon and daemon.get("last_result") == BootStatus.DONE:
        state = BootStatus.DONE
    else:
        state = BootStatus.NOT_STARTED
    modules = (configure_report or {}).get("modules") or []
    degraded = state == BootStatus.DONE and any(
        m.get("status") == ModuleStatus.FAILED or m.get("warnings") for m in modules)
    return {
        "status": state,
        "degraded": degraded,
        "initial_config": enabled,
        "daemon_running": bool(daemon),
        "last_run": report,
        "events": (daemon or {}).get("events", []),
    }


def exit_code(status: Dict[str, Any]) -> int:
    if status["status"] == BootStatus.FAILED:
        return 1
    if status.get("degraded"):
        return 2
    return 0


def status_text(status: Dict[str, Any], as_json: bool = False, long: bool = False) -> str:
    """What ``ovmd --status [--json] [--long]`` prints."""
    if as_json:
        import json

        return json.dumps(status, indent=2, sort_keys=True) + "\n"
    return format_status(status, long)


#: A reason is shown on one line of at most this many characters.
MAX_REASON = 500


def format_status(status: Dict[str, Any], long: bool = False) -> str:
    """``ovmd --status`` (``--long``: with each module's stderr)."""
    lines = ["status: %s%s" % (status["status"], " (degraded)" if status.get("degraded") else "")]
    lines.append("initial config: %s" % ("yes" if status["initial_config"] else "no"))
    lines.append("daemon: %s" % ("not running" if not status["daemon_running"] else
                                 "running, sealed (shut the guest down now)"
                                 if status.get("sealed") else "running"))
    report = status.get("last_run")
    if report:
        warnings = report.get("warnings")
        lines.append("last run: %s %s%s (started %s, finished %s)" % (
            report.get("target"), report.get("status"),
            " with %d warning%s" % (warnings, "" if warnings == 1 else "s")
            if isinstance(warnings, int) and warnings else "",
            report.get("started"), report.get("finished")))
        lines.extend(format_modules(report, long))
    return "\n".join(lines) + "\n"


def _one_line(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def format_modules(report: Dict[str, Any], long: bool = False) -> List[str]:
    """A run report's modules, one line each with its state and its reason, then its
    warnings (and, ``long``, its stderr); for a run the validation refused, the
    problems instead of the modules, which all stayed pending."""
    problems = report.get("problems") or []
    if problems:
        return ["  nothing was run: invalid parameters:"] + [
            "    %s" % _one_line(problem) for problem in problems]
    lines = []
    for module in report.get("modules") or []:
        seconds = module.get("seconds")
        line = "  %-16s %4s  %-8s %s" % (
            module.get("name"), module.get("priority", ""), module.get("status"),
            "%.2fs" % seconds if isinstance(seconds, (int, float)) else "")
        error = str(module.get("error") or "").strip()
        if error:
            line += "  error: %s" % _one_line(error.splitlines()[0])
        lines.append(line.rstrip())
        lines.extend("      warning: %s" % _one_line(w) for w in module.get("warnings") or [])
        stderr = str(module.get("stderr") or "").rstrip()
        if long and stderr:
            lines.append("      stderr:")
            lines.extend("        %s" % text for text in stderr.splitlines())
    return lines
