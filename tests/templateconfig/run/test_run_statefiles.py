"""The runner's own files stay inside the root and keep their modes
(``templateconfig.run.statefiles``, and the writers that follow its rules: the run report,
the run state, the enumerate cache, the run lock, the run log)."""
from __future__ import annotations

import logging
import os
import stat

import pytest
from runner_helpers import add_python_module, guest

from ovmd.fsutil import OutsideRootError
from ovmd.secrets import RedactingFilter
from templateconfig.run.enumcache import EnumerateCache
from templateconfig.run.lock import LockError, RunLock
from templateconfig.run.report import RunReport
from templateconfig.run.runlog import LOGGER, close_run_log, open_run_log
from templateconfig.run.runner import Runner, StateFilesError
from templateconfig.run.state import RunState
from templateconfig.run.statefiles import claim_state_files, documented_mode


def mode(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


@pytest.fixture
def paths(tmp_path):
    return guest(tmp_path)


@pytest.fixture
def outside(tmp_path):
    place = tmp_path / "outside"
    place.mkdir()
    (place / "file").write_text("the host's own\n")
    (place / "file").chmod(0o666)
    return place


def plant_link(path, target):
    path = str(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.symlink(str(target), path)


@pytest.mark.parametrize("name, expected", [
    ("last-run.json", 0o600), ("run-state.json", 0o600), ("enumerate-cache.json", 0o600),
    ("network.applied", 0o600), ("network.saved", 0o600), ("machine-id.generated", 0o644),
    ("applied-keys.json", 0o600),  # any other file there: private
])
def test_a_widened_state_file_gets_its_documented_mode_back(paths, name, expected):
    os.makedirs(paths.report_dir)
    os.chmod(paths.report_dir, 0o777)
    path = os.path.join(paths.report_dir, name)
    with open(path, "w") as handle:
        handle.write("{}\n")
    os.chmod(path, 0o777)
    assert documented_mode(name) == expected
    assert claim_state_files(paths) == [
        "%s had mode 0777: put back to 0700" % paths.report_dir,
        "%s had mode 0777: put back to %04o" % (path, expected)]
    assert mode(path) == expected and mode(paths.report_dir) == 0o700
    assert claim_state_files(paths) == []  # nothing left to put right


def test_a_link_in_the_state_directory_is_removed_never_followed(paths, outside):
    os.makedirs(paths.report_dir, mode=0o700)
    link = os.path.join(paths.report_dir, "network.applied")
    plant_link(link, outside / "file")
    assert claim_state_files(paths) == [
        "%s was a symbolic link (to %s), not followed: removed, the file is written anew"
        % (link, outside / "file")]
    assert not os.path.lexists(link)
    assert mode(outside / "file") == 0o666 and (outside / "file").read_text() == \
        "the host's own\n"


def test_narrower_modes_are_left_alone(paths):
    os.makedirs(paths.report_dir, mode=0o700)
    narrow = os.path.join(paths.report_dir, "last-run.json")
    with open(narrow, "w") as handle:
        handle.write("{}\n")
    os.chmod(narrow, 0o400)
    assert claim_state_files(paths) == []
    assert mode(narrow) == 0o400


@pytest.mark.parametrize("linked, refused", [
    ("/var/lib/ovm-template-config", "/var/lib/ovm-template-config"),
    ("/var/lib", "/var/lib"),
    ("/var/log", "/var/log"),
])
def test_a_directory_linked_out_of_the_root_is_refused(paths, outside, linked, refused):
    plant_link(paths.under(linked), outside)
    with pytest.raises(OutsideRootError) as info:
        claim_state_files(paths)
    assert info.value.link == paths.under(refused)
    assert "outside the root %s" % paths.root in str(info.value)
    assert sorted(os.listdir(str(outside))) == ["file"]


def test_the_runner_refuses_to_run_with_one_line_and_runs_nothing(paths, outside, tmp_path):
    add_python_module(paths, "mod", 50, "open(%r, 'w').close()" % str(tmp_path / "ran"))
    plant_link(paths.report_dir, outside)
    with pytest.raises(StateFilesError) as info:
        Runner(paths, "configure").run({})
    message = str(info.value)
    assert message.startswith("cannot use the runner's files, nothing was run: refusing to "
                              "use the directory %s: it is a symbolic link to %s, outside "
                              "the root" % (paths.report_dir, outside))
    assert "\n" not in message
    assert not (tmp_path / "ran").exists()
    assert sorted(os.listdir(str(outside))) == ["file"]


@pytest.mark.parametrize("writer", ["report", "state", "enumerate cache"])
def test_the_writers_replace_a_link_at_their_file(paths, outside, writer):
    path = {"report": paths.report_file, "state": paths.run_state_file,
            "enumerate cache": paths.enumerate_cache_file}[writer]
    plant_link(path, outside / "file")
    if writer == "report":
        RunReport(paths, "configure", [(50, "mod")]).write()
    elif writer == "state":
        state = RunState(paths, "configure", {"k": "v"}, ())
        assert state.load_previous() == []  # a link there is not ours: never read
        state.module_done("mod", 50, {}, [], [])
        state.close()
    else:
        cache = EnumerateCache(paths)
        cache.put("configure", paths.under("/etc/template.d/scripts"), [1, 2, 3, 4], [])
        cache.save()
    assert not os.path.islink(path) and mode(path) == 0o600
    assert (outside / "file").read_text() == "the host's own\n"
    assert mode(outside / "file") == 0o666


@pytest.mark.parametrize("writer", ["report", "state", "enumerate cache"])
def test_the_writers_never_write_through_a_directory_linked_out(paths, outside, writer):
    plant_link(paths.report_dir, outside)
    with pytest.raises(OutsideRootError):
        if writer == "report":
            RunReport(paths, "configure", [(50, "mod")]).write()
        elif writer == "state":
            RunState(paths, "configure", {"k": "v"}, ()).module_done("mod", 50, {}, [], [])
        else:
            cache = EnumerateCache(paths)
            cache.put("configure", paths.under("/etc/template.d/scripts"), [1, 2, 3, 4], [])
            cache.save()
    assert sorted(os.listdir(str(outside))) == ["file"]


def test_the_run_log_replaces_a_link_and_says_so_in_the_log(paths, outside):
    plant_link(paths.log_file, outside / "file")
    handler = open_run_log(paths, RedactingFilter())
    try:
        logging.getLogger(LOGGER).info("a line of the run")
    finally:
        close_run_log(handler)
    assert not os.path.islink(paths.log_file) and mode(paths.log_file) == 0o600
    lines = open(paths.log_file).read().splitlines()
    assert lines[0].endswith("WARNING [%d] the run log %s was a symbolic link (to %s), not "
                             "followed: replaced by a regular file"
                             % (os.getpid(), paths.log_file, outside / "file"))
    assert lines[1].endswith("a line of the run")
    assert (outside / "file").read_text() == "the host's own\n"


def test_the_run_log_in_a_directory_linked_out_is_refused(paths, outside):
    plant_link(paths.under("/var/log"), outside)
    with pytest.raises(OutsideRootError, match="refusing to append to"):
        open_run_log(paths, RedactingFilter())
    assert sorted(os.listdir(str(outside))) == ["file"]


def test_the_run_lock_puts_its_modes_back_and_replaces_a_link(paths, outside):
    os.makedirs(paths.run_dir)
    os.chmod(paths.run_dir, 0o777)
    lock_file = os.path.join(paths.run_dir, "run.lock")
    plant_link(lock_file, outside / "file")
    with RunLock(paths):
        assert not os.path.islink(lock_file) and mode(lock_file) == 0o600
    assert mode(paths.run_dir) == 0o700
    os.chmod(lock_file, 0o666)
    with RunLock(paths):
        assert mode(lock_file) == 0o600
    assert (outside / "file").read_text() == "the host's own\n"


def test_the_run_lock_in_a_directory_linked_out_is_refused_in_one_line(paths, outside):
    plant_link(paths.run_dir, outside)
    with pytest.raises(LockError) as info:
        RunLock(paths).acquire()
    assert str(info.value) == (
        "cannot open the run lock %s/run.lock: refusing to use the directory %s: it is a "
        "symbolic link to %s, outside the root %s; remove the link or make it point inside "
        "the root" % (paths.run_dir, paths.run_dir, outside, paths.root))
    assert sorted(os.listdir(str(outside))) == ["file"]
