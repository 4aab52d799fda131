"""The parameter cache on a real file system: snapshot + journal, secrets in /run only.

File formats are in docs/formats.md: ``params.json`` (a JSON object), the journal
``params.json.journal`` (one JSON object per line: ``{"set": {...}}``, ``{"del": [...]}``,
``{"clear": true}``) and ``secrets.json`` under the run directory.
"""
from __future__ import annotations

import errno
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


def read_bytes(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return b""


def masked(redactor, value):
    entry = logging.LogRecord("t", logging.INFO, __file__, 1, "pw %s", (value,), None)
    redactor.filter(entry)
    return value not in entry.getMessage()


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
    # a corrupt line is set aside, the lines after it still count
    (None, line({"set": {"a": "1"}}) + "garbage\n" + line({"set": {"b": "2"}}),
     {"a": "1", "b": "2"}),
    (None, line({"set": {"a": "1"}}) + "garbage\n", {"a": "1"}),
    (None, "\n\n" + line({"set": {"a": "1"}}) + "\n", {"a": "1"}),          # blank lines
    ("not json", line({"set": {"a": "1"}}), {"a": "1"}),                   # bad snapshot: aside
    ('["a", "1"]', None, {}),                                             # not an object
    ('{"n": 5, "t": true, "s": "ok"}', None, {"s": "ok"}),                 # strings only
])
def test_load_replays_the_journal_over_the_snapshot(paths, snapshot, journal, expected):
    write_state(paths, snapshot, journal)
    assert ParamCache(paths).load().as_dict() == expected


@pytest.mark.parametrize("journal, level, message", [
    (line({"set": {"a": "1"}}) + '{"set": {', logging.INFO, "incomplete last line"),
    (line({"set": {"a": "1"}}) + "garbage\n", logging.ERROR, "not journal entries"),
    ("garbage\n" + line({"set": {"a": "1"}}), logging.ERROR, "not journal entries"),
])
def test_a_torn_tail_is_expected_a_corrupt_line_is_an_error(paths, caplog, journal, level,
                                                            message):
    write_state(paths, journal=journal)
    with caplog.at_level(logging.INFO, logger="ovmd.cache"):
        ParamCache(paths).load()
    assert [(r.levelno, message in r.getMessage()) for r in caplog.records] == [(level, True)]


def test_a_torn_tail_is_cut_off_so_the_next_line_stands_alone(paths):
    """A crash left half a line; the next batch must not be glued to it (and lost)."""
    write_state(paths, journal=line({"set": {"a": "1"}}) + '{"set": {"b": "tor')
    cache = ParamCache(paths).load()
    assert os.path.getsize(journal_path(paths)) == len(line({"set": {"a": "1"}}))
    cache.update([("c", "3")])
    cache.close()
    assert ParamCache(paths).load().as_dict() == {"a": "1", "c": "3"}


def test_secrets_come_back_from_run_and_a_secret_on_disk_is_moved_out(paths):
    write_state(paths, snapshot=json.dumps({HOSTNAME: "vm1", "com.example.db-password": "x1"}),
                secrets=json.dumps({ROOT_PASSWORD: PASSWORD}))
    redactor = RedactingFilter()
    cache = ParamCache(paths, redactor).load()
    assert cache.as_dict() == {HOSTNAME: "vm1", "com.example.db-password": "x1",
                               ROOT_PASSWORD: PASSWORD}
    assert sorted(cache.secret_values()) == sorted([PASSWORD, "x1"])
    # the secret that was on disk is scrubbed from it at once, and kept in /run
    assert b"x1" not in read_bytes(paths.cache_file) + read_bytes(journal_path(paths))
    assert read_json(paths.secret_cache_file) == {ROOT_PASSWORD: PASSWORD,
                                                  "com.example.db-password": "x1"}
    assert masked(redactor, PASSWORD)  # loaded secrets are registered for redaction
    cache.clear()
    assert read_json(paths.cache_file) == {}
    assert not masked(redactor, PASSWORD)  # ...and forgotten once wiped


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


def test_wipe_secrets_forgets_them_everywhere_and_in_the_redactor(paths):
    redactor = RedactingFilter()
    cache = ParamCache(paths, redactor).load()
    cache.update([(ROOT_PASSWORD, PASSWORD), ("com.oracle.linux.user.password.0", "pw-0"),
                  (HOSTNAME, "vm1")])
    assert cache.wipe_secrets() == [ROOT_PASSWORD, "com.oracle.linux.user.password.0"]
    assert not os.path.exists(paths.secret_cache_file)
    assert cache.as_dict() == {HOSTNAME: "vm1"}
    assert ParamCache(paths).load().as_dict() == {HOSTNAME: "vm1"}
    assert cache.wipe_secrets() == []
    assert not masked(redactor, PASSWORD)  # nowhere any more: nothing to mask


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
    os.makedirs(journal_path(paths))  # a directory where the journal belongs
    with pytest.raises(CacheError) as info:
        cache.update([(HOSTNAME, "vm1")])
    assert journal_path(paths) in str(info.value)
    assert HOSTNAME not in cache  # never served as if it were stored


# --- content that is not what the cache writes: set aside, never a failed start --------------

def aside_files(path):
    directory, name = os.path.split(path)
    return sorted(os.path.join(directory, n) for n in os.listdir(directory)
                  if n.startswith(name + ".corrupt-"))


GOOD = line({"set": {"a": "1"}})
BAD_JOURNAL_LINES = [
    b"\xff\xfe not UTF-8\n",
    b'{"set": {"k": "caf\xe9"}}\n',       # Latin-1, not UTF-8
    b"[1]\n",
    b'{"set": [1, 2]}\n',
    b'{"set": {"k": 1}}\n',
    b'{"set": {"k": null}}\n',
    b'{"del": "a"}\n',
    b'{"del": [1]}\n',
    b'{"clear": "yes"}\n',
    b"{}\n",
    b'{"other": 1}\n',
    b"null\n",
    b'"just a string"\n',
    b"\0\0\0\0\n",                          # a block of zeros (a crash on some file systems)
]


@pytest.mark.parametrize("bad", BAD_JOURNAL_LINES)
def test_a_journal_line_that_is_not_an_entry_is_set_aside(paths, caplog, bad):
    write_state(paths, snapshot='{"s": "0"}')
    with open(journal_path(paths), "wb") as handle:
        handle.write(GOOD.encode() + bad + line({"set": {"b": "2"}}).encode())
    with caplog.at_level(logging.ERROR, logger="ovmd.cache"):
        cache = ParamCache(paths).load()
    assert cache.as_dict() == {"s": "0", "a": "1", "b": "2"}  # everything readable
    [aside] = aside_files(journal_path(paths))
    assert read_bytes(aside) == bad and mode(aside) == 0o600
    [error] = [r.getMessage() for r in caplog.records]
    assert journal_path(paths) in error and aside in error and "kept 3 parameter(s)" in error
    # the cache was rewritten with what was readable: the next start is clean
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ovmd.cache"):
        assert ParamCache(paths).load().as_dict() == {"s": "0", "a": "1", "b": "2"}
    assert caplog.records == [] and len(aside_files(journal_path(paths))) == 1


@pytest.mark.parametrize("name, content, kept", [
    ("cache_file", b"garbage", {"j": "1"}),
    ("cache_file", b"\xff{}", {"j": "1"}),
    ("cache_file", b'["a", "1"]', {"j": "1"}),
    ("cache_file", b'{"a": "1", "n": 5, "o": {"x": "y"}}', {"a": "1", "j": "1"}),
    ("cache_file", b'{"a": "1"', {"j": "1"}),                # cut short
    ("cache_file", None, {"j": "1"}),                        # a directory
    ("secret_cache_file", b"garbage", {"j": "1"}),
    ("secret_cache_file", b'{"' + ROOT_PASSWORD.encode() + b'": "pw-0", "x": 1}',
     {"j": "1", ROOT_PASSWORD: "pw-0"}),
    ("secret_cache_file", None, {"j": "1"}),
])
def test_an_unreadable_file_is_set_aside_and_the_rest_kept(paths, caplog, name, content, kept):
    target = getattr(paths, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if content is None:
        os.makedirs(os.path.join(target, "sub"))
    else:
        with open(target, "wb") as handle:
            handle.write(content)
    write_state(paths, journal=line({"set": {"j": "1"}}))
    with caplog.at_level(logging.ERROR, logger="ovmd.cache"):
        cache = ParamCache(paths).load()
    assert cache.as_dict() == kept
    [aside] = aside_files(target)
    if content is None:
        assert os.path.isdir(aside) and mode(aside) == 0o700
    else:
        assert read_bytes(aside) == content and mode(aside) == 0o600
    [error] = [r.getMessage() for r in caplog.records]
    assert target in error and aside in error and "kept %d parameter(s)" % len(kept) in error
    cache.close()
    assert ParamCache(paths).load().as_dict() == kept  # and so it stays


def test_a_secret_file_set_aside_is_wiped_with_the_secrets(paths):
    write_state(paths, secrets="garbage with a secret in it")
    cache = ParamCache(paths).load()
    [aside] = aside_files(paths.secret_cache_file)
    cache.wipe_secrets()
    assert aside_files(paths.secret_cache_file) == [] and not os.path.exists(aside)


# --- symbolic links and modes: the files are the cache's own --------------------------------

@pytest.mark.parametrize("name", ["cache_file", "journal", "secret_cache_file"])
def test_a_symlink_where_a_cache_file_belongs_is_replaced_not_followed(tmp_path, name):
    paths = Paths(str(tmp_path / "root"))
    outside = tmp_path / "outside"
    outside.write_text('{"x": "from outside"}\n')
    path = journal_path(paths) if name == "journal" else getattr(paths, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(str(outside), path)
    cache = ParamCache(paths).load()
    assert "x" not in cache  # nothing read from outside
    cache.update([(HOSTNAME, "vm1"), (ROOT_PASSWORD, PASSWORD)])
    cache.clear()  # writes every file
    cache.update([(HOSTNAME, "vm2"), (ROOT_PASSWORD, PASSWORD)])
    assert outside.read_text() == '{"x": "from outside"}\n'  # never written through
    assert not os.path.islink(path) and mode(path) == 0o600
    cache.close()
    assert ParamCache(paths).load().as_dict() == {HOSTNAME: "vm2", ROOT_PASSWORD: PASSWORD}


@pytest.mark.parametrize("directory", ["var/lib/ovmd", "var/lib", "run/ovmd"])
def test_a_state_directory_linked_outside_the_root_is_refused(tmp_path, caplog, directory):
    paths = Paths(str(tmp_path / "root"))
    outside = tmp_path / "outside"
    outside.mkdir()
    link = tmp_path / "root" / directory
    link.parent.mkdir(parents=True)
    os.symlink(str(outside), str(link))
    with caplog.at_level(logging.ERROR, logger="ovmd.cache"):
        cache = ParamCache(paths).load()
    assert "refusing" in caplog.text and str(link) in caplog.text
    with pytest.raises(CacheError) as info:
        cache.update([(HOSTNAME, "vm1"), (ROOT_PASSWORD, PASSWORD)])
    assert "outside the root" in str(info.value)
    assert list(outside.rglob("*")) == []  # nothing written outside the root
    assert HOSTNAME not in cache


def test_a_state_directory_linked_inside_the_root_is_followed(tmp_path):
    paths = Paths(str(tmp_path / "root"))
    (tmp_path / "root/srv/ovmd").mkdir(parents=True)
    (tmp_path / "root/var/lib").mkdir(parents=True)
    os.symlink("../../srv/ovmd", str(tmp_path / "root/var/lib/ovmd"))
    ParamCache(paths).load().update([(HOSTNAME, "vm1")])
    assert ParamCache(paths).load().as_dict() == {HOSTNAME: "vm1"}
    assert os.listdir(str(tmp_path / "root/srv/ovmd")) == ["params.json.journal"]


@pytest.mark.parametrize("name, left, documented", [
    ("cache_file", 0o666, 0o600),
    ("journal", 0o644, 0o600),
    ("secret_cache_file", 0o666, 0o600),
    ("state_dir", 0o777, 0o700),
])
def test_state_files_left_open_by_someone_get_their_modes_back(paths, name, left, documented):
    write_state(paths, snapshot='{"a": "1"}', journal=line({"set": {"b": "2"}}),
                secrets=json.dumps({ROOT_PASSWORD: PASSWORD}))
    path = journal_path(paths) if name == "journal" else getattr(paths, name)
    os.chmod(path, left)
    cache = ParamCache(paths).load()
    cache.update([(HOSTNAME, "vm1")])  # opens the journal, creates the directories
    assert mode(path) == documented


# --- a full disk: nothing half-stored, nothing served that is not stored ---------------------

@pytest.fixture
def small_disk(tmp_path):
    """The state directory on a real 256 KiB tmpfs (unmounted afterwards, whatever)."""
    from testlib import mounted_tmpfs

    paths = Paths(str(tmp_path / "root"))
    with mounted_tmpfs(tmp_path / "root/var/lib/ovmd", "256k") as disk:
        yield paths, disk


def test_a_write_that_fails_for_space_is_rolled_back(small_disk):
    paths, disk = small_disk
    cache = ParamCache(paths).load()
    cache.update([("before", "1")])
    good = os.path.getsize(journal_path(paths))
    ballast = disk.fill(leave=4096)       # a page left: part of a 12 000-byte line fits
    with pytest.raises(CacheError) as info:
        cache.update([("big", "x" * 12000)])
    assert info.value.errno == errno.ENOSPC and "No space left" in str(info.value)
    assert "big" not in cache and cache.get("before") == "1"
    assert os.path.getsize(journal_path(paths)) == good  # the half line was cut off
    ballast.unlink()                      # space returns
    cache.update([("after", "2")])
    cache.close()
    assert ParamCache(paths).load().as_dict() == {"before": "1", "after": "2"}


def test_folding_the_journal_waits_for_space_and_warns_once(small_disk, monkeypatch, caplog):
    paths, disk = small_disk
    monkeypatch.setattr(cache_module, "COMPACT_LINES", 2)
    cache = ParamCache(paths).load()
    cache.update([("k0", "x" * 20000)])
    ballast = disk.fill(leave=8192)  # lines still fit; a whole new snapshot does not
    with caplog.at_level(logging.WARNING, logger="ovmd.cache"):
        for index in range(1, 4):
            cache.update([("k%d" % index, "y")])  # durable although folding fails
    assert [r.getMessage() for r in caplog.records if "fold" in r.getMessage()] \
        and len(caplog.records) == 1
    ballast.unlink()
    cache.update([("k4", "z")])
    assert read_json(paths.cache_file)["k3"] == "y"  # folded once space returned
    cache.close()
    assert ParamCache(paths).load().as_dict() == dict(
        [("k0", "x" * 20000)] + [("k%d" % i, "y") for i in range(1, 4)] + [("k4", "z")])
