"""Recorded actions -> the dry-run plan (``templateconfig.run.plan``): one line per
record, unified diffs for files, secrets named but never shown, journals read leniently.

The journal records come from ``templateconfig.common`` (tests/templateconfig/test_common.py);
the plan of a whole dry run is in tests/templateconfig/test_ovm_template_config.py.
"""
from __future__ import annotations

import base64
import json

import pytest

from templateconfig.run.plan import (
    describe,
    file_diff,
    is_bookkeeping,
    plan_json,
    read_actions,
    render_plan,
)


@pytest.mark.parametrize("record, line", [
    ({"op": "command", "argv": ["systemctl", "restart", "sshd"]},
     "run: systemctl restart sshd"),
    ({"op": "command", "argv": ["echo", "two words"], "applied": False},
     "would run: echo 'two words'"),
    ({"op": "write", "path": "/etc/hosts", "old": None, "new": "x"}, "create file /etc/hosts"),
    ({"op": "write", "path": "/etc/hosts", "old": "a", "new": "b", "mode": 0o644},
     "write file /etc/hosts (mode 0644)"),
    ({"op": "write", "path": "/etc/key", "secret": True, "mode": 0o600, "applied": False},
     "would write secret file /etc/key (mode 0600)"),
    ({"op": "remove", "path": "/etc/old"}, "remove /etc/old"),
    ({"op": "mkdir", "path": "/etc/d", "mode": 0o700}, "create directory /etc/d (mode 0700)"),
    ({"op": "symlink", "path": "/etc/l", "target": "../x"}, "link /etc/l -> ../x"),
    ({"op": "chmod", "path": "/etc/f", "mode": 0o600}, "chmod /etc/f (mode 0600)"),
    ({"op": "chown", "path": "/etc/f", "uid": 0, "gid": 10}, "chown /etc/f to 0:10"),
    ({"op": "frobnicate", "path": "/x", "level": 3, "old": "o", "new": "n"},
     'frobnicate {"level": 3, "path": "/x"}'),
], ids=lambda value: value if isinstance(value, str) else value["op"])
def test_each_record_is_one_line_without_content(record, line):
    assert describe(record) == line


@pytest.mark.parametrize("record, expected", [
    ({"op": "write", "path": "/etc/hosts", "old": "a\nb\n", "new": "a\nc\n"},
     "--- a/etc/hosts\n+++ b/etc/hosts\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"),
    ({"op": "write", "path": "/etc/new", "old": None, "new": "x"},
     "--- /dev/null\n+++ b/etc/new\n@@ -0,0 +1 @@\n+x\n\\ No newline at end of file\n"),
    ({"op": "remove", "path": "/etc/old", "old": "gone\n", "new": None},
     "--- a/etc/old\n+++ /dev/null\n@@ -1 +0,0 @@\n-gone\n"),
    ({"op": "write", "path": "/etc/key", "old": None, "new": "s3cret", "secret": True},
     "/etc/key: secret content, not shown\n"),
    ({"op": "write", "path": "/etc/blob", "encoding": "base64", "old": None,
      "new": base64.b64encode(b"\0\1\2").decode()},
     "/etc/blob: binary content (absent -> 3 bytes)\n"),
    ({"op": "write", "path": "/etc/same", "old": "x\n", "new": "x\n", "mode": 0o600},
     "/etc/same: unchanged content (mode 0600)\n"),
], ids=["changed", "created", "removed", "secret", "binary", "unchanged"])
def test_file_records_become_unified_diffs(record, expected):
    assert file_diff(record) == expected


def test_the_plan_lists_files_per_module_then_every_command():
    modules = [
        ("hosts", [{"op": "write", "path": "/etc/hosts", "old": "a\n", "new": "b\n"},
                   {"op": "command", "argv": ["hostname", "new"]}]),
        ("ssh", [{"op": "command", "argv": ["systemctl", "restart", "sshd"]}]),
    ]
    skipped = [("thirdparty", "does not use templateconfig.common")]
    assert render_plan(modules, skipped) == (
        "=== hosts ===\n"
        "write file /etc/hosts\n"
        "--- a/etc/hosts\n+++ b/etc/hosts\n@@ -1 +1 @@\n-a\n+b\n"
        "=== ssh ===\n"
        "no file changes\n"
        "=== commands that would run ===\n"
        "hosts: hostname new\n"
        "ssh: systemctl restart sshd\n"
        "=== modules not planned ===\n"
        "thirdparty: does not use templateconfig.common\n")
    assert render_plan([], []) == "=== commands that would run ===\nnone\n"
    assert plan_json(modules, skipped) == {
        "modules": [{"name": "hosts", "actions": modules[0][1], "bookkeeping": []},
                    {"name": "ssh", "actions": modules[1][1], "bookkeeping": []}],
        "skipped": [{"name": "thirdparty", "reason": "does not use templateconfig.common"}]}


def test_bookkeeping_is_named_once_per_module_not_shown():
    state = "/var/lib/ovm-template-config/network.saved"
    actions = [
        {"op": "write", "path": state, "old": None, "new": "{}\n", "bookkeeping": True},
        {"op": "write", "path": "/etc/hostname", "old": "a\n", "new": "b\n"},
        {"op": "write", "path": state, "old": "{}\n", "new": "{1}\n", "bookkeeping": True},
        {"op": "write", "path": "/var/lib/ovm-template-config/network.applied", "old": None,
         "new": "x\n", "bookkeeping": True},
    ]
    only_state = [{"op": "write", "path": "/var/lib/ovm-template-config/machine-id.generated",
                   "old": None, "new": "{}\n", "bookkeeping": True}]
    assert render_plan([("network", actions), ("system", only_state)]) == (
        "=== network ===\n"
        "write file /etc/hostname\n"
        "--- a/etc/hostname\n+++ b/etc/hostname\n@@ -1 +1 @@\n-a\n+b\n"
        "its own state (not shown): /var/lib/ovm-template-config/network.applied, "
        "/var/lib/ovm-template-config/network.saved\n"
        "=== system ===\n"
        "no file changes\n"
        "its own state (not shown): /var/lib/ovm-template-config/machine-id.generated\n"
        "=== commands that would run ===\nnone\n")
    assert plan_json([("network", actions)]) == {
        "modules": [{"name": "network", "actions": [actions[1]],
                     "bookkeeping": [actions[0], actions[2], actions[3]]}],
        "skipped": []}
    # a record says it is bookkeeping; its path alone does not make it so
    assert not is_bookkeeping({"op": "write", "path": state})


def test_a_journal_is_read_leniently(tmp_path):
    journal = tmp_path / "journal.jsonl"
    assert read_actions(str(journal)) == []  # a module that recorded nothing
    good = {"op": "remove", "path": "/etc/x"}
    journal.write_text("\n".join([
        json.dumps(good),
        '{"op": "write", "path": "/etc/torn", "new": "ab',  # killed mid-write
        "[1, 2]",  # not an object
        json.dumps({"path": "/etc/no-op"}),  # no op
        json.dumps({"op": "command", "argv": ["true"]}),
    ]) + "\n")
    assert read_actions(str(journal)) == [good, {"op": "command", "argv": ["true"]}]
