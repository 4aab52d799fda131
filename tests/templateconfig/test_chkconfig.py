"""ovm-chkconfig round trips on a sandbox root, through the real installed command.

Scripts go into <root>/etc/template.d/scripts; the expected outcome is the symlink tree
under <root>/etc/template.d and the ``--list`` table. The runner's view of the same tree
(``registry.enabled_modules``) is checked at the end.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from testlib import bin_path

from ovmd.paths import ROOT_ENV, Paths
from templateconfig import registry
from templateconfig.header import TARGETS

HEADER_COLUMNS = ["name"] + list(TARGETS)


def install_script(root: Path, name: str, targets: dict, header_name: str = None) -> Path:
    scripts = Path(Paths(str(root)).scripts_dir)
    scripts.mkdir(parents=True, exist_ok=True)
    lines = ["#!/bin/sh", "### BEGIN PLUGIN INFO", "# name: %s" % (header_name or name)]
    lines += ["# %s: %s" % item for item in targets.items()]
    lines += ["# description: test module %s" % name, "### END PLUGIN INFO", "cat", ""]
    path = scripts / name
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return path


def chkconfig(root: Path, *args: str, env_root: bool = False):
    env = dict(os.environ)
    env.pop(ROOT_ENV, None)
    argv = [bin_path("ovm-chkconfig")]
    if env_root:
        env[ROOT_ENV] = str(root)
    else:
        argv += ["--root", str(root)]
    return subprocess.run(argv + list(args), capture_output=True, text=True, env=env,
                          timeout=30)


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def tree(root: Path) -> dict:
    """Every link under template.d: relative path -> link text."""
    base = Path(Paths(str(root)).template_d)
    return {str(path.relative_to(base)): os.readlink(path)
            for path in sorted(base.rglob("*")) if path.is_symlink()}


def table(output: str) -> dict:
    """``--list`` output as {name: {target: cell}}, checking the header row."""
    rows = [line.split() for line in output.splitlines()]
    assert rows[0] == HEADER_COLUMNS
    return {row[0]: dict(zip(TARGETS, row[1:])) for row in rows[1:]}


@pytest.fixture
def root(tmp_path) -> Path:
    install_script(tmp_path, "ssh", {"configure": 70, "cleanup": 25})
    install_script(tmp_path, "selinux", {"configure": 30})
    return tmp_path


class TestAdd:
    def test_links_every_target_of_the_header(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        assert tree(root) == {"configure.d/70ssh": "../scripts/ssh",
                              "cleanup.d/25ssh": "../scripts/ssh"}
        assert (Path(Paths(str(root)).target_dir("configure")) / "70ssh").resolve() == \
            Path(Paths(str(root)).scripts_dir, "ssh").resolve()

    def test_add_twice_gives_the_same_tree(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        first = tree(root)
        ok(chkconfig(root, "--add", "ssh"))
        assert tree(root) == first

    def test_replaces_stale_links_of_the_same_name(self, root):
        configure_d = Path(Paths(str(root)).target_dir("configure"))
        suspend_d = Path(Paths(str(root)).target_dir("suspend"))
        configure_d.mkdir(parents=True)
        suspend_d.mkdir(parents=True)
        os.symlink("../scripts/ssh", str(configure_d / "10ssh"))      # old priority
        os.symlink("../scripts/gone", str(configure_d / "70ssh"))     # wrong destination
        os.symlink("../scripts/ssh", str(suspend_d / "20ssh"))        # not in the header
        os.symlink("../scripts/selinux", str(configure_d / "30selinux"))  # someone else's
        ok(chkconfig(root, "--add", "ssh"))
        assert tree(root) == {"configure.d/30selinux": "../scripts/selinux",
                              "configure.d/70ssh": "../scripts/ssh",
                              "cleanup.d/25ssh": "../scripts/ssh"}

    def test_picks_up_a_changed_priority(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        install_script(root, "ssh", {"configure": 75})
        ok(chkconfig(root, "--add", "ssh"))
        assert tree(root) == {"configure.d/75ssh": "../scripts/ssh"}

    def test_missing_script_fails_cleanly_naming_the_path(self, root):
        result = chkconfig(root, "--add", "nosuch")
        assert result.returncode == 1
        assert os.path.join(Paths(str(root)).scripts_dir, "nosuch") in result.stderr
        assert "Traceback" not in result.stderr
        assert tree(root) == {}
        assert not Path(Paths(str(root)).target_dir("configure")).exists()

    def test_bad_header_fails_with_file_and_line(self, root):
        path = install_script(root, "broken", {"configure": "high"})
        result = chkconfig(root, "--add", "broken")
        assert result.returncode == 1
        assert "%s:4: priority of target 'configure'" % path in result.stderr
        assert tree(root) == {}

    def test_name_mismatch_warns_and_uses_the_file_name(self, root):
        install_script(root, "fw", {"configure": 41}, header_name="firewall")
        result = chkconfig(root, "--add", "fw")
        assert result.returncode == 0, result.stderr
        assert "header name 'firewall' differs from the file name 'fw'" in result.stderr
        assert tree(root) == {"configure.d/41fw": "../scripts/fw"}

    @pytest.mark.parametrize("name", ["../ssh", ".hidden", "a b"])
    def test_invalid_names_are_refused(self, root, name):
        result = chkconfig(root, "--add", name)
        assert result.returncode == 1
        assert "invalid module name" in result.stderr


class TestList:
    def test_columns(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        output = ok(chkconfig(root, "--list"))
        assert table(output) == {
            "selinux": {target: "off" for target in TARGETS},
            "ssh": dict({target: "off" for target in TARGETS},
                        configure="on:70", cleanup="on:25"),
        }

    def test_columns_are_aligned(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        lines = ok(chkconfig(root, "--list")).splitlines()
        header = lines[0]
        for target in TARGETS:
            column = header.index(target)
            for line in lines[1:]:
                assert line[column] in "of", (target, line)  # every cell starts "on"/"off"
                assert line[column - 1] == " "

    def test_one_module(self, root):
        output = ok(chkconfig(root, "--list", "selinux"))
        assert list(table(output)) == ["selinux"]

    def test_unknown_module(self, root):
        result = chkconfig(root, "--list", "nosuch")
        assert result.returncode == 1
        assert "no module 'nosuch'" in result.stderr

    def test_empty_tree(self, tmp_path):
        assert table(ok(chkconfig(tmp_path, "--list"))) == {}

    def test_root_from_the_environment(self, root):
        ok(chkconfig(root, "--add", "selinux", env_root=True))
        assert table(ok(chkconfig(root, "--list", env_root=True)))["selinux"]["configure"] \
            == "on:30"

    def test_dangling_link_shows_its_module(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        os.unlink(os.path.join(Paths(str(root)).scripts_dir, "ssh"))
        result = chkconfig(root, "--list")
        assert result.returncode == 0
        assert table(result.stdout)["ssh"]["configure"] == "off"  # no longer runs
        assert "no module 'ssh'" in result.stderr


class TestTargetOnOff:
    def test_off_then_on_round_trip(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        before = tree(root)
        ok(chkconfig(root, "--target", "cleanup", "ssh", "off"))
        assert tree(root) == {"configure.d/70ssh": "../scripts/ssh"}
        assert table(ok(chkconfig(root, "--list", "ssh")))["ssh"]["cleanup"] == "off"
        ok(chkconfig(root, "--target", "cleanup", "ssh", "on"))
        assert tree(root) == before

    def test_several_targets_at_once(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        ok(chkconfig(root, "--target", "configure,cleanup", "ssh", "off"))
        assert tree(root) == {}
        ok(chkconfig(root, "--target", "configure,cleanup", "ssh", "on"))
        assert set(tree(root)) == {"configure.d/70ssh", "cleanup.d/25ssh"}

    def test_on_is_idempotent(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        before = tree(root)
        ok(chkconfig(root, "--target", "configure", "ssh", "on"))
        assert tree(root) == before

    def test_on_for_a_target_the_header_lacks_fails(self, root):
        result = chkconfig(root, "--target", "suspend", "ssh", "on")
        assert result.returncode == 1
        assert "gives no priority" in result.stderr
        assert tree(root) == {}

    def test_unknown_target(self, root):
        result = chkconfig(root, "--target", "configure,bogus", "ssh", "on")
        assert result.returncode == 1
        assert "unknown target 'bogus'" in result.stderr
        assert tree(root) == {}

    @pytest.mark.parametrize("args", [
        ["--target", "configure", "ssh"],
        ["--target", "configure", "ssh", "maybe"],
        ["--target", "configure", "ssh", "on", "extra"],
    ])
    def test_bad_usage(self, root, args):
        result = chkconfig(root, *args)
        assert result.returncode == 2
        assert "usage:" in result.stderr


class TestDel:
    def test_removes_every_link_and_keeps_the_script(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        ok(chkconfig(root, "--add", "selinux"))
        ok(chkconfig(root, "--del", "ssh"))
        assert tree(root) == {"configure.d/30selinux": "../scripts/selinux"}
        assert os.path.isfile(os.path.join(Paths(str(root)).scripts_dir, "ssh"))

    def test_del_of_a_disabled_module_is_fine(self, root):
        ok(chkconfig(root, "--del", "ssh"))
        assert tree(root) == {}

    def test_del_of_an_unknown_name_fails(self, root):
        result = chkconfig(root, "--del", "nosuch")
        assert result.returncode == 1
        assert "no module 'nosuch'" in result.stderr

    def test_del_removes_links_whose_script_is_gone(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        os.unlink(os.path.join(Paths(str(root)).scripts_dir, "ssh"))
        ok(chkconfig(root, "--del", "ssh"))
        assert tree(root) == {}


class TestCommandLine:
    def test_no_action_is_a_usage_error(self, root):
        result = chkconfig(root)
        assert result.returncode == 2
        assert "usage:" in result.stderr

    def test_two_actions_are_a_usage_error(self, root):
        result = chkconfig(root, "--add", "ssh", "--del", "ssh")
        assert result.returncode == 2

    def test_help_documents_exit_codes(self, root):
        output = ok(chkconfig(root, "--help"))
        assert "exit status: 0 success, 1 error" in output
        assert "2 bad usage" in output

    def test_version(self, root):
        assert ok(chkconfig(root, "--version")).startswith("ovm-chkconfig ")


class TestRunnerView:
    """``registry.enabled_modules``: what the runner will run, from the same tree."""

    def test_sorted_by_priority_then_name(self, root):
        install_script(root, "aaa", {"configure": 70})
        install_script(root, "network", {"configure": 50})
        for name in ("ssh", "selinux", "aaa", "network"):
            ok(chkconfig(root, "--add", name))
        paths = Paths(str(root))
        modules = registry.enabled_modules(paths, "configure")
        assert [(priority, name) for priority, name, _ in modules] == [
            (30, "selinux"), (50, "network"), (70, "aaa"), (70, "ssh")]
        assert modules[0][2] == os.path.join(paths.scripts_dir, "selinux")
        assert registry.enabled_modules(paths, "cleanup") == [
            (25, "ssh", os.path.join(paths.scripts_dir, "ssh"))]
        assert registry.enabled_modules(paths, "shutdown") == []

    def test_dangling_and_malformed_entries_are_reported_not_fatal(self, root):
        ok(chkconfig(root, "--add", "ssh"))
        paths = Paths(str(root))
        configure_d = Path(paths.target_dir("configure"))
        os.symlink("../scripts/gone", str(configure_d / "40gone"))
        os.symlink("../scripts/ssh", str(configure_d / "ssh-no-priority"))
        (configure_d / "50plainfile").write_text("not a link")
        problems = []
        modules = registry.enabled_modules(paths, "configure", problems=problems)
        assert [name for _, name, _ in modules] == ["ssh"]
        assert len(problems) == 3
        assert any("40gone: dangling link to ../scripts/gone" in p for p in problems)
        assert any("ssh-no-priority: not named <NN><name>" in p for p in problems)
        assert any("50plainfile: not a symlink" in p for p in problems)

    def test_absolute_links_stay_inside_the_root(self, root):
        paths = Paths(str(root))
        configure_d = Path(paths.target_dir("configure"))
        configure_d.mkdir(parents=True)
        os.symlink("/etc/template.d/scripts/ssh", str(configure_d / "70ssh"))
        assert registry.enabled_modules(paths, "configure") == [
            (70, "ssh", os.path.join(paths.scripts_dir, "ssh"))]

    def test_unknown_target(self, root):
        with pytest.raises(registry.RegistryError):
            registry.enabled_modules(Paths(str(root)), "configur")
