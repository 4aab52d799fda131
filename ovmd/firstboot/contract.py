"""The first-boot contract between the host, the daemon and the runner (docs/protocol.md).

Values only: both programs import this module, so nothing here may be expensive to import.
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time; type checkers read this as True
if TYPE_CHECKING:
    from typing import Sequence, Union

#: The key whose arrival starts first-boot configuration (the host sends it last).
TRIGGER_KEY = "com.oracle.linux.root-password"

#: The key the daemon sends back to the host when a first-boot run ended:
#: :data:`STATUS_DONE`, or ``failed: <module>: <reason>[; <module>: <reason>...]``
#: (:func:`failed_status`).
STATUS_KEY = "com.oracle.linux.ovmd.initial-config-status"
STATUS_DONE = "done"
STATUS_FAILED_PREFIX = "failed: "
#: Between two reasons of a failed status.
REASON_SEPARATOR = "; "
#: The host's manager caps logged values at 1024 bytes; so does the status value.
MAX_STATUS_VALUE = 1024

#: ``ovm-template-config --initial-config`` exit status: INITIAL_CONFIG was not yes under
#: the run lock (the console dialog, or an earlier run, configured the guest); nothing
#: was run.
EXIT_ALREADY_CONFIGURED = 4

#: The runner option that makes a run a first-boot run.
INITIAL_CONFIG_OPTION = "--initial-config"
#: The runner option of a reconfiguration: only the modules whose params changed run.
CHANGED_ONLY_OPTION = "--changed-only"


def join_reasons(reasons: Sequence[str]) -> str:
    """The reasons of a failure (``<module>: <reason>`` each) as one line, separated by
    :data:`REASON_SEPARATOR`; a separator inside a reason becomes ``, ``, so that
    :func:`failed_status` can cut the line at a reason boundary."""
    return REASON_SEPARATOR.join(" ".join(reason.split()).replace(REASON_SEPARATOR, ", ")
                                 for reason in reasons if reason.strip())


def failed_status(reasons: Union[str, Sequence[str]]) -> str:
    """The status value for a failed first boot: ``failed: `` and the reasons (a list,
    or a line made by :func:`join_reasons`), one line, at most :data:`MAX_STATUS_VALUE`
    bytes of UTF-8. Whole reasons only: those that do not fit are left out and counted
    (``; ... (N more)``); a first reason too long on its own is cut short (``...``)."""
    if isinstance(reasons, str):
        reasons = reasons.split(REASON_SEPARATOR)
    items = [item for item in join_reasons(reasons).split(REASON_SEPARATOR) if item]
    if not items:
        items = ["unknown error"]
    for kept in range(len(items), 0, -1):
        value = STATUS_FAILED_PREFIX + REASON_SEPARATOR.join(items[:kept])
        if kept < len(items):
            value += "%s... (%d more)" % (REASON_SEPARATOR, len(items) - kept)
        if len(value.encode("utf-8")) <= MAX_STATUS_VALUE:
            return value
    more = "%s... (%d more)" % (REASON_SEPARATOR, len(items) - 1) if len(items) > 1 else ""
    room = MAX_STATUS_VALUE - len(("..." + more).encode("utf-8"))
    first = (STATUS_FAILED_PREFIX + items[0]).encode("utf-8")[:room]
    return first.decode("utf-8", "ignore") + "..." + more
