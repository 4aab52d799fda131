"""ovm-template-config parses the common command lines without argparse (start-up cost);
whatever the fast parser accepts must mean exactly what argparse makes of it."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from templateconfig.ovm_template_config import _fast_args, _odd_values, _parser

TOKENS = st.sampled_from([
    "-e", "--enumerate", "--human-readable", "-s", "--script", "net", "--stdin", "--input",
    "3", "--output", "4", "--console-input", "--root", "/tmp/r", "--root=/tmp/x",
    "--dry-run", "--json", "--timeout", "2.5", "--timeout=0", "--initial-config",
    "--lock-timeout", "10", "configure", "cleanup", "-", "--", "-x", "--inp", "--script=ssh",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=8))
def test_fast_parse_agrees_with_argparse(argv):
    fast = _fast_args(argv)
    if fast is None or _odd_values(fast):
        return  # argparse handles it (and refuses a timeout of 0)
    full = _parser().parse_args(argv)
    assert vars(fast) == {k: v for k, v in vars(full).items()}, argv


def test_the_daemon_s_command_line_takes_the_fast_path():
    args = _fast_args(["--input", "3", "--output", "4", "--root", "/r", "--initial-config",
                       "configure"])
    assert args is not None
    assert (args.input, args.output, args.root, args.initial_config, args.target) == \
        (3, 4, "/r", True, "configure")
