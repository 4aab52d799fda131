"""The one table of ovmd's requests (ovmd.control.REQUESTS): argparse, the CLI's fast path
and the daemon's handlers all come from it, and must agree (the handlers' side is in
tests/ovmd/daemon/test_requests.py)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ovmd.cli import _FAST_ACTIONS, _fast_parse, build_parser, client_requests
from ovmd.control import REQUEST_NAMES, REQUESTS

FLAGS = [flag for request in REQUESTS for flag in request.flags]

TOKENS = st.sampled_from(FLAGS + [
    "--root", "/tmp/r", "--root=/tmp/x", "--root=", "k", "com.example.k", "k=v", "a=b=c",
    "=v", "k=", "", "-", "--", "-5", "-x=1", "-a b", "--get-param=k", "--set-param=k=v",
    "--set-param=k", "--list-params=x", "--event=shutdown", "--get", "--list", "-gk",
    "--json", "--wait", "--long", "--status", "--long=1", "-d", "1", "--foreground", "-v",
    "shutdown", "cleanup", "--seal", "--dry-run",
])


@settings(max_examples=600, deadline=None)
@given(st.lists(TOKENS, max_size=6))
def test_the_fast_path_agrees_with_argparse(argv):
    fast = _fast_parse(argv)
    if fast is None:
        return  # argparse handles it
    options = build_parser().parse_args(argv)  # a usage error here fails the test
    root, request = fast
    assert (options.root, client_requests(options)) == (root, [request]), argv


@pytest.mark.parametrize("argv, expected", [
    (["-g", "k"], ["get", "k"]),
    (["--root", "/r", "--get-param=k"], ["get", "k"]),
    (["-p", "k=v=w"], ["set", "k", "v=w"]),
    (["-l"], ["list"]),
    (["-x"], ["clear"]),
    (["-r", "k"], ["delete", "k"]),
    (["-e", "shutdown"], ["event", "shutdown"]),
    (["--status"], ["status"]),
    (["--wait", "--status", "--json", "--long"], ["status", "json", "long", "wait"]),
    (["--root", "/r", "--status", "--long"], ["status", "long"]),
])
def test_the_common_command_lines_take_the_fast_path(argv, expected):
    fast = _fast_parse(argv)
    assert fast is not None and fast[1] == expected


@pytest.mark.parametrize("argv", [
    ["-p", "KEY"],          # the value comes from stdin
    ["-g", "-x"],           # argparse: -g expects one argument
    ["--root", "-g", "k"],
    ["-g", "k", "-l"],      # two actions: argparse's error
    ["-s", "cleanup"], ["--help"], [],
    ["--json"], ["--long", "-l"],        # an option without --status: argparse's error
    ["--status", "--json", "--json"],
])
def test_everything_else_goes_to_argparse(argv):
    assert _fast_parse(argv) is None


def test_fast_requests_are_the_table_s():
    assert {r.name for r in _FAST_ACTIONS.values()} == {r.name for r in REQUESTS if r.fast}
    assert all(REQUEST_NAMES[flag] is _FAST_ACTIONS[flag] for flag in _FAST_ACTIONS)


def test_flags_and_names_are_unique():
    names = [r.name for r in REQUESTS]
    assert len(set(names)) == len(names)
    assert len(set(FLAGS)) == len(FLAGS)
    assert not set(names) & set(FLAGS)


def test_every_flag_is_in_the_help():
    text = build_parser().format_help()
    for request in REQUESTS:
        for flag in request.flags:
            assert flag in text
        if request.flags:
            assert request.help.split()[0] in text
