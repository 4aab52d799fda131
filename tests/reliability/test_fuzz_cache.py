"""Fuzz: the cache's files (docs/formats.md §1) whatever they hold, and the cache on a disk
that fills up at any moment.

1. Any bytes in ``params.json``, ``params.json.journal`` and ``secrets.json``: loading never
   fails, keeps what is readable, sets the rest aside (0600), and the next start is clean.
2. Journals of real entries with corrupt lines mixed in and a torn tail: the cache holds
   exactly what the good lines say, in order.
3. A random sequence of stores, deletes, clears and wipes on a real tmpfs that a ballast
   file fills to a random level (and empties at a random step): each operation either
   succeeds or raises :class:`~ovmd.cache.CacheError` and changes nothing; what the cache
   serves is always what a restart finds on disk.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_helpers import outcome

from ovmd.cache import CacheError, ParamCache
from ovmd.paths import Paths

FUZZ = settings(max_examples=150, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
SECRET = "com.oracle.linux.root-password"


@pytest.fixture
def fresh_root():
    made = []

    def make():
        base = Path(tempfile.mkdtemp(prefix="ovfc-", dir="/tmp"))
        made.append(base)
        return Paths(str(base))

    yield make
    for base in made:
        shutil.rmtree(str(base), ignore_errors=True)


def lay_out(paths, files):
    for path, data in zip((paths.cache_file, paths.cache_file + ".journal",
                           paths.secret_cache_file), files):
        if data is not None:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as handle:
                handle.write(data)


def asides(paths):
    found = []
    for directory in (paths.state_dir, paths.run_dir):
        if os.path.isdir(directory):
            found += [os.path.join(directory, n) for n in os.listdir(directory)
                      if ".corrupt-" in n]
    return found


some_bytes = st.one_of(st.none(), st.binary(max_size=300),
                       st.text(max_size=200).map(lambda t: t.encode("utf-8")))


@FUZZ
@given(files=st.tuples(some_bytes, some_bytes, some_bytes))
def test_any_bytes_in_the_cache_files(fresh_root, caplog, figures, files):
    paths = fresh_root()
    lay_out(paths, files)
    crashed = 1
    try:
        with caplog.at_level(logging.INFO, logger="ovmd.cache"):
            first = ParamCache(paths).load()
            kept = first.as_dict()
            first.close()
        crashed = 0
    finally:
        figures.add("fuzz", "cache: any bytes in the three files (hypothesis)", tried=1,
                    crashes=crashed)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) <= 3  # at most one line per file
    for aside in asides(paths):
        assert stat.S_IMODE(os.stat(aside).st_mode) == 0o600
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ovmd.cache"):
        again = ParamCache(paths).load()
    assert again.as_dict() == kept  # the rewritten files say the same
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


keys = st.sampled_from(["a", "b", "c\u00e9", "d\x1b[0m", SECRET, "com.x.db_PASSWORD"])
values = st.text(min_size=0, max_size=12)
entries = st.one_of(
    st.fixed_dictionaries({"set": st.dictionaries(keys, values, min_size=1, max_size=3)}),
    st.fixed_dictionaries({"del": st.lists(keys, min_size=1, max_size=2)}),
    st.just({"clear": True}),
)
corrupt_lines = st.sampled_from([b"[1]", b'{"set": [1, 2]}', b'{"set": {"a": 1}}', b"\xff\xfe",
                                 b"garbage", b'{"del": "a"}', b"{}", b"null", b"\0\0\0"])


@FUZZ
@given(lines=st.lists(st.one_of(entries, corrupt_lines), max_size=12),
       torn=st.one_of(st.none(), st.binary(min_size=1, max_size=30).filter(
           lambda b: b"\n" not in b)))
def test_good_journal_lines_count_whatever_surrounds_them(fresh_root, figures, lines, torn):
    paths = fresh_root()
    model = {}
    raw = b""
    for item in lines:
        if isinstance(item, bytes):
            raw += item + b"\n"
            continue
        raw += (json.dumps(item) + "\n").encode("utf-8")
        model.update(item.get("set", {}))
        for key in item.get("del", ()):
            model.pop(key, None)
        if item.get("clear"):
            model.clear()
    lay_out(paths, (None, raw + (torn or b""), None))
    cache = ParamCache(paths).load()
    figures.add("fuzz", "cache: journals with corrupt lines and torn tails (hypothesis)",
                tried=1, **outcome(list(model.items()), cache.as_dict()))
    assert cache.as_dict() == model
    cache.update([("after", "1")])  # the next line stands on its own
    cache.close()
    assert ParamCache(paths).load().as_dict() == dict(model, after="1")


# --- a disk that fills up ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_disk():
    from testlib import mounted_tmpfs

    base = Path(tempfile.mkdtemp(prefix="ovfd-", dir="/tmp"))
    try:
        with mounted_tmpfs(base / "disk", "512k") as disk:
            yield disk
    finally:
        shutil.rmtree(str(base), ignore_errors=True)


operations = st.lists(st.one_of(
    st.tuples(st.just("update"), st.lists(st.tuples(keys, st.integers(1, 9000)), min_size=1,
                                          max_size=3)),
    st.tuples(st.just("delete"), keys),
    st.tuples(st.just("clear"), st.none()),
    st.tuples(st.just("wipe"), st.none()),
    st.tuples(st.just("space"), st.none()),
), min_size=1, max_size=14)


REFUSED = []  # operations refused for space, over all examples


@FUZZ
@given(ops=operations, leave=st.integers(0, 40000))
def test_a_disk_that_fills_up_never_costs_a_stored_value(small_disk, figures, ops, leave):
    for name in os.listdir(str(small_disk.path)):
        target = small_disk.path / name
        shutil.rmtree(str(target)) if target.is_dir() else target.unlink()
    paths = Paths(str(small_disk.path / "root"))
    os.makedirs(paths.state_dir)
    os.makedirs(paths.run_dir)
    cache = ParamCache(paths).load()
    ballast = small_disk.fill(leave=leave)
    model = {}
    serial = 0
    sent, refused = [], 0
    for op, arg in ops:
        before = dict(model)
        try:
            if op == "update":
                pairs = []
                for key, size in arg:
                    serial += 1
                    pairs.append((key, ("%d:" % serial).ljust(size, "v")))
                cache.update(pairs)
                model.update(pairs)
                sent.extend(pairs)
            elif op == "delete":
                if cache.delete(arg):
                    model.pop(arg, None)
            elif op == "clear":
                cache.clear()
                model.clear()
            elif op == "wipe":
                cache.wipe_secrets()
                model = {k: v for k, v in model.items() if not cache.is_secret(k)}
            elif ballast.exists():
                ballast.unlink()
        except CacheError:
            refused += 1
            if op == "update":  # secrets may have been stored before the journal failed
                stored = {k: v for k, v in pairs if cache.is_secret(k) and cache.get(k) == v}
                model = dict(before, **stored)
            else:
                model = before
        assert cache.as_dict() == model  # never serves what is not stored
    REFUSED.append(refused)
    cache.close()
    final = ParamCache(paths).load().as_dict()
    figures.add("fuzz", "cache: a disk that fills up at any step (hypothesis, tmpfs)", tried=1,
                sent=len(model), stored=sum(final.get(k) == v for k, v in model.items()),
                lost=sum(final.get(k) != v for k, v in model.items()))
    assert final == model  # a restart finds exactly what was served


def test_the_disk_filled_up_in_many_cases():
    """The property above is only worth something if the disk really filled up."""
    assert sum(1 for refused in REFUSED if refused) >= len(REFUSED) // 4
