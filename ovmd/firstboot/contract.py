"""The first-boot contract between the host, the daemon and the runner (docs/protocol.md).

Values only: both programs import this module, so nothing here may be expensive to import.
"""
from __future__ import annotations

#: The key whose arrival starts first-boot configuration (the host sends it last).
TRIGGER_KEY = "com.oracle.linux.root-password"

#: The key the daemon sends back to the host when a first-boot run ended:
#: :data:`STATUS_DONE`, or ``failed: <reason>`` (:func:`failed_status`).
STATUS_KEY = "com.oracle.linux.ovmd.initial-config-status"
STATUS_DONE = "done"
STATUS_FAILED_PREFIX = "failed: "
#: The host's manager caps logged values at 1024 bytes; so does the status value.
MAX_STATUS_VALUE = 1024

#: ``ovm-template-config --initial-config`` exit status: INITIAL_CONFIG was not yes under
#: the run lock (the console dialog, or an earlier run, configured the guest); nothing
#: was run.
EXIT_ALREADY_CONFIGURED = 4

#: The runner option that makes a run a first-boot run.
INITIAL_CONFIG_OPTION = "--initial-config"


def failed_status(reason: str) -> str:
    """The status value for a failed first boot, at most :data:`MAX_STATUS_VALUE`."""
    return (STATUS_FAILED_PREFIX + (reason or "unknown error"))[:MAX_STATUS_VALUE]
