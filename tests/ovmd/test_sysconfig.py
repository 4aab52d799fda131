"""The reader of /etc/sysconfig/ovmd: shell-style assignments, yes/no settings."""
from __future__ import annotations

import pytest

from ovmd.paths import Paths
from ovmd.sysconfig import SettingError, flag, read_settings


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
