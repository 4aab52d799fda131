"""authentication: set the root password (Oracle's ``authentication`` module).

``com.oracle.linux.root-password`` is the key whose arrival makes ``ovmd`` run the
configure target, so this module runs last (priority 90). The password goes to
``chpasswd`` on stdin, never on a command line nor into a file other than
``/etc/shadow`` (as a hash); a value that already is a crypt hash (``$6$...``,
``$y$...``) is stored as given (``chpasswd -e``). See
:mod:`templateconfig.modules.support.accounts` for how a sandbox root is reached.
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

from templateconfig.modules.support import accounts
from templateconfig.modules.support.spec import Key, ModuleSpec

log = logging.getLogger(__name__)

ROOT_PASSWORD = "com.oracle.linux.root-password"

SPEC = ModuleSpec(
    "authentication", {"configure": 90, "cleanup": 10},
    "Set the root password.",
    keys=[Key(ROOT_PASSWORD, "Root password.", required=True, password=True,
              validate=accounts.password_value)],
    needs_root=True,
)


@SPEC.target("configure")
def configure(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    password = params.get(ROOT_PASSWORD)
    if password is None:
        # (validation let it pass: an earlier run set it, and a reconfigure keeps it)
        log.info("%s was not given: the root password is left as it is", ROOT_PASSWORD)
        return None
    accounts.set_password("root", password)
    accounts.protect_shadow_files()
    return None


@SPEC.target("cleanup")
def cleanup(params: Dict[str, str]) -> Optional[Dict[str, str]]:
    """Sealing keeps the root password: the clone's configure replaces it."""
    return None
