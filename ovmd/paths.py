"""Every well-known path of ovmd and the template-config framework, under one root.

Nothing else in the project spells ``/etc/...`` or ``/var/...``: code asks a
:class:`Paths` built for the configured root (``--root DIR``, ``/`` by default), so tests,
the demo and dry runs live in a sandbox tree. This module is imported on CLI fast paths:
keep it free of heavy imports.
"""
from __future__ import annotations

import os
import stat  # os imports it anyway: no cost on the fast paths

TYPE_CHECKING = False  # typing costs start-up time; type checkers read this as True
if TYPE_CHECKING:
    from typing import List, Tuple

#: Environment variable that carries ``--root`` into module processes and sub-commands.
ROOT_ENV = "OVM_TEMPLATE_CONFIG_ROOT"


def join_root(root: str, path: str) -> str:
    """``path`` (absolute, as on the guest) located under ``root``.

    ``..`` components cannot climb out of the root: the path is normalised as an
    absolute path first, then re-rooted.
    """
    if not path.startswith("/"):
        raise ValueError("expected an absolute guest path, got %r" % (path,))
    normal = os.path.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if root in ("", "/"):
        return normal
    return os.path.join(os.path.abspath(root), normal.lstrip("/"))


def root_problem(root: str) -> "str | None":
    """Why ``root`` cannot be a guest root, or None if it can.

    ``/`` always can. Any other root must be an existing directory that holds an
    ``etc`` directory, as every guest tree does: a mistyped ``--root`` must be refused
    before anything is created under it, not turned into a fresh empty tree.
    """
    if root == "/":
        return None
    if not root:
        return "the path is empty"
    for path, missing in ((root, "no such directory"), (os.path.join(root, "etc"),
                                                         "it has no etc/ directory")):
        try:
            mode = os.stat(path).st_mode
        except PermissionError:
            return "permission denied (run as root)"
        except OSError:
            return missing
        if not stat.S_ISDIR(mode):
            return "not a directory" if path == root else missing
    return None


def check_root(prog: str, root: str, source: str = "--root") -> "str | None":
    """The one-line error ``prog`` prints for a root it cannot use, or None; ``source``
    says where the root came from: ``--root``, or the name of the environment variable."""
    problem = root_problem(root)
    if problem is None:
        return None
    where = "--root %s" % root if source == "--root" else "%s=%s" % (source, root)
    return ("%s: %s: %s; a guest root is a directory holding the guest's etc/ (or / "
            "itself)\n" % (prog, where, problem))


class Paths:
    """The guest paths ovmd and ovm-template-config use, located under ``root``."""

    # Guest-absolute locations (as on a real Oracle Linux guest).
    SYSCONFIG_OVMD = "/etc/sysconfig/ovmd"
    SYSCONFIG_INITIAL_CONFIG = "/etc/sysconfig/ovm-template-initial-config"
    TEMPLATE_D = "/etc/template.d"
    STATE_DIR = "/var/lib/ovmd"
    RUN_DIR = "/run/ovmd"
    REPORT_DIR = "/var/lib/ovm-template-config"
    LOG_FILE = "/var/log/ovm-template-config.log"

    #: What sealing a template removes (``ovmd --seal``; docs/formats.md), after the
    #: cleanup target's modules removed what they own (host keys, machine-id, their
    #: ``<module>.applied`` and ``.saved``): the state that made this VM one machine to
    #: ovmd and the runner. Each entry: a guest-absolute shell pattern (``*`` any name;
    #: a name with a leading dot only where the pattern has one), what it is (for the
    #: list ``--seal`` prints), and whether it may hold secrets (then it is overwritten
    #: with zeros before it is removed). Kept: the run lock, the daemon's pid file and
    #: control socket.
    SEALED: Tuple[Tuple[str, str, bool], ...] = (
        (STATE_DIR + "/params.json", "the parameter cache", False),
        (STATE_DIR + "/params.json.journal", "the parameter cache's journal", False),
        (STATE_DIR + "/params.json*.corrupt-*", "cache content set aside as unreadable",
         False),
        (STATE_DIR + "/.params.json*.tmp", "an unfinished cache write", False),
        (STATE_DIR + "/identity.json", "the VM configured last (DETECT_CLONE)", False),
        (RUN_DIR + "/secrets.json", "the cached secrets", True),
        (RUN_DIR + "/secrets.json.corrupt-*", "secrets set aside as unreadable", True),
        (RUN_DIR + "/.secrets.json.*.tmp", "an unfinished secrets write", True),
        (RUN_DIR + "/runners/*", "a runner's directory (module processes, staged host "
         "keys)", False),
        (REPORT_DIR + "/last-run.json", "the report of the last run", False),
        (REPORT_DIR + "/last-configure-run.json", "the report of the last configure run",
         False),
        (REPORT_DIR + "/run-state.json", "the progress of an unfinished run", False),
        (REPORT_DIR + "/enumerate-cache.json", "the enumerate cache", False),
        (REPORT_DIR + "/applied-keys.json", "the keys earlier runs applied", False),
        (REPORT_DIR + "/applied-params.json", "what earlier runs applied", False),
        (LOG_FILE, "the run log", False),
        (LOG_FILE + ".*", "a rotated run log", False),
    )

    def __init__(self, root: str = "/") -> None:
        self.root = os.path.abspath(root) if root not in ("", "/") else "/"

    def __repr__(self) -> str:
        return "Paths(%r)" % self.root

    def under(self, path: str) -> str:
        """Any guest-absolute path, under this root."""
        return join_root(self.root, path)

    # --- daemon -------------------------------------------------------------------
    @property
    def sysconfig_ovmd(self) -> str:
        return self.under(self.SYSCONFIG_OVMD)

    @property
    def sysconfig_initial_config(self) -> str:
        return self.under(self.SYSCONFIG_INITIAL_CONFIG)

    @property
    def state_dir(self) -> str:
        """Durable daemon state: the non-secret parameter cache."""
        return self.under(self.STATE_DIR)

    @property
    def cache_file(self) -> str:
        return os.path.join(self.state_dir, "params.json")

    @property
    def run_dir(self) -> str:
        """Volatile, root-only: secrets, control socket, pid file (tmpfs on a real guest)."""
        return self.under(self.RUN_DIR)

    @property
    def secret_cache_file(self) -> str:
        return os.path.join(self.run_dir, "secrets.json")

    @property
    def control_socket(self) -> str:
        return os.path.join(self.run_dir, "control.sock")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.run_dir, "ovmd.pid")

    @property
    def identity_file(self) -> str:
        """The identity (XenStore ``vm`` path, first vif's MAC) of the VM the guest was
        configured as last, for ``DETECT_CLONE`` (docs/formats.md)."""
        return os.path.join(self.state_dir, "identity.json")

    @property
    def runners_dir(self) -> str:
        """Volatile, root-only: one directory per ``ovm-template-config`` process (its
        module process groups, what its modules prepared), removed when it ends."""
        return os.path.join(self.run_dir, "runners")

    # --- framework ----------------------------------------------------------------
    @property
    def template_d(self) -> str:
        return self.under(self.TEMPLATE_D)

    @property
    def scripts_dir(self) -> str:
        return os.path.join(self.template_d, "scripts")

    def target_dir(self, target: str) -> str:
        """``/etc/template.d/<target>.d``, where enabled modules are symlinked."""
        return os.path.join(self.template_d, "%s.d" % target)

    @property
    def report_dir(self) -> str:
        return self.under(self.REPORT_DIR)

    @property
    def report_file(self) -> str:
        """JSON report of the last (or current) run, read by ``ovmd --status``."""
        return os.path.join(self.report_dir, "last-run.json")

    @property
    def configure_report_file(self) -> str:
        """The last configure run's report, once a run of another target replaced it."""
        return os.path.join(self.report_dir, "last-configure-run.json")

    @property
    def run_state_file(self) -> str:
        """Progress of an unfinished run, so a restart resumes instead of redoing."""
        return os.path.join(self.report_dir, "run-state.json")

    @property
    def enumerate_cache_file(self) -> str:
        """The modules' descriptors as the runner last enumerated them (docs/formats.md
        §6); the daemon reads the password flags from it."""
        return os.path.join(self.report_dir, "enumerate-cache.json")

    @property
    def applied_keys_file(self) -> str:
        """The key names earlier successful runs applied, per target."""
        return os.path.join(self.report_dir, "applied-keys.json")

    @property
    def applied_params_file(self) -> str:
        """What each module took when it last succeeded (``--changed-only``)."""
        return os.path.join(self.report_dir, "applied-params.json")

    @property
    def log_file(self) -> str:
        return self.under(self.LOG_FILE)

    def linked_modules(self, target: str) -> List[str]:
        """The entries of ``/etc/template.d/<target>.d`` (sorted; none if it is missing):
        what the runner would consider for ``target``. Nothing linked means nothing to
        run, and no runner needs to start."""
        try:
            return sorted(name for name in os.listdir(self.target_dir(target))
                          if not name.startswith("."))
        except OSError:
            return []
