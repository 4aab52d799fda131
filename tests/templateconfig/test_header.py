"""The ``### BEGIN PLUGIN INFO`` header: what a good one yields, and every kind of bad one.

Every error must name the file and the line, so that a module author sees where to look.
"""
from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from templateconfig.header import TARGETS, HeaderError, PluginInfo, parse_header


def write(tmp_path: Path, text: str, name: str = "network") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


GOOD = """
#!/usr/bin/env python
# Copyright (c) someone.
### BEGIN PLUGIN INFO
# name: network
# configure: 50
# cleanup: 50
# description: Configure template network.
#   Continuation lines are indented,
#	tabs too.
#
# provides: com.oracle.linux.network
### END PLUGIN INFO
import json
"""


class TestGoodHeader:
    def test_fields(self, tmp_path):
        path = write(tmp_path, GOOD)
        info = parse_header(path)
        assert isinstance(info, PluginInfo)
        assert info.name == "network"
        assert info.path == path
        assert info.targets == {"configure": 50, "cleanup": 50}
        assert list(info.targets) == ["configure", "cleanup"]
        assert info.description == ("Configure template network. Continuation lines are "
                                    "indented, tabs too.")
        assert info.priority("configure") == 50
        assert info.priority("suspend") is None
        assert info.warnings == []

    def test_unknown_extra_fields_are_kept(self, tmp_path):
        info = parse_header(write(tmp_path, GOOD))
        assert info.fields["provides"] == "com.oracle.linux.network"
        assert info.fields["configure"] == "50"
        assert info.fields["name"] == "network"

    def test_keys_are_case_insensitive_and_priorities_may_be_padded(self, tmp_path):
        info = parse_header(write(tmp_path, """
            ### BEGIN PLUGIN INFO
            # Name: network
            # CONFIGURE: 05
            # shutdown: 0
            # unconfigure: 99
            ### END PLUGIN INFO
            """))
        assert info.targets == {"configure": 5, "shutdown": 0, "unconfigure": 99}

    def test_header_starting_on_line_100_is_found(self, tmp_path):
        text = "#!/bin/sh\n" + "# filler\n" * 98 + (
            "### BEGIN PLUGIN INFO\n# name: network\n# configure: 50\n### END PLUGIN INFO\n")
        path = tmp_path / "network"
        path.write_text(text)
        assert parse_header(str(path)).targets == {"configure": 50}

    def test_every_target_is_accepted(self, tmp_path):
        lines = "".join("# %s: %d\n" % (target, n) for n, target in enumerate(TARGETS))
        path = tmp_path / "network"
        path.write_text("### BEGIN PLUGIN INFO\n# name: network\n%s### END PLUGIN INFO\n"
                        % lines)
        assert list(parse_header(str(path)).targets) == list(TARGETS)

    def test_file_name_with_extension_matches_the_name(self, tmp_path):
        path = write(tmp_path, GOOD, name="network.py")
        assert parse_header(path).warnings == []

    def test_targets_constant(self):
        assert TARGETS == ("configure", "unconfigure", "reconfigure", "cleanup",
                           "suspend", "resume", "migrate", "shutdown")


class TestNameMismatch:
    """The registry keys modules by file name; a different header name only warns."""

    def test_is_a_warning_by_default(self, tmp_path, caplog):
        path = write(tmp_path, GOOD, name="net2")
        with caplog.at_level(logging.WARNING, logger="templateconfig.header"):
            info = parse_header(path)
        assert info.name == "network"
        assert len(info.warnings) == 1
        assert "%s:4:" % path in info.warnings[0]
        assert "'net2'" in info.warnings[0]
        assert info.warnings[0] in caplog.text

    def test_is_an_error_when_strict(self, tmp_path):
        path = write(tmp_path, GOOD, name="net2")
        with pytest.raises(HeaderError) as caught:
            parse_header(path, strict_name=True)
        assert str(caught.value).startswith("%s:4: header name 'network'" % path)


def header_error(tmp_path: Path, text: str) -> HeaderError:
    path = write(tmp_path, text)
    with pytest.raises(HeaderError) as caught:
        parse_header(path)
    error = caught.value
    assert error.path == path
    return error


class TestBadHeader:
    def test_no_header(self, tmp_path):
        error = header_error(tmp_path, "#!/bin/sh\necho hello\n")
        assert error.lineno is None
        assert str(error).startswith("%s: no '### BEGIN PLUGIN INFO'" % error.path)

    def test_header_after_line_100_is_not_found(self, tmp_path):
        text = "# filler\n" * 100 + (
            "### BEGIN PLUGIN INFO\n# name: network\n# configure: 50\n### END PLUGIN INFO\n")
        error = header_error(tmp_path, text)
        assert "in the first 100 lines" in str(error)

    def test_missing_end(self, tmp_path):
        error = header_error(tmp_path, """
            #!/bin/sh
            ### BEGIN PLUGIN INFO
            # name: network
            # configure: 50
            """)
        assert error.lineno == 2
        assert str(error) == ("%s:2: '### BEGIN PLUGIN INFO' has no matching "
                              "'### END PLUGIN INFO'" % error.path)

    def test_code_inside_the_header(self, tmp_path):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # name: network
            import json
            ### END PLUGIN INFO
            """)
        assert str(error).startswith("%s:3: expected '# key: value'" % error.path)

    def test_missing_name(self, tmp_path):
        error = header_error(tmp_path, """
            #!/bin/sh
            ### BEGIN PLUGIN INFO
            # configure: 50
            ### END PLUGIN INFO
            """)
        assert str(error) == "%s:2: the plugin header has no 'name' field" % error.path

    @pytest.mark.parametrize("name", ["", "my module", "../evil"])
    def test_invalid_name(self, tmp_path, name):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # configure: 50
            # name: %s
            ### END PLUGIN INFO
            """ % name)
        assert str(error).startswith("%s:3: invalid module name" % error.path)

    @pytest.mark.parametrize("value, message", [
        ("fifty", "must be an integer 0-99, got 'fifty'"),
        ("5.0", "must be an integer 0-99, got '5.0'"),
        ("", "must be an integer 0-99, got ''"),
        ("100", "must be 0-99, got 100"),
        ("-1", "must be 0-99, got -1"),
    ])
    def test_bad_priority(self, tmp_path, value, message):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # name: network
            # description: d
            # cleanup: %s
            ### END PLUGIN INFO
            """ % value)
        assert error.lineno == 4
        assert str(error) == "%s:4: priority of target 'cleanup' %s" % (error.path, message)

    def test_unknown_target(self, tmp_path):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # name: network
            # confgure: 50
            ### END PLUGIN INFO
            """)
        assert str(error).startswith("%s:3: unknown target 'confgure'" % error.path)
        assert "configure, unconfigure" in str(error)

    @pytest.mark.parametrize("line", [
        "# just some words",
        "# : no key",
        "# bad key!: value",
    ])
    def test_malformed_line(self, tmp_path, line):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # name: network
            %s
            ### END PLUGIN INFO
            """ % line)
        assert str(error).startswith("%s:3: malformed header line" % error.path)

    def test_continuation_without_a_field(self, tmp_path):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            #   dangling text
            # name: network
            ### END PLUGIN INFO
            """)
        assert str(error).startswith("%s:2: indented continuation line" % error.path)

    def test_duplicate_field(self, tmp_path):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # name: network
            # configure: 50
            # Configure: 60
            ### END PLUGIN INFO
            """)
        assert str(error) == ("%s:4: field 'configure' given twice (first on line 3)"
                              % error.path)

    def test_second_begin_inside_the_header(self, tmp_path):
        error = header_error(tmp_path, """
            ### BEGIN PLUGIN INFO
            # name: network
            ### BEGIN PLUGIN INFO
            ### END PLUGIN INFO
            """)
        assert str(error).startswith("%s:3: unexpected" % error.path)

    def test_unreadable_file(self, tmp_path):
        path = str(tmp_path / "missing")
        with pytest.raises(HeaderError) as caught:
            parse_header(path)
        assert str(caught.value).startswith("%s: cannot read module script" % path)
