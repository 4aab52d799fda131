"""``QUIET_PERIOD`` in ``/etc/sysconfig/ovmd`` (ovmd/firstboot/flag.py): what is read,
and what a value that cannot be used becomes (the default, with a one-line reason)."""
from __future__ import annotations

import os

import pytest

from ovmd.firstboot.flag import DEFAULT_QUIET_PERIOD, quiet_period
from ovmd.paths import Paths


@pytest.mark.parametrize("text, seconds, problem", [
    (None, DEFAULT_QUIET_PERIOD, False),                  # no sysconfig file
    ("INITIAL_CONFIG=yes\n", DEFAULT_QUIET_PERIOD, False),
    ("QUIET_PERIOD=\n", DEFAULT_QUIET_PERIOD, False),     # set to nothing
    ("QUIET_PERIOD=2\n", 2.0, False),
    ("QUIET_PERIOD=0.25\n", 0.25, False),
    ("QUIET_PERIOD=0\n", 0.0, False),
    ('export QUIET_PERIOD="1.5"\n', 1.5, False),
    ("QUIET_PERIOD=1\nQUIET_PERIOD=3\n", 3.0, False),    # the last line wins, as in a shell
    ("# QUIET_PERIOD=9\n", DEFAULT_QUIET_PERIOD, False),
    ("QUIET_PERIOD=soon\n", DEFAULT_QUIET_PERIOD, True),
    ("QUIET_PERIOD=-1\n", DEFAULT_QUIET_PERIOD, True),
    ("QUIET_PERIOD=nan\n", DEFAULT_QUIET_PERIOD, True),
    ("QUIET_PERIOD=inf\n", DEFAULT_QUIET_PERIOD, True),
])
def test_quiet_period_from_the_sysconfig_file(tmp_path, text, seconds, problem):
    paths = Paths(str(tmp_path))
    if text is not None:
        os.makedirs(os.path.dirname(paths.sysconfig_ovmd))
        with open(paths.sysconfig_ovmd, "w") as handle:
            handle.write(text)
    found, reason = quiet_period(paths)
    assert found == seconds
    if problem:
        assert reason.startswith("QUIET_PERIOD=") and paths.sysconfig_ovmd in reason
        assert "using %g" % DEFAULT_QUIET_PERIOD in reason and "\n" not in reason
    else:
        assert reason is None


def test_the_shipped_default_is_at_most_a_tenth_of_a_second():
    assert DEFAULT_QUIET_PERIOD <= 0.1
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "..", "packaging",
                           "sysconfig", "ovmd")
    with open(shipped) as handle:
        assert "QUIET_PERIOD=%g\n" % DEFAULT_QUIET_PERIOD in handle.read()


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
