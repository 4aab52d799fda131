"""Clone detection (``DETECT_CLONE=yes``) end to end: the real daemon on the development
XenStore, whose ``--domain`` writes the ``vm`` node as libxl does. Starting "as a clone"
is what the toolstack shows a clone: dom0 rewrites ``vm`` (another VM's UUID), or, for a
toolstack without it, the first vif's MAC."""
from __future__ import annotations

import json
import re

from daemon_helpers import (
    GUEST,
    PASSWORD,
    RECORD,
    ROOT_PASSWORD,
    make_guest,
    sysconfig,
    wait_consumed,
    wait_status,
)

from ovmd.paths import Paths

HOME = "/local/domain/%d" % GUEST
CLONE_VM = "/vm/0004fb00-0006-0000-0000-0000c10e0001"
DETECT = "DETECT_CLONE=yes\n"


def first_boot(root, host, ovmd_factory, extra=DETECT):
    make_guest(root, [(10, "record", RECORD)], sysconfig_extra=extra)
    daemon = ovmd_factory(["--quiet-period", "0"])
    host.send([("com.example.hostname", "template"), (ROOT_PASSWORD, PASSWORD)])
    assert wait_status(host) == "done"
    return daemon


def identity(root):
    with open(Paths(str(root)).identity_file) as handle:
        return json.load(handle)


class TestCloneDetection:
    def test_a_clone_re_arms_first_boot_and_drops_the_params_it_was_cloned_with(
            self, root, ovmd_factory, host, dom0):
        daemon = first_boot(root, host, ovmd_factory)
        vm = dom0.read(HOME + "/vm")
        assert identity(root) == {"configured": {"vm": vm}}
        assert daemon.terminate() == 0
        dom0.write(HOME + "/vm", CLONE_VM)  # the toolstack starts a clone of that VM
        clone = ovmd_factory(["--quiet-period", "0"])
        assert re.search(r"^INITIAL_CONFIG=yes$", sysconfig(root), re.M)
        assert clone.cli("-g", "com.example.hostname").returncode == 1
        assert "this guest starts as another VM than the one it was configured as (vm %s "\
               "then, vm %s now): a clone; first boot re-armed (DETECT_CLONE=yes): "\
               "INITIAL_CONFIG=yes in %s/etc/sysconfig/ovmd, 1 param(s) of the VM it was " \
               "cloned from cleared" % (vm, CLONE_VM, root) in clone.log_text()
        # a restart before the host configured the clone keeps what came meanwhile
        wait_consumed(dom0, host.send([("com.example.hostname", "clone1")]))
        assert clone.terminate() == 0
        again = ovmd_factory(["--quiet-period", "0"])
        assert again.cli("-g", "com.example.hostname").stdout == "clone1\n"
        host.send([(ROOT_PASSWORD, PASSWORD)])
        assert wait_status(host, new=True) == "done"
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert identity(root) == {"configured": {"vm": CLONE_VM}}
        assert (root / "record-runs").read_text() == "run\nrun\n"

    def test_the_same_vm_started_again_is_no_clone(self, root, ovmd_factory, host):
        daemon = first_boot(root, host, ovmd_factory)
        assert daemon.terminate() == 0
        again = ovmd_factory()
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert again.cli("-g", "com.example.hostname").stdout == "template\n"
        assert "a clone" not in again.log_text()

    def test_without_a_vm_path_the_first_mac_tells(self, root, ovmd_factory, host, dom0):
        dom0.rm(HOME + "/vm")
        dom0.write(HOME + "/device/vif/0/mac", "00:16:3E:00:00:01")
        daemon = first_boot(root, host, ovmd_factory)
        assert identity(root) == {"configured": {"mac": "00:16:3e:00:00:01"}}
        assert daemon.terminate() == 0
        dom0.write(HOME + "/device/vif/0/mac", "00:16:3e:00:00:02")
        clone = ovmd_factory()
        assert re.search(r"^INITIAL_CONFIG=yes$", sysconfig(root), re.M)
        assert "(mac 00:16:3e:00:00:01 then, mac 00:16:3e:00:00:02 now): a clone" in \
            clone.log_text()

    def test_off_by_default(self, root, ovmd_factory, host, dom0):
        daemon = first_boot(root, host, ovmd_factory, extra="")
        assert not (root / "var/lib/ovmd/identity.json").exists()
        assert daemon.terminate() == 0
        dom0.write(HOME + "/vm", CLONE_VM)
        again = ovmd_factory()
        assert "INITIAL_CONFIG=no" in sysconfig(root)
        assert again.cli("-g", "com.example.hostname").stdout == "template\n"

    def test_a_guest_with_no_record_records_the_vm_it_runs_as(self, root, ovmd_factory,
                                                              dom0):
        make_guest(root, [(10, "record", RECORD)], initial_config="no", sysconfig_extra=DETECT)
        daemon = ovmd_factory()
        vm = dom0.read(HOME + "/vm")
        assert identity(root) == {"configured": {"vm": vm}}
        assert "clone detection: no VM recorded yet; recording this one (vm %s)" % vm in \
            daemon.log_text()
        assert "INITIAL_CONFIG=no" in sysconfig(root)

    def test_a_bad_setting_is_named_and_leaves_it_off(self, root, ovmd_factory):
        make_guest(root, [], initial_config="no", sysconfig_extra="DETECT_CLONE=maybe\n")
        daemon = ovmd_factory()
        assert "%s/etc/sysconfig/ovmd: DETECT_CLONE=maybe is not yes or no; clone " \
               "detection stays off" % root in daemon.log_text()
        assert not (root / "var/lib/ovmd/identity.json").exists()
