"""The host's status value for a failed first boot (ovmd.firstboot.contract.failed_status):
one line, at most 1024 bytes of UTF-8, cut at a reason boundary."""
from __future__ import annotations

import pytest

from ovmd.firstboot.contract import MAX_STATUS_VALUE, failed_status, join_reasons


def fits(value: str) -> bool:
    return len(value.encode("utf-8")) <= MAX_STATUS_VALUE and "\n" not in value


def test_reasons_are_listed_in_order():
    assert failed_status(["network: k: bad", "datetime: z: worse"]) == \
        "failed: network: k: bad; datetime: z: worse"


def test_a_joined_line_is_the_same_list():
    reasons = ["network: k: bad", "datetime: z: worse"]
    assert failed_status(join_reasons(reasons)) == failed_status(reasons)


def test_a_separator_or_a_line_break_inside_a_reason_does_not_split_it():
    value = failed_status(["m: first; still first\nand this", "n: second"])
    assert value == "failed: m: first, still first and this; n: second"


def test_whole_reasons_only_and_the_rest_counted():
    reasons = ["m%d: %s" % (i, "x" * 300) for i in range(10)]
    value = failed_status(reasons)
    assert fits(value)
    assert value == "failed: " + "; ".join(reasons[:3]) + "; ... (7 more)"


@pytest.mark.parametrize("count, end", [(1, "..."), (3, "...; ... (2 more)")])
def test_a_first_reason_longer_than_the_value_is_cut_short_visibly(count, end):
    reasons = ["m%d: %s" % (i, "x" * 1100) for i in range(count)]
    value = failed_status(reasons)
    assert fits(value) and len(value.encode("utf-8")) == MAX_STATUS_VALUE
    assert value.startswith("failed: m0: xxx") and value.endswith("x" + end)


def test_multibyte_text_is_cut_on_a_character():
    value = failed_status(["m: " + "é" * 2000])
    assert fits(value) and value.endswith("é...")


def test_nothing_known():
    assert failed_status([]) == failed_status("") == "failed: unknown error"
