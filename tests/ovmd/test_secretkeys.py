"""Which keys the daemon keeps off the disk: by name, and by the modules' descriptors as the
runner's enumerate cache records them (docs/formats.md §1 and §6).

The enumerate cache is written by the runner's own code (``templateconfig.run.enumcache``),
so these tests also hold the daemon to the format the runner really writes.
"""
from __future__ import annotations

import json
import os

import pytest

from ovmd.cache import ParamCache
from ovmd.paths import Paths
from ovmd.secretkeys import PUBLIC, SECRET, UNKNOWN, SecretKeys, script_identity
from templateconfig.run.enumcache import EnumerateCache

ORACLE = "com.oracle.linux."
DESCRIPTORS = [
    {"key": "com.mycompany.pin", "password": True},      # a password by its flag only
    {"key": "com.mycompany.note", "password": False},
    {"key": "com.mycompany.token", "password": "yes"},    # flags as strings count too
    {"key": "com.mycompany.level"},                        # no flag: not a password
]


@pytest.fixture
def paths(tmp_path):
    return Paths(str(tmp_path))


def add_module(paths, name="mymodule", target="configure", priority=50):
    scripts = os.path.join(paths.template_d, "scripts")
    os.makedirs(scripts, exist_ok=True)
    os.makedirs(paths.target_dir(target), exist_ok=True)
    script = os.path.join(scripts, name)
    with open(script, "w") as handle:
        handle.write("#!/bin/sh\necho '[]'\n")
    os.symlink("../scripts/%s" % name,
               os.path.join(paths.target_dir(target), "%02d%s" % (priority, name)))
    return script


def enumerated(paths, script, descriptors, target="configure"):
    """What the runner writes after enumerating ``script``."""
    cache = EnumerateCache(paths)
    cache.put(target, script, script_identity(script), descriptors)
    cache.save()


def kinds(paths, keys):
    known = SecretKeys(paths)
    known.refresh()
    return {key: known.classify(key) for key in keys}


KEYS = ["com.mycompany.pin", "com.mycompany.note", "com.mycompany.token",
        "com.mycompany.level", "com.mycompany.other", ORACLE + "network.hostname",
        ORACLE + "root-password", "com.mycompany.db-password"]


@pytest.mark.parametrize("layout, expected", [
    # no module enabled for configure: no module can flag anything
    ("no modules", [PUBLIC, PUBLIC, PUBLIC, PUBLIC, PUBLIC, PUBLIC, SECRET,
                    SECRET]),
    # a module enabled, its enumerate output not known yet: third-party keys wait in /run
    ("not enumerated", [UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, PUBLIC, SECRET, SECRET]),
    # enumerated: the flags decide, and undeclared keys are public (every module is known)
    ("enumerated", [SECRET, PUBLIC, SECRET, PUBLIC, PUBLIC, PUBLIC, SECRET, SECRET]),
    # the script changed since: its old flags still count, its other keys are unknown again
    ("script changed", [SECRET, UNKNOWN, SECRET, UNKNOWN, UNKNOWN, PUBLIC, SECRET, SECRET]),
    # a second module enabled since, not enumerated yet
    ("another module", [SECRET, PUBLIC, SECRET, PUBLIC, UNKNOWN, PUBLIC, SECRET, SECRET]),
    # enumerated for another target only: what it declares counts, configure is not known
    ("other target", [SECRET, PUBLIC, SECRET, PUBLIC, UNKNOWN, PUBLIC, SECRET, SECRET]),
    # an unreadable enumerate cache tells nothing
    ("garbage cache", [UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, PUBLIC, SECRET, SECRET]),
])
def test_how_each_key_is_classified(paths, layout, expected):
    if layout != "no modules":
        script = add_module(paths)
        if layout in ("enumerated", "script changed", "another module"):
            enumerated(paths, script, DESCRIPTORS)
        if layout == "other target":
            enumerated(paths, script, DESCRIPTORS, target="cleanup")
        if layout == "script changed":
            with open(script, "a") as handle:
                handle.write("# changed\n")
        if layout == "another module":
            add_module(paths, "newer", priority=60)
        if layout == "garbage cache":
            os.makedirs(paths.report_dir, exist_ok=True)
            with open(paths.enumerate_cache_file, "w") as handle:
                handle.write("{not json")
    assert kinds(paths, KEYS) == dict(zip(KEYS, expected))


@pytest.mark.parametrize("flag, secret", [
    (True, True), ("yes", True), ("True", True), (1, True), ("on", True),
    (False, False), ("no", False), ("false", False), (0, False), (None, False), ("", False),
])
def test_a_password_flag_is_read_as_the_runner_reads_it(paths, flag, secret):
    script = add_module(paths)
    enumerated(paths, script, [{"key": "com.mycompany.pin", "password": flag}])
    assert kinds(paths, ["com.mycompany.pin"]) == {
        "com.mycompany.pin": SECRET if secret else PUBLIC}


def durable_text(paths):
    text = ""
    for path in (paths.cache_file, paths.cache_file + ".journal"):
        if os.path.exists(path):
            with open(path, encoding="utf-8") as handle:
                text += handle.read()
    return text


def run_secrets(paths):
    try:
        with open(paths.secret_cache_file, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        return {}


def test_a_key_not_known_yet_waits_in_run_then_goes_where_its_flag_says(paths):
    script = add_module(paths)
    cache = ParamCache(paths).load()
    cache.update([("com.mycompany.pin", "4711-4711"), ("com.mycompany.note", "hello"),
                  (ORACLE + "network.hostname", "vm1")])
    # before the module's descriptors are known: neither third-party value is on disk
    assert "4711" not in durable_text(paths) and "hello" not in durable_text(paths)
    assert run_secrets(paths) == {"com.mycompany.pin": "4711-4711",
                                  "com.mycompany.note": "hello"}
    assert "vm1" in durable_text(paths)
    assert cache.is_secret("com.mycompany.note")  # not sent back on the daemon's account
    enumerated(paths, script, DESCRIPTORS)  # a run enumerated the modules
    cache.refresh()
    assert run_secrets(paths) == {"com.mycompany.pin": "4711-4711"}
    assert "hello" in durable_text(paths) and "4711" not in durable_text(paths)
    assert cache.wipe_secrets() == ["com.mycompany.pin"]  # after a successful configure
    cache.close()
    assert ParamCache(paths).load().as_dict() == {"com.mycompany.note": "hello",
                                                  ORACLE + "network.hostname": "vm1"}


def test_a_key_flagged_after_it_was_stored_leaves_the_disk(paths):
    cache = ParamCache(paths).load()
    cache.update([("com.mycompany.pin", "4711-4711"), ("com.mycompany.note", "hello")])
    assert "4711" in durable_text(paths)  # no module enabled: nothing flagged it
    script = add_module(paths)
    enumerated(paths, script, DESCRIPTORS)
    cache.refresh()
    assert "4711" not in durable_text(paths) and "hello" in durable_text(paths)
    assert run_secrets(paths) == {"com.mycompany.pin": "4711-4711"}
    assert cache.get("com.mycompany.pin") == "4711-4711"


def test_a_restart_before_the_descriptors_are_known_keeps_the_waiting_keys(paths):
    add_module(paths)
    ParamCache(paths).load().update([("com.mycompany.pin", "4711-4711")])
    restarted = ParamCache(paths).load()  # /run survives a daemon restart
    assert restarted.get("com.mycompany.pin") == "4711-4711"
    assert "4711" not in durable_text(paths)
