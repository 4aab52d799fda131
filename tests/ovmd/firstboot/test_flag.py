"""The first-boot flag ``INITIAL_CONFIG`` (ovmd/firstboot/flag.py): what says that first
boot is over."""
from __future__ import annotations

import os

import pytest

from ovmd.paths import Paths


@pytest.mark.parametrize("text, state", [
    ("INITIAL_CONFIG=yes\n", True),
    ("INITIAL_CONFIG=no\n", False),
    ("INITIAL_CONFIG=FALSE\n", False),
    ("INITIAL_CONFIG=0\n", False),
    ("# first boot\n", None),              # not set
    ("# first boot\nINITIAL_CONFIG=", None),  # caught half rewritten in place
    ("INITIAL_CONFIG=n", None),
    ("INITIAL_CONFIG=maybe\n", None),
])
def test_only_an_explicit_no_says_the_guest_was_configured(tmp_path, text, state):
    """What the daemon and the console dialog take as "first boot is over"."""
    from ovmd.firstboot.flag import initial_config_state

    paths = Paths(str(tmp_path))
    os.makedirs(os.path.dirname(paths.sysconfig_ovmd))
    with open(paths.sysconfig_ovmd, "w") as handle:
        handle.write(text)
    assert initial_config_state(paths) is state
