"""The resumable run state (``templateconfig.run.state``): the fingerprint of a run's
params, which completed modules a resumed run may skip, and the state file itself.

The end-to-end resume after a SIGKILL is in tests/templateconfig/test_ovm_template_config.py.
"""
from __future__ import annotations

import json
import os
import stat

import pytest

from ovmd.paths import Paths
from templateconfig.run.scripts import Module
from templateconfig.run.state import RunState, fingerprint, resumable

SALT = b"0123456789abcdef"
SECRET = "com.example.password"
BASE = ("configure", {"a": "1", SECRET: "hunter2"}, {SECRET}, SALT)


@pytest.mark.parametrize("change, same", [
    (lambda t, p, k, s: (t, dict(p), set(k), s), True),  # equal inputs
    (lambda t, p, k, s: ("cleanup", p, k, s), False),  # another target
    (lambda t, p, k, s: (t, dict(p, a="2"), k, s), False),  # a public value
    (lambda t, p, k, s: (t, dict(p, **{SECRET: "hunter3"}), k, s), False),  # a secret value
    (lambda t, p, k, s: (t, dict(p, b="new"), k, s), False),  # one more key
    (lambda t, p, k, s: (t, p, set(), s), False),  # the same value, not as a secret
    (lambda t, p, k, s: (t, p, k, b"fedcba9876543210"), False),  # another salt
], ids=["equal", "target", "public-value", "secret-value", "added-key", "secret-or-not",
        "salt"])
def test_the_fingerprint_identifies_target_params_and_salt(change, same):
    digest = fingerprint(*BASE)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert (fingerprint(*change(*BASE)) == digest) is same


def completed(name, priority, secret_keys_changed=(), **extra):
    entry = {"name": name, "priority": priority, "changes": {name: "done"}, "removed": [],
             "secret_keys_changed": list(secret_keys_changed)}
    entry.update(extra)
    return entry


MODULES = [Module(10, "one", "/s/one"), Module(20, "two", "/s/two"),
           Module(30, "three", "/s/three")]


@pytest.mark.parametrize("entries, skippable", [
    ([], []),
    ([completed("one", 10), completed("two", 20)], ["one", "two"]),
    ([completed("two", 20), completed("one", 10)], ["one", "two"]),  # in run order
    ([completed("one", 15), completed("two", 20)], ["two"]),  # one's priority changed
    ([completed("one", 10, [SECRET]), completed("two", 20)], []),  # one changed a secret
    ([completed("one", 10), completed("two", 20, [SECRET])], ["one"]),
    ([completed("gone", 5), completed("one", 10)], ["one"]),  # no longer enabled
    ([{"name": "one"}, completed("two", 20)], ["two"]),  # an entry without a priority
    ([completed("one", "x"), completed("two", 20)], ["two"]),  # a priority that is no number
])
def test_which_completed_modules_a_resumed_run_skips(entries, skippable):
    found = resumable(entries, MODULES)
    assert list(found) == skippable
    for name in skippable:
        assert found[name]["changes"] == {name: "done"}


class TestStateFile:
    PARAMS = {"a": "1", SECRET: "hunter2"}

    def state(self, tmp_path, params=None, target="configure", enabled=True):
        return RunState(Paths(str(tmp_path)), target, params or self.PARAMS, {SECRET},
                        enabled=enabled)

    def interrupted_run(self, tmp_path):
        """Two modules completed, then the runner died (the file stays)."""
        state = self.state(tmp_path)
        state.module_done("one", 10, {"one": "done"}, ["gone"], [])
        state.module_done("two", 20, {"two": "done"}, [], [SECRET])
        state.close()
        return state.path

    def test_a_run_of_the_same_params_finds_the_completed_modules(self, tmp_path):
        path = self.interrupted_run(tmp_path)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert "hunter2" not in open(path).read()
        previous = self.state(tmp_path).load_previous()
        assert [(e["name"], e["changes"], e["removed"], e["secret_keys_changed"])
                for e in previous] == [("one", {"one": "done"}, ["gone"], []),
                                       ("two", {"two": "done"}, [], [SECRET])]

    @pytest.mark.parametrize("params, target", [
        ({"a": "1", SECRET: "other"}, "configure"),
        ({"a": "1", SECRET: "hunter2", "b": "2"}, "configure"),
        ({"a": "1", SECRET: "hunter2"}, "cleanup"),
    ], ids=["other-secret", "more-params", "other-target"])
    def test_other_params_or_another_target_start_over(self, tmp_path, params, target):
        self.interrupted_run(tmp_path)
        assert self.state(tmp_path, params, target).load_previous() == []

    def test_a_line_torn_by_a_crash_does_not_count(self, tmp_path):
        path = self.interrupted_run(tmp_path)
        text = open(path).read()
        with open(path, "w") as handle:
            handle.write(text[:-10])
        assert [e["name"] for e in self.state(tmp_path).load_previous()] == ["one"]

    @pytest.mark.parametrize("content", ["", "not json\n", '{"version": 99}\n',
                                         '{"version": 1, "target": "configure"}\n'])
    def test_an_unreadable_state_starts_over(self, tmp_path, content):
        state = self.state(tmp_path)
        os.makedirs(os.path.dirname(state.path), exist_ok=True)
        with open(state.path, "w") as handle:
            handle.write(content)
        assert state.load_previous() == []

    def test_the_resumed_run_keeps_the_file_valid_for_the_next_one(self, tmp_path):
        self.interrupted_run(tmp_path)
        state = self.state(tmp_path)
        previous = state.load_previous()
        state.carry_over(previous[0])
        state.module_done("three", 30, {"three": "done"}, [], [])
        state.close()
        assert [e["name"] for e in self.state(tmp_path).load_previous()] == ["one", "three"]
        header = json.loads(open(state.path).readline())
        assert header["target"] == "configure" and header["version"] == 1

    def test_a_finished_run_removes_the_file(self, tmp_path):
        self.interrupted_run(tmp_path)
        state = self.state(tmp_path)
        state.remove()
        assert not os.path.exists(state.path)
        state.remove()  # already gone: fine

    def test_a_dry_run_reads_and_writes_nothing(self, tmp_path):
        path = self.interrupted_run(tmp_path)
        before = open(path).read()
        state = self.state(tmp_path, enabled=False)
        assert state.load_previous() == []
        assert not state.costly_to_prepare()
        state.module_done("three", 30, {}, [], [])
        state.remove()
        assert open(path).read() == before

    def test_only_secret_params_make_the_fingerprint_costly(self, tmp_path):
        assert self.state(tmp_path).costly_to_prepare()
        assert not self.state(tmp_path, {"a": "1"}).costly_to_prepare()
        state = self.state(tmp_path)
        state.prepare()
        assert not state.costly_to_prepare()  # done once
