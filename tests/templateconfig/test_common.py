"""templateconfig.common: root-aware, atomic, journaled, plan-mode-aware helpers."""
from __future__ import annotations

import json
import os
import stat

import pytest

from templateconfig import common


@pytest.fixture
def guest(tmp_path, monkeypatch):
    """A sandbox root with a journal; plan mode off; a fresh view of the guest."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    journal = tmp_path / "journal"
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(root))
    monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ACTIONS", str(journal))
    monkeypatch.delenv("OVM_TEMPLATE_CONFIG_DRY_RUN", raising=False)
    common.new_guest()
    return root, journal


def records(journal):
    if not journal.exists():
        return []
    return [json.loads(line) for line in journal.read_text().splitlines()]


def snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
            out[os.path.relpath(path, root)] = (st.st_mode, data)
    return out


class TestPaths:
    def test_root_path_joins_under_root(self, guest):
        root, _ = guest
        assert common.root_path("/etc/hosts") == str(root / "etc/hosts")

    def test_dotdot_cannot_escape_the_root(self, guest):
        root, _ = guest
        assert common.root_path("/etc/../../../outside") == str(root / "outside")

    def test_relative_guest_path_is_refused(self, guest):
        with pytest.raises(ValueError, match="absolute"):
            common.root_path("etc/hosts")


class TestWriteFile:
    def test_creates_parents_and_records(self, guest):
        root, journal = guest
        assert common.write_file("/etc/sub/dir/f.conf", "a=1\n", mode=0o640) is True
        path = root / "etc/sub/dir/f.conf"
        assert path.read_text() == "a=1\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        writes = [r for r in records(journal) if r["op"] == "write"]
        assert writes == [{"op": "write", "path": "/etc/sub/dir/f.conf", "mode": 0o640, "old": None,
                           "new": "a=1\n", "encoding": "utf-8", "secret": False, "applied": True}]

    def test_keeps_mode_and_owner_of_existing_file(self, guest):
        root, _ = guest
        path = root / "etc/keep"
        path.write_text("old\n")
        os.chmod(path, 0o600)
        os.chown(path, 123, 456)
        common.write_file("/etc/keep", "new\n")
        st = path.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 123, 456)
        assert path.read_text() == "new\n"

    def test_unchanged_file_is_not_rewritten(self, guest):
        root, journal = guest
        common.write_file("/etc/same", "x\n")
        inode = (root / "etc/same").stat().st_ino
        assert common.write_file("/etc/same", "x\n") is False
        assert (root / "etc/same").stat().st_ino == inode
        assert len([r for r in records(journal) if r["op"] == "write"]) == 1

    def test_secret_content_stays_out_of_the_journal(self, guest):
        _, journal = guest
        common.write_file("/etc/key", "-----BEGIN KEY-----\nsecretbits\n", mode=0o600, secret=True)
        text = journal.read_text()
        assert "secretbits" not in text
        assert records(journal)[-1]["secret"] is True

    def test_no_temporary_files_left(self, guest):
        root, _ = guest
        common.write_file("/etc/a", "1")
        common.write_file("/etc/a", "2")
        assert sorted(os.listdir(root / "etc")) == ["a"]

    def test_binary_content_is_journaled_as_base64(self, guest):
        _, journal = guest
        common.write_file("/etc/bin", b"\xff\xfe\x00")
        assert records(journal)[-1]["encoding"] == "base64"


class TestPlanMode:
    def test_nothing_changes_and_everything_is_recorded(self, guest, monkeypatch):
        root, journal = guest
        (root / "etc/existing").write_text("before\n")
        before = snapshot(root)
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_DRY_RUN", "1")
        assert common.write_file("/etc/existing", "after\n")
        common.write_file("/etc/new/file", "n\n")
        common.remove_file("/etc/existing")
        common.symlink("/etc/link", "/usr/share/zoneinfo/UTC")
        assert common.run_cmd(["touch", str(root / "etc/touched")]) == ""
        assert snapshot(root) == before
        ops = [(r["op"], r.get("path") or r.get("argv"), r["applied"]) for r in records(journal)]
        assert ops == [
            ("write", "/etc/existing", False), ("write", "/etc/new/file", False),
            ("remove", "/etc/existing", False), ("symlink", "/etc/link", False),
            ("command", ["touch", str(root / "etc/touched")], False),
        ]

    def test_later_reads_see_planned_content(self, guest, monkeypatch):
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_DRY_RUN", "1")
        common.write_file("/etc/planned", "v1\n")
        assert common.read_file("/etc/planned") == "v1\n"
        common.remove_file("/etc/planned")
        assert common.read_file("/etc/planned") is None
        assert not common.exists("/etc/planned")

    def test_query_cmd_still_runs(self, guest, monkeypatch):
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_DRY_RUN", "1")
        assert common.query_cmd(["echo", "hi"]) == "hi\n"



class TestGuestView:
    """The process's view of the guest: made from the environment, replaced explicitly."""

    def test_a_new_view_has_nothing_planned(self, guest, monkeypatch):
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_DRY_RUN", "1")
        common.write_file("/etc/planned", "v1\n")
        assert common.read_file("/etc/planned") == "v1\n"
        common.new_guest()
        assert common.read_file("/etc/planned") is None

    def test_plan_mode_can_be_switched_on_without_the_environment(self, guest):
        root, journal = guest
        common.guest().plan_only()
        assert common.dry_run()
        assert common.write_file("/etc/planned", "x\n")
        assert not (root / "etc/planned").exists()
        assert [(r["op"], r["applied"]) for r in records(journal)] == [("write", False)]
        assert "OVM_TEMPLATE_CONFIG_DRY_RUN" not in os.environ

    def test_the_view_follows_a_changed_environment(self, guest, tmp_path, monkeypatch):
        other = tmp_path / "other"
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_ROOT", str(other))
        assert common.root() == str(other)
        assert common.root_path("/etc/hosts") == str(other / "etc/hosts")

class TestCommands:
    def test_run_cmd_returns_stdout_and_passes_stdin(self, guest):
        assert common.run_cmd(["cat"], input="via stdin") == "via stdin"

    def test_failure_raises_with_code_and_stderr_but_not_stdin(self, guest):
        with pytest.raises(common.CommandError) as info:
            common.run_cmd(["sh", "-c", "cat >/dev/null; echo broken >&2; exit 3"], input="s3cret")
        assert info.value.returncode == 3
        assert "broken" in str(info.value)
        assert "s3cret" not in str(info.value)

    def test_success_return_codes(self, guest):
        assert common.run_cmd(["sh", "-c", "exit 4"], success_return_code=(0, 4)) == ""

    def test_missing_command(self, guest):
        with pytest.raises(common.CommandError) as info:
            common.run_cmd(["/nonexistent/tool"])
        assert info.value.returncode == 127

    def test_shell_cmd(self, guest):
        assert common.shell_cmd("echo a | tr a b") == "b\n"

    def test_run_cmd_refuses_a_string(self, guest):
        with pytest.raises(TypeError):
            common.run_cmd("echo hi")

    def test_system_cmd_is_recorded_not_run_under_a_sandbox_root(self, guest):
        root, journal = guest
        marker = root / "ran"
        assert common.system_cmd(["touch", str(marker)]) == ""
        assert not marker.exists()
        assert records(journal)[-1] == {"op": "command", "argv": ["touch", str(marker)], "applied": False}


class TestSysconfig:
    def test_edit_keeps_comments_order_and_quotes_when_needed(self):
        text = "# comment\nNETWORKING=yes\nHOSTNAME=old\nOTHER='x y'\nHOSTNAME=dup\n"
        out = common.edit_sysconfig_text(text, {"HOSTNAME": "new.example.com", "GATEWAY": "10.0.0.1",
                                                 "OTHER": None, "NAME": "a b"})
        assert out == ("# comment\nNETWORKING=yes\nHOSTNAME=new.example.com\n"
                       "GATEWAY=10.0.0.1\nNAME=\"a b\"\n")

    def test_parse_roundtrip(self):
        text = common.edit_sysconfig_text("", {"A": 'quote " and $var', "B": "plain"})
        assert common.parse_sysconfig(text) == {"A": 'quote " and $var', "B": "plain"}

    def test_edit_sysconfig_file_is_idempotent(self, guest):
        root, _ = guest
        (root / "etc/sysconfig").mkdir()
        (root / "etc/sysconfig/ovmd").write_text("# keep me\nINITIAL_CONFIG=yes\n")
        assert common.edit_sysconfig("/etc/sysconfig/ovmd", {"INITIAL_CONFIG": "no"})
        assert not common.edit_sysconfig("/etc/sysconfig/ovmd", {"INITIAL_CONFIG": "no"})
        assert (root / "etc/sysconfig/ovmd").read_text() == "# keep me\nINITIAL_CONFIG=no\n"
        assert common.read_sysconfig("/etc/sysconfig/ovmd") == {"INITIAL_CONFIG": "no"}


class TestServiceControl:
    def test_detects_systemd_and_records_enable_under_sandbox(self, guest, monkeypatch):
        root, journal = guest
        (root / "usr/lib/systemd/system").mkdir(parents=True)
        monkeypatch.setenv("PATH", "/nonexistent")  # no systemctl here: recorded, not run
        control = common.service_control()
        assert control.kind == "systemd"
        control.enable("chronyd")
        control.restart("chronyd")
        argvs = [(r["argv"], r["applied"]) for r in records(journal)]
        assert argvs == [(["systemctl", "--root=%s" % root, "enable", "chronyd"], False),
                         (["systemctl", "--no-block", "restart", "chronyd"], False)]

    def test_detects_chkconfig_on_sysv_guests(self, guest):
        root, journal = guest
        (root / "sbin").mkdir()
        (root / "sbin/chkconfig").write_text("")
        control = common.service_control()
        assert control.kind == "chkconfig"
        control.disable("iptables")
        control.stop("iptables")
        assert [r["argv"] for r in records(journal)] == [["chkconfig", "iptables", "off"],
                                                         ["service", "iptables", "stop"]]

    # Runtime changes never wait for the service: during a first boot the configuration
    # runs before services that are ordered after it (chrony, sshd), and a blocking
    # systemctl would wait for a job that cannot start until the configuration is done.
    @pytest.mark.parametrize("kind, action, argv", [
        ("systemd", "start", ["systemctl", "--no-block", "start", "chrony"]),
        ("systemd", "restart", ["systemctl", "--no-block", "restart", "chrony"]),
        ("systemd", "try-restart", ["systemctl", "--no-block", "try-restart", "chrony"]),
        ("systemd", "stop", ["systemctl", "--no-block", "stop", "chrony"]),
        ("chkconfig", "restart", ["service", "chrony", "restart"]),
        ("chkconfig", "try-restart", ["service", "chrony", "condrestart"]),
        ("update-rc.d", "restart", ["invoke-rc.d", "chrony", "restart"]),
        ("update-rc.d", "try-restart", ["invoke-rc.d", "chrony", "try-restart"]),
    ])
    def test_runtime_argv_per_init_system(self, guest, kind, action, argv):
        _, journal = guest
        control = common.ServiceControl(kind)
        assert control.runtime_argv(action, "chrony") == argv
        {"start": control.start, "restart": control.restart, "stop": control.stop,
         "try-restart": control.try_restart}[action]("chrony")
        assert [(r["argv"], r["applied"]) for r in records(journal)] == [(argv, False)]

    @pytest.mark.parametrize("kind", ["systemd", "chkconfig", "update-rc.d"])
    def test_a_sandbox_root_has_no_running_service_to_ask_about(self, guest, kind):
        root, _ = guest
        (root / "var/lock/subsys").mkdir(parents=True)
        (root / "var/lock/subsys/network").write_text("")
        assert common.ServiceControl(kind).is_active("network") is None


class TestRootConfinement:
    """Every file operation stays inside the root: a link on the way that leads outside is
    refused with an error naming it; a link at a file written whole is replaced."""

    @pytest.fixture
    def outside(self, tmp_path):
        place = tmp_path / "outside"
        place.mkdir()
        (place / "file").write_text("the host's own\n")
        (place / "file").chmod(0o777)
        return place

    def link(self, root, guest_path, target):
        path = root / guest_path.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(str(target), str(path))
        return path

    @pytest.mark.parametrize("action, call", [
        ("read", lambda: common.read_file("/etc/ssh/sshd_config")),
        ("write", lambda: common.write_file("/etc/ssh/ssh_host_rsa_key", "KEY", mode=0o600,
                                            secret=True)),
        ("create the directory", lambda: common.ensure_dir("/etc/ssh/sub")),
        ("remove", lambda: common.remove_file("/etc/ssh/ssh_host_rsa_key")),
        ("create the link", lambda: common.symlink("/etc/ssh/link", "target")),
        ("change the mode of", lambda: common.set_metadata("/etc/ssh/file", 0o600)),
        ("write", lambda: common.atomic_write(common.root_path("/etc/ssh/x"), b"x")),
    ])
    def test_a_directory_linked_outside_is_refused(self, guest, outside, action, call):
        root, journal = guest
        link = self.link(root, "/etc/ssh", outside)
        with pytest.raises(common.TemplateConfigError) as info:
            call()
        message = str(info.value)
        assert message.startswith("refusing to %s " % action)
        assert "%s is a symbolic link to %s, outside the root %s" % (link, outside, root) \
            in message
        assert sorted(os.listdir(str(outside))) == ["file"]  # nothing written outside
        assert records(journal) == []

    def test_a_file_linked_outside_is_replaced_with_the_modules_mode(self, guest, outside):
        root, _ = guest
        link = self.link(root, "/etc/hostname", outside / "file")
        assert common.write_file("/etc/hostname", "vm1\n") is True
        assert not link.is_symlink() and link.read_text() == "vm1\n"
        assert stat.S_IMODE(link.stat().st_mode) == 0o644  # not the link's, not 0777
        assert (outside / "file").read_text() == "the host's own\n"
        assert stat.S_IMODE((outside / "file").stat().st_mode) == 0o777

    def test_a_file_linked_outside_is_never_read(self, guest, outside):
        root, _ = guest
        self.link(root, "/etc/shadow", outside / "file")
        with pytest.raises(common.TemplateConfigError, match="refusing to read .*etc/shadow"):
            common.read_file("/etc/shadow")

    def test_a_link_leading_outside_is_removed_not_followed(self, guest, outside):
        root, _ = guest
        link = self.link(root, "/etc/old.conf", outside / "file")
        assert common.remove_file("/etc/old.conf") is True
        assert not os.path.lexists(str(link)) and (outside / "file").exists()

    def test_links_inside_the_root_are_followed(self, guest):
        root, _ = guest
        (root / "srv/conf").mkdir(parents=True)
        (root / "srv/conf/app.conf").write_text("old\n")
        (root / "srv/conf/app.conf").chmod(0o640)
        self.link(root, "/etc/app", "../srv/conf")
        self.link(root, "/etc/absolute", root / "srv/conf")  # absolute, but inside
        assert common.read_file("/etc/app/app.conf") == "old\n"
        assert common.write_file("/etc/absolute/app.conf", "new\n") is True
        assert (root / "srv/conf/app.conf").read_text() == "new\n"
        assert stat.S_IMODE((root / "srv/conf/app.conf").stat().st_mode) == 0o640

    def test_a_file_linked_inside_keeps_the_mode_of_the_file_it_names(self, guest):
        root, _ = guest
        (root / "etc/shadow.real").write_text("root:x:1::::::\n")
        (root / "etc/shadow.real").chmod(0o640)
        self.link(root, "/etc/shadow", "shadow.real")
        common.write_file("/etc/shadow", "root:$6$new:1::::::\n", secret=True)
        assert stat.S_IMODE((root / "etc/shadow").stat().st_mode) == 0o640

    def test_in_plan_mode_a_refused_path_is_refused_too(self, guest, outside, monkeypatch):
        root, _ = guest
        self.link(root, "/etc/ssh", outside)
        monkeypatch.setenv("OVM_TEMPLATE_CONFIG_DRY_RUN", "1")
        common.new_guest()
        with pytest.raises(common.TemplateConfigError, match="outside the root"):
            common.write_file("/etc/ssh/ssh_host_rsa_key", "KEY")
