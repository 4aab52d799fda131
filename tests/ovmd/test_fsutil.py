"""ovmd.fsutil: the one atomic write, kept inside its root, with modes from files only."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from ovmd.fsutil import (
    OutsideRootError,
    atomic_write,
    check_inside_root,
    open_own_file,
    read_bytes,
    set_aside,
    wipe_file,
)


@pytest.fixture
def layout(tmp_path):
    """``root`` with links inside and out, and ``outside`` (a file and a directory)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "etc/real").mkdir(parents=True)
    (root / "var").mkdir()
    outside.mkdir()
    (outside / "file").write_text("the host's own\n")
    os.symlink(str(outside), str(root / "etc/out"))               # absolute, outside
    os.symlink("../../outside", str(root / "var/up"))              # relative, outside
    os.symlink("real", str(root / "etc/in"))                       # relative, inside
    os.symlink(str(root / "etc/real"), str(root / "etc/abs-in"))   # absolute, inside
    os.symlink(str(outside / "file"), str(root / "etc/file-out"))  # a file, outside
    os.symlink("in/../out", str(root / "etc/via"))                 # in, then out
    return root, outside


@pytest.mark.parametrize("path, follow_leaf, refused_link", [
    ("etc/real/x", False, None),
    ("etc/in/x", False, None),
    ("etc/abs-in/x", False, None),
    ("etc/missing/deeper/x", False, None),  # does not exist yet: nothing to follow
    ("etc/out/x", False, "etc/out"),
    ("var/up/x", False, "var/up"),
    ("etc/via/x", False, "etc/via"),
    ("etc/out/sub/x", False, "etc/out"),
    ("etc/file-out", False, None),          # the file itself: the caller replaces it
    ("etc/file-out", True, "etc/file-out"),  # ...unless it is to be read through
    ("etc/out", True, "etc/out"),
    ("etc/in", True, None),
])
def test_check_inside_root(layout, path, follow_leaf, refused_link):
    root, _ = layout
    target = str(root / path)
    if refused_link is None:
        check_inside_root(str(root), target, follow_leaf)
        return
    with pytest.raises(OutsideRootError) as info:
        check_inside_root(str(root), target, follow_leaf, action="write")
    assert info.value.link == str(root / refused_link)
    assert str(info.value).startswith("refusing to write %s: " % target)
    assert "outside the root %s" % root in str(info.value)


def test_nothing_is_checked_for_the_real_root(layout):
    root, _ = layout
    check_inside_root("/", str(root / "etc/out/x"))
    check_inside_root(None, str(root / "etc/out/x"))


def mode(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


@pytest.mark.parametrize("link_to, mode_given, expected_mode", [
    ("outside", None, 0o644),    # never the outside file's 0777
    ("outside", 0o600, 0o600),
    ("inside", None, 0o640),     # the file the link names, inside the root
    ("dangling", None, 0o644),
])
def test_a_link_at_the_file_is_replaced_and_lends_no_mode(layout, link_to, mode_given,
                                                          expected_mode):
    root, outside = layout
    (outside / "file").chmod(0o777)
    (root / "etc/real/file").write_text("inside\n")
    (root / "etc/real/file").chmod(0o640)
    target = {"outside": str(outside / "file"), "inside": "real/file",
              "dangling": "nowhere"}[link_to]
    os.symlink(target, str(root / "etc/f"))
    atomic_write(str(root / "etc/f"), b"new\n", mode_given, make_dirs=None, root=str(root))
    assert not os.path.islink(str(root / "etc/f"))
    assert (root / "etc/f").read_bytes() == b"new\n" and mode(root / "etc/f") == expected_mode
    assert (outside / "file").read_text() == "the host's own\n"
    assert mode(outside / "file") == 0o777


def test_atomic_write_refuses_a_directory_leading_outside(layout):
    root, outside = layout
    with pytest.raises(OutsideRootError):
        atomic_write(str(root / "etc/out/new"), b"x", root=str(root))
    assert sorted(os.listdir(str(outside))) == ["file"]


def test_wipe_file_removes_a_link_and_never_zeroes_its_target(layout):
    root, outside = layout
    wipe_file(str(root / "etc/file-out"))
    assert not os.path.lexists(str(root / "etc/file-out"))
    assert (outside / "file").read_text() == "the host's own\n"


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_set_aside(tmp_path, kind):
    path = tmp_path / "params.json"
    if kind == "file":
        path.write_bytes(b"garbage")
        aside = set_aside(str(path), b"garbage")
        assert path.exists() and open(aside, "rb").read() == b"garbage"
        assert mode(aside) == 0o600
    else:
        (path / "sub").mkdir(parents=True)
        aside = set_aside(str(path))
        assert not path.exists() and os.path.isdir(aside) and mode(aside) == 0o700
    assert os.path.basename(aside).startswith("params.json.corrupt-")
    second = set_aside(str(tmp_path / "params.json"), b"again")  # never over the first
    assert second != aside and os.path.exists(aside)


@pytest.mark.parametrize("before", ["absent", "0666", "link out", "dangling link"])
def test_open_own_file_never_follows_a_link_and_puts_the_mode_back(layout, caplog, before):
    """The pid file, the run lock, the run log and the journal are opened this way."""
    root, outside = layout
    (outside / "file").chmod(0o666)
    path = root / "var/own.lock"
    if before == "0666":
        path.write_text("old\n")
        path.chmod(0o666)
    elif before == "link out":
        os.symlink(str(outside / "file"), str(path))
    elif before == "dangling link":
        os.symlink("nowhere", str(path))
    fd = open_own_file(str(path), os.O_WRONLY | os.O_APPEND, 0o600)
    try:
        os.write(fd, b"ours\n")
    finally:
        os.close(fd)
    assert not path.is_symlink() and mode(path) == 0o600
    assert path.read_text() == ("old\nours\n" if before == "0666" else "ours\n")
    assert (outside / "file").read_text() == "the host's own\n"
    assert mode(outside / "file") == 0o666
    replaced = [r.getMessage() for r in caplog.records if "symbolic link" in r.getMessage()]
    target = {"link out": str(outside / "file"), "dangling link": "nowhere"}.get(before)
    assert replaced == ([] if target is None else [
        "%s was a symbolic link (to %s), not followed: replaced by a regular file"
        % (path, target)])


def test_read_bytes_can_refuse_to_follow_a_link(layout):
    root, _ = layout
    assert read_bytes(str(root / "etc/file-out")) == b"the host's own\n"
    with pytest.raises(OSError) as info:
        read_bytes(str(root / "etc/file-out"), follow_links=False)
    assert info.value.errno == errno.ELOOP
    assert read_bytes(str(root / "etc/missing"), follow_links=False) is None
