"""The reader of /etc/sysconfig/ovmd: shell-style assignments, yes/no settings, durations
(QUIET_PERIOD)."""
from __future__ import annotations

import pytest

from ovmd.firstboot.machine import DEFAULT_QUIET_PERIOD, QUIET_PERIOD
from ovmd.paths import Paths
from ovmd.sysconfig import SettingError, flag, read_settings, seconds


def write(tmp_path, text):
    path = tmp_path / "etc/sysconfig/ovmd"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return Paths(str(tmp_path))


def test_assignments_as_a_shell_reads_them(tmp_path):
    paths = write(tmp_path, "\n".join([
        "# a comment",
        "INITIAL_CONFIG=yes",
        "  export QUIET_PERIOD=2  ",
        'OVMD_OPTIONS="-d 1 --verbose"',
        "QUOTED='single'",
        "TRAILING=no # a comment after the value",
        "EMPTY=",
        "not an assignment",
        "SPACE = no",  # not a shell assignment either
        "INITIAL_CONFIG=no",  # the last one wins
    ]) + "\n")
    assert read_settings(paths.sysconfig_ovmd) == {
        "INITIAL_CONFIG": "no", "QUIET_PERIOD": "2", "OVMD_OPTIONS": "-d 1 --verbose",
        "QUOTED": "single", "TRAILING": "no", "EMPTY": ""}


def test_a_missing_file_has_no_settings(tmp_path):
    assert read_settings(str(tmp_path / "none")) == {}
    assert flag(Paths(str(tmp_path)), "REPORT_ADDRESSES", True) is True


@pytest.mark.parametrize("line, value", [
    ("REPORT_ADDRESSES=no", False), ("REPORT_ADDRESSES=NO", False),
    ("REPORT_ADDRESSES=false", False), ("REPORT_ADDRESSES=off", False),
    ("REPORT_ADDRESSES=0", False), ("REPORT_ADDRESSES=yes", True),
    ("REPORT_ADDRESSES='True'", True), ("REPORT_ADDRESSES=1", True),
    ("REPORT_ADDRESSES=", True), ("OTHER=no", True),
])
def test_yes_no_settings(tmp_path, line, value):
    assert flag(write(tmp_path, line + "\n"), "REPORT_ADDRESSES", True) is value


def test_another_value_is_an_error_naming_the_file_the_setting_and_the_value(tmp_path):
    paths = write(tmp_path, "REPORT_ADDRESSES=maybe\n")
    with pytest.raises(SettingError) as caught:
        flag(paths, "REPORT_ADDRESSES", True)
    assert str(caught.value) == "%s: REPORT_ADDRESSES=maybe is not yes or no" \
        % paths.sysconfig_ovmd


def test_an_unreadable_file_is_an_error_naming_it(tmp_path):
    paths = Paths(str(tmp_path))
    (tmp_path / "etc/sysconfig/ovmd").mkdir(parents=True)  # a directory where it belongs
    with pytest.raises(SettingError) as caught:
        flag(paths, "REPORT_ADDRESSES", True)
    assert str(caught.value) == "cannot read %s: Is a directory" % paths.sysconfig_ovmd


@pytest.mark.parametrize("text, value", [
    ("INITIAL_CONFIG=yes\n", DEFAULT_QUIET_PERIOD),
    ("QUIET_PERIOD=\n", DEFAULT_QUIET_PERIOD),           # set to nothing
    ("QUIET_PERIOD=2\n", 2.0),
    ("QUIET_PERIOD=0.25\n", 0.25),
    ("QUIET_PERIOD=0\n", 0.0),
    ('export QUIET_PERIOD="1.5"\n', 1.5),
    ("QUIET_PERIOD=1\nQUIET_PERIOD=3\n", 3.0),         # the last line wins, as in a shell
    ("# QUIET_PERIOD=9\n", DEFAULT_QUIET_PERIOD),
    ("soon", None), ("QUIET_PERIOD=soon\n", "soon"), ("QUIET_PERIOD=-1\n", "-1"),
    ("QUIET_PERIOD=nan\n", "nan"), ("QUIET_PERIOD=inf\n", "inf"),
])
def test_the_quiet_period_in_seconds(tmp_path, text, value):
    paths = write(tmp_path, text)
    if isinstance(value, str):
        with pytest.raises(SettingError) as caught:
            seconds(paths, QUIET_PERIOD, DEFAULT_QUIET_PERIOD)
        assert str(caught.value) == "%s: QUIET_PERIOD=%s is not a number of seconds (0 or " \
            "more)" % (paths.sysconfig_ovmd, value)
    else:
        assert seconds(paths, QUIET_PERIOD, DEFAULT_QUIET_PERIOD) == (
            DEFAULT_QUIET_PERIOD if value is None else value)
    assert seconds(Paths(str(tmp_path / "none")), QUIET_PERIOD, 7.0) == 7.0  # no file


def test_the_shipped_quiet_period_is_the_default_at_most_a_tenth_of_a_second():
    import os

    assert DEFAULT_QUIET_PERIOD <= 0.1
    shipped = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "sysconfig",
                           "ovmd")
    with open(shipped) as handle:
        assert "QUIET_PERIOD=%g\n" % DEFAULT_QUIET_PERIOD in handle.read()
