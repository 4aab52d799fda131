"""The parameter cache on a real file system: snapshot + journal, secrets in /run only.

File formats are in docs/formats.md: ``params.json`` (a JSON object), the journal
``params.json.journal`` (one JSON object per line: ``{"set": {...}}``, ``{"del": [...]}``,
``{"clear": true}``) and ``secrets.json`` under the run directory.
"""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from ovmd import cache as cache_module
from ovmd.cache import CacheError, ParamCache
from ovmd.paths import Paths
from ovmd.secrets import RedactingFilter

ROOT_PASSWORD = "com.oracle.linux.root-password"
PASSWORD = "Tr0ub4dor&3"
HOSTNAME = "com.oracle.linux.network.hostname"


@pytest.fixture
def paths(tmp_path):
    return Paths(str(tmp_path))


def journal_path(paths):
    return paths.cache_file + ".journal"


def write_state(paths, snapshot=None, journal=None, secrets=None):
    """Lay out cache files as a previous daemon left them (None: the file is absent)."""
    for path, text in ((paths.cache_file, snapshot), (journal_path(paths), journal),
                       (paths.secret_cache_file, secrets)):
        if text is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)


def journal_lines(paths):
    try:
        with open(journal_path(paths), encoding="utf-8") as handle:
            return [json.loads(line) for line in handle.read().splitlines()]
    except FileNotFoundError:
        return None


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return None


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def line(entry):
    return json.dumps(entry) + "\n"


# --- loading: snapshot first, then the journal in order, then the /run secrets ------------

@pytest.mark.parametrize("snapshot, journal, expected", [
    (None, None, {}),
    ('{"a": "1"}', None, {"a": "1"}),
    (None, line({"set": {"a": "1"}}), {"a": "1"}),
    ('{"a": "1"}', line({"set": {"a": "2"}}), {"a": "2"}),                 # journal after snapshot
    ('{"a": "1"}', line({"set": {"a": "2"}}) + line({"set": {"a": "3"}}), {"a": "3"}),
    ('{"a": "1", "b": "2"}', line({"del": ["a"]}), {"b": "2"}),
    ('{"a": "1"}', line({"del": ["missing"]}), {"a": "1"}),
    ('{"a": "1"}', line({"clear": True}) + line({"set": {"b": "2"}}), {"b": "2"}),
    ('{"a": "1"}', line({"set": {"b": "2"}}) + line({"clear": True}), {}),
    # one entry: set, then del, then clear, whatever the order of its fields
    (None, line({"clear": True, "set": {"a": "1"}}), {}),
    (None, line({"del": ["a"], "set": {"a": "1"}}), {}),
    # a torn last line (a crash mid-append) was never acknowledged: ignored
    ('{"a": "1"}', line({"set": {"b": "2"}}) + '{"set": {"c": "3', {"a": "1", "b": "2"}),
    ('{"a": "1"}', line({"set": {"b": "2"}}) + '{"set": {"c": "3\n\n', {"a": "1", "b": "2"}),
    # a corrupt line in the middle is skipped, the lines after it still count
    (None, line({"set": {"a": "1"}}) + "garbage\n" + line({"set": {"b": "2"}}),
     {"a": "1", "b": "2"}),
    (None, "\n\n" + line({"set": {"a": "1"}}) + "\n", {"a": "1"}),          # blank lines
    ("not json", line({"set": {"a": "1"}}), {"a": "1"}),                   # bad snapshot: empty
    ('["a", "1"]', None, {}),                                             # not an object
    ('{"n": 5, "t": true}', None, {"n": "5", "t": "True"}),                # values as strings
])
def test_load_replays_the_journal_over_the_snapshot(paths, snapshot, journal, expected):
    write_state(paths, snapshot, journal)
    assert ParamCache(paths).load().as_dict() == expected


@pytest.mark.parametrize("journal, level, message", [
    (line({"set": {"a": "1"}}) + '{"set": {', logging.INFO, "incomplete last line"),
    (line({"set": {"a": "1"}}) + "garbage\n", logging.INFO, "incomplete last line"),
    ("garbage\n" + line({"set": {"a": "1"}}), logging.WARNING, "corrupt line"),
])
def test_a_torn_tail_is_expected_a_corrupt_middle_is_a_warning(paths, caplog, journal,
                                                               level, message):
    write_state(paths, journal=journal)
    with caplog.at_level(logging.INFO, logger="ovmd.cache"):
        ParamCache(paths).load()
    assert [(r.levelno, message in r.getMessage()) for r in caplog.records] == [(level, True)]


def test_secrets_come_back_from_run_and_a_secret_on_disk_is_moved_out(paths):
    write_state(paths, snapshot=json.dumps({HOSTNAME: "vm1", "com.example.db-password": "x1"}),
                secrets=json.dumps({ROOT_PASSWORD: PASSWORD}))
    redactor = RedactingFilter()
    cache = ParamCache(paths, redactor).load()
    assert cache.as_dict() == {HOSTNAME: "vm1", "com.example.db-password": "x1",
                               ROOT_PASSWORD: PASSWORD}
    assert sorted(cache.secret_values()) == sorted([PASSWORD, "x1"])
    cache.clear()  # compacts: the secret that was on disk is not written back
    assert read_json(paths.cache_file) == {}
    entry = logging.LogRecord("t", logging.INFO, __file__, 1, "pw %s", (PASSWORD,), None)
    redactor.filter(entry)
    assert PASSWORD not in entry.getMessage()  # loaded secrets are registered for redaction


# --- storing ----------------------------------------------------------------------------

@pytest.mark.parametrize("before, pairs, changed, appended, stored", [
    ({}, [("a", "1")], ["a"], [{"set": {"a": "1"}}], {"a": "1"}),
    ({"a": "1"}, [("a", "1")], [], [{"set": {"a": "1"}}], {"a": "1"}),      # same value
    ({}, [("a", "1"), ("a", "2")], ["a"], [{"set": {"a": "2"}}], {"a": "2"}),  # last wins
    ({}, [("a", "1"), ("b", "2")], ["a", "b"], [{"set": {"a": "1", "b": "2"}}],
     {"a": "1", "b": "2"}),                                                 # one line a batch
    ({}, [(ROOT_PASSWORD, PASSWORD)], [ROOT_PASSWORD], [],                  # secret: no line
     {ROOT_PASSWORD: PASSWORD}),
    ({}, [], [], [], {}),
])
def test_update_appends_one_journal_line_per_batch(paths, before, pairs, changed, appended,
                                                   stored):
    cache = ParamCache(paths).load()
    if before:
        cache.update(before.items())
    already = journal_lines(paths) or []
    assert cache.update(pairs) == changed
    assert (journal_lines(paths) or [])[len(already):] == appended
    assert ParamCache(paths).load().as_dict() == stored  # what a restarted daemon finds


@pytest.mark.parametrize("key", [ROOT_PASSWORD, "com.oracle.linux.user.password.0",
                                 "com.oracle.linux.ssh.private-key.0",
                                 "com.oracle.linux.ssh.host-rsa-key"])
def test_a_secret_is_kept_in_run_only(paths, key):
    cache = ParamCache(paths).load()
    cache.update([(key, PASSWORD), (HOSTNAME, "vm1")])
    assert read_json(paths.secret_cache_file) == {key: PASSWORD}
    cache.clear()
    cache.update([(HOSTNAME, "vm1")])  # snapshot written, journal appended again
    cache.update([(key, PASSWORD)])
    durable = ""
    for path in (paths.cache_file, journal_path(paths)):
        with open(path, encoding="utf-8") as handle:
            durable += handle.read()
    assert "vm1" in durable and PASSWORD not in durable and key not in durable


@pytest.mark.parametrize("name, expected", [
    ("state_dir", 0o700),
    ("cache_file", 0o600),
    ("journal", 0o600),
    ("run_dir", 0o700),
    ("secret_cache_file", 0o600),
])
def test_files_are_root_only(paths, name, expected):
    os.makedirs(paths.state_dir, mode=0o755)
    os.chmod(paths.state_dir, 0o755)  # a directory left too open is tightened
    cache = ParamCache(paths).load()
    cache.update([(HOSTNAME, "vm1"), (ROOT_PASSWORD, PASSWORD)])
    cache.clear()  # the snapshot is written when the journal is folded
    cache.update([(HOSTNAME, "vm2"), (ROOT_PASSWORD, PASSWORD)])
    path = journal_path(paths) if name == "journal" else getattr(paths, name)
    assert mode(path) == expected


# --- compaction -------------------------------------------------------------------------

@pytest.mark.parametrize("existing_lines, updates, compacted", [
    (0, 3, False),
    (0, 4, True),    # the 4th line reaches the limit
    (3, 1, True),    # lines left by an earlier daemon count too
    (2, 1, False),
])
def test_the_journal_is_folded_into_the_snapshot_at_the_limit(paths, monkeypatch,
                                                              existing_lines, updates,
                                                              compacted):
    monkeypatch.setattr(cache_module, "COMPACT_LINES", 4)
    write_state(paths, snapshot='{"old": "0"}',
                journal="".join(line({"set": {"e%d" % i: "x"}}) for i in range(existing_lines)))
    cache = ParamCache(paths).load()
    for index in range(updates):
        cache.update([("u%d" % index, str(index))])
    expected = dict({"old": "0"}, **{"e%d" % i: "x" for i in range(existing_lines)},
                    **{"u%d" % i: str(i) for i in range(updates)})
    if compacted:
        assert read_json(paths.cache_file) == expected
        assert os.path.getsize(journal_path(paths)) == 0
    else:
        assert read_json(paths.cache_file) == {"old": "0"}
        assert len(journal_lines(paths)) == existing_lines + updates
    cache.close()
    assert ParamCache(paths).load().as_dict() == expected


def test_the_journal_is_folded_when_it_grows_too_large(paths, monkeypatch):
    monkeypatch.setattr(cache_module, "COMPACT_BYTES", 100)
    cache = ParamCache(paths).load()
    cache.update([("a", "x" * 50)])
    assert read_json(paths.cache_file) is None
    cache.update([("b", "y" * 50)])
    assert read_json(paths.cache_file) == {"a": "x" * 50, "b": "y" * 50}
    assert os.path.getsize(journal_path(paths)) == 0


# --- deleting and wiping ----------------------------------------------------------------

@pytest.mark.parametrize("key, found, appended, secrets_after", [
    ("a", True, [{"del": ["a"]}], {ROOT_PASSWORD: PASSWORD, "com.example.db-password": "x"}),
    ("missing", False, [], {ROOT_PASSWORD: PASSWORD, "com.example.db-password": "x"}),
    (ROOT_PASSWORD, True, [], {"com.example.db-password": "x"}),
])
def test_delete(paths, key, found, appended, secrets_after):
    cache = ParamCache(paths).load()
    cache.update([("a", "1"), (ROOT_PASSWORD, PASSWORD), ("com.example.db-password", "x")])
    before = journal_lines(paths)
    assert cache.delete(key) is found
    assert journal_lines(paths)[len(before):] == appended
    assert read_json(paths.secret_cache_file) == secrets_after
    assert key not in ParamCache(paths).load()


def test_deleting_the_last_secret_removes_the_run_file(paths):
    cache = ParamCache(paths).load()
    cache.update([(ROOT_PASSWORD, PASSWORD)])
    assert cache.delete(ROOT_PASSWORD)
    assert not os.path.exists(paths.secret_cache_file)


def test_wipe_secrets_forgets_them_everywhere_but_keeps_redacting(paths):
    redactor = RedactingFilter()
    cache = ParamCache(paths, redactor).load()
    cache.update([(ROOT_PASSWORD, PASSWORD), ("com.oracle.linux.user.password.0", "pw-0"),
                  (HOSTNAME, "vm1")])
    assert cache.wipe_secrets() == [ROOT_PASSWORD, "com.oracle.linux.user.password.0"]
    assert not os.path.exists(paths.secret_cache_file)
    assert cache.as_dict() == {HOSTNAME: "vm1"}
    assert ParamCache(paths).load().as_dict() == {HOSTNAME: "vm1"}
    assert cache.wipe_secrets() == []
    entry = logging.LogRecord("t", logging.INFO, __file__, 1, "pw %s", (PASSWORD,), None)
    redactor.filter(entry)
    assert PASSWORD not in entry.getMessage()


def test_clear_empties_snapshot_journal_and_secrets(paths):
    cache = ParamCache(paths).load()
    cache.update([(HOSTNAME, "vm1"), (ROOT_PASSWORD, PASSWORD)])
    cache.clear()
    assert read_json(paths.cache_file) == {}
    assert os.path.getsize(journal_path(paths)) == 0
    assert not os.path.exists(paths.secret_cache_file)
    assert len(ParamCache(paths).load()) == 0


def test_a_journal_that_cannot_be_written_raises_cache_error(paths):
    cache = ParamCache(paths).load()
    os.makedirs(paths.state_dir, mode=0o700)
    # the journal is opened at the first update: there, every write fails with ENOSPC
    os.symlink("/dev/full", journal_path(paths))
    with pytest.raises(CacheError) as info:
        cache.update([(HOSTNAME, "vm1")])
    assert journal_path(paths) in str(info.value)
