"""What the command line, the runner and module processes share: values only, so that
``ovm-template-config`` and the module API import this module for next to nothing.

The environment a module process gets is described in docs/module-contract.md.
"""
from __future__ import annotations

#: A module process runs in plan mode (records what it would change, changes nothing).
DRY_RUN_ENV = "OVM_TEMPLATE_CONFIG_DRY_RUN"
#: The journal file to which a module process appends each change, one JSON line each.
ACTIONS_ENV = "OVM_TEMPLATE_CONFIG_ACTIONS"
#: Set to 1 in a ``--changed-only`` run (a reconfiguration): modules apply what changed
#: and leave the guest's identity (machine id, SSH host keys) as it is.
CHANGED_ONLY_ENV = "OVM_TEMPLATE_CONFIG_CHANGED_ONLY"
#: A private directory (0700) for one module in one run: what its ``--prepare TARGET``
#: call made before the params came, for its ``TARGET`` call to use. The runner creates
#: it and removes it when the module has run, and at the end of the run.
STAGING_ENV = "OVM_TEMPLATE_CONFIG_STAGING"
#: The plugin header field that lists the targets a module prepares (``prepare: configure``).
PREPARE_FIELD = "prepare"
#: Set to 1 to run Python modules in a fresh interpreter instead of a fork of the runner.
NO_FORK_ENV = "OVM_TEMPLATE_CONFIG_NO_FORK"
#: Set to 1 to enumerate every module afresh (the cache is then neither read nor written).
NO_ENUMERATE_CACHE_ENV = "OVM_TEMPLATE_CONFIG_NO_ENUMERATE_CACHE"

#: Seconds a module may run before it is killed (``--timeout``).
DEFAULT_TIMEOUT = 300.0
#: Seconds a run waits for another run of the same root to finish (``--lock-timeout``).
DEFAULT_LOCK_TIMEOUT = 600.0

#: Exit status of a module process that could not be started (as a shell says "not found").
EXIT_NOT_STARTED = 127
