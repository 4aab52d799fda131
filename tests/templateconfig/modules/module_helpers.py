"""Helpers for the standard modules' tests: fixture roots, module processes, trees.

Modules run as real processes (``sys.executable template.d/scripts/<name> TARGET``) with
the root in ``OVM_TEMPLATE_CONFIG_ROOT``, as the runner starts them; what they did comes
back as their output params, stderr and the journal of ``OVM_TEMPLATE_CONFIG_ACTIONS``.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
from testlib import fixture_root as copy_fixture_root

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SCRIPTS = REPO / "template.d" / "scripts"


def _journal_path(root: Path) -> Path:
    return root.parent / (".journal-%s-%s.jsonl" % (root.name, os.getpid()))


def module_environ(root: Path, journal: Path, dry_run: bool = False,
                   env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """The environment the runner gives a module process working on ``root``."""
    environ = dict(os.environ)
    environ.pop("OVM_TEMPLATE_CONFIG_DRY_RUN", None)
    environ.update({"OVM_TEMPLATE_CONFIG_ROOT": str(root),
                    "OVM_TEMPLATE_CONFIG_ACTIONS": str(journal),
                    "PYTHONPATH": str(REPO) + os.pathsep + environ.get("PYTHONPATH", "")})
    if dry_run:
        environ["OVM_TEMPLATE_CONFIG_DRY_RUN"] = "1"
    environ.update(env or {})
    return environ


def start_module(name: str, target: str, params: dict, root: Path,
                 env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Start module ``name``'s ``target`` on ``root`` with ``params`` on its stdin (a file),
    its stdout and stderr on pipes (text), without waiting for it."""
    params_file = root.parent / (".params-%s-%s.json" % (root.name, os.getpid()))
    params_file.write_text(json.dumps(params))
    with open(params_file) as stdin:
        return subprocess.Popen([sys.executable, str(SCRIPTS / name), target], stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=module_environ(root, _journal_path(root), env=env))


def run_module(name: str, target: str, params: Optional[dict], root, dry_run: bool = False,
               env: Optional[Dict[str, str]] = None, timeout: float = 60
               ) -> Tuple[int, Optional[dict], str, List[dict]]:
    """Run module ``name``'s ``target`` on ``root``.

    Returns (exit status, output params or None, stderr, journal records).
    """
    root = Path(root)
    journal = _journal_path(root)
    if journal.exists():
        journal.unlink()
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), target],
                          input=json.dumps(params or {}), capture_output=True, text=True,
                          env=module_environ(root, journal, dry_run, env), timeout=timeout)
    output = None
    if proc.returncode == 0:
        output = json.loads(proc.stdout)
    records = []
    if journal.exists():
        records = [json.loads(line) for line in journal.read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        journal.unlink()
    return proc.returncode, output, proc.stderr, records


def enumerate_module(name: str, target: str) -> list:
    """The descriptors ``SCRIPT --enumerate TARGET`` prints."""
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), "--enumerate", target],
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tree(root) -> Dict[str, Tuple[int, bytes]]:
    """Snapshot of ``root``: guest path -> (mode, content); a symlink's content is
    ``b"-> target"``. Directories are not listed (an empty directory left behind by a
    module is not a change of any file)."""
    root = Path(root)
    snapshot = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            guest = "/" + os.path.relpath(path, root)
            st = os.lstat(path)
            if os.path.islink(path):
                snapshot[guest] = (0o120000, b"-> " + os.readlink(path).encode())
            else:
                with open(path, "rb") as handle:
                    snapshot[guest] = (st.st_mode & 0o7777, handle.read())
    return snapshot


def tree_diff(before: dict, after: dict) -> Dict[str, Optional[Tuple[int, bytes]]]:
    """Paths whose entry changed: path -> new (mode, content), or None if removed."""
    diff = {}
    for path in sorted(set(before) | set(after)):
        if before.get(path) != after.get(path):
            diff[path] = after.get(path)
    return diff


def commands(records: List[dict]) -> List[List[str]]:
    """The commands of a journal (run or recorded), in order."""
    return [r["argv"] for r in records if r["op"] == "command"]


def file_changes(records: List[dict]) -> List[dict]:
    """The file changes of a journal (write, remove, symlink, mkdir)."""
    return [r for r in records if r["op"] in ("write", "remove", "symlink")]


@pytest.fixture
def fixture_root(tmp_path):
    """A function copying fixture root ``name`` to a fresh temporary directory (with the
    modes a real guest has)."""
    def copy(name: str) -> Path:
        return copy_fixture_root(name, tmp_path / name)
    return copy


# --- declarative cases: a fixture root and module steps in, files and commands out ------------

GOLDEN = HERE / "golden"
UPDATE_GOLDEN = os.environ.get("OVM_UPDATE_GOLDEN") == "1"
#: Files whose content is not compared with a golden copy (only their presence and
#: mode): the saved originals, which hold the fixture's own files base64-encoded.
UNCOMPARED_SUFFIXES = (".saved",)


class Case:
    """A fixture root and the modules run on it, in the runner's order, with their params.

    ``error`` (for a negative case): the module whose run must fail, and ``message``
    the text its stderr must contain (the key and the value).
    """

    def __init__(self, name: str, root: str, steps, message: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.root = root
        self.steps = list(steps)            # [(module, params)]
        self.message = message
        self.env = env or {}

    def __repr__(self) -> str:
        return self.name


def run_steps(case: Case, root: Path, target: str = "configure", dry_run: bool = False):
    """Run the case's modules on ``root``; the list of (module, rc, output, stderr, records)."""
    results = []
    steps = case.steps if target == "configure" else list(reversed(case.steps))
    for module, params in steps:
        rc, out, err, records = run_module(module, target, params, root, dry_run=dry_run,
                                           env=case.env)
        results.append((module, rc, out, err, records))
    return results


def _normal_argv(argv: List[str], root: Path) -> List[str]:
    return [a.replace(str(root), "$ROOT") for a in argv]


def describe_changes(root: Path, before: dict, results) -> Tuple[dict, Dict[str, bytes]]:
    """What a run changed, in the golden format: (summary, path -> file content)."""
    changed = {}
    contents = {}
    for path, entry in tree_diff(before, tree(root)).items():
        if entry is None:
            changed[path] = None
        elif entry[0] == 0o120000:
            changed[path] = {"link": entry[1][3:].decode()}
        else:
            changed[path] = {"mode": "%04o" % entry[0]}
            if not path.endswith(UNCOMPARED_SUFFIXES):
                contents[path] = entry[1]
    actions = {module: [_normal_argv(r["argv"], root) for r in records if r["op"] == "command"]
               for module, _, _, _, records in results}
    return {"changed": changed, "commands": actions}, contents


def check_golden(case_name: str, summary: dict, contents: Dict[str, bytes]) -> None:
    """Compare with ``golden/<case>/`` (``expected.json`` and ``files/``); with
    ``OVM_UPDATE_GOLDEN=1`` write them instead (then review the diff before committing)."""
    directory = GOLDEN / case_name
    if UPDATE_GOLDEN:
        shutil.rmtree(directory, ignore_errors=True)
        (directory / "files").mkdir(parents=True)
        (directory / "expected.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        for path, data in contents.items():
            dest = directory / "files" / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
        return
    expected = json.loads((directory / "expected.json").read_text())
    assert summary == expected
    for path, data in contents.items():
        golden = (directory / "files" / path.lstrip("/")).read_bytes()
        assert data == golden, "%s differs from golden/%s/files%s" % (path, case_name, path)


# --- the checks every case gets ------------------------------------------------------------------

def _ok(results) -> None:
    for module, rc, _, err, _ in results:
        assert rc == 0, "%s failed:\n%s" % (module, err)


def assert_golden(case: Case, fixture_root) -> None:
    """The case's run gives the expected files and recorded commands."""
    root = fixture_root(case.root)
    before = tree(root)
    results = run_steps(case, root)
    _ok(results)
    summary, contents = describe_changes(root, before, results)
    check_golden(case.name, summary, contents)


def assert_idempotent(case: Case, fixture_root) -> None:
    """A second run changes nothing; so does one that forgot it had applied the params."""
    root = fixture_root(case.root)
    _ok(run_steps(case, root))
    first = tree(root)
    again = run_steps(case, root)
    _ok(again)
    assert tree(root) == first
    for module, _, _, _, records in again:
        assert file_changes(records) == [], module
    # Without the applied fingerprints, the modules render the same files again.
    state = root / "var/lib/ovm-template-config"
    for applied in state.glob("*.applied") if state.is_dir() else []:
        applied.unlink()
    _ok(run_steps(case, root))
    assert tree(root) == first


def _journal_content(record: dict) -> Optional[bytes]:
    if record["new"] is None:
        return None
    if record.get("encoding") == "base64":
        import base64
        return base64.b64decode(record["new"])
    return record["new"].encode("utf-8")


def assert_dry_run_matches(case: Case, fixture_root) -> None:
    """A dry run changes nothing, and its journal plans exactly what a real run writes."""
    planned_root = fixture_root(case.root)
    before = tree(planned_root)
    planned = run_steps(case, planned_root, dry_run=True)
    _ok(planned)
    assert tree(planned_root) == before
    real_root = planned_root.parent / (case.root + "-real")
    copy_fixture_root(case.root, real_root)
    real = run_steps(case, real_root)
    _ok(real)
    after = tree(real_root)
    final: Dict[str, dict] = {}
    for _, _, _, _, records in planned:
        for record in file_changes(records):
            final[record["path"]] = record
    written = {path for path, entry in tree_diff(before, after).items()}
    systemctl_made = {p for p in written if p.startswith("/etc/systemd/system/")}
    assert set(final) == written - systemctl_made
    for path, record in final.items():
        if record["op"] == "symlink":
            assert after[path] == (0o120000, b"-> " + record["target"].encode()), path
        elif record["op"] == "remove":
            assert path not in after, path
        else:
            assert after[path][1] == _journal_content(record), path
    assert [[_normal_argv(r["argv"], planned_root) for r in rs if r["op"] == "command"]
            for *_, rs in planned] == \
        [[_normal_argv(r["argv"], real_root) for r in rs if r["op"] == "command"] for *_, rs in real]


def assert_cleanup_restores(case: Case, fixture_root, kept=()) -> None:
    """configure then cleanup gives the fixture's tree back (except the paths ``kept``)."""
    root = fixture_root(case.root)
    before = tree(root)
    _ok(run_steps(case, root))
    assert tree(root) != before
    _ok(run_steps(case, root, target="cleanup"))
    after = tree(root)
    assert {p: v for p, v in after.items() if p not in kept} == \
        {p: v for p, v in before.items() if p not in kept}


def assert_invalid_changes_nothing(case: Case, fixture_root) -> None:
    """The last step fails naming the key and value; nothing on the root changed."""
    root = fixture_root(case.root)
    before = tree(root)
    results = run_steps(case, root)
    module, rc, out, err, records = results[-1]
    assert rc != 0, "%s accepted an invalid value" % module
    assert case.message in err, err
    assert file_changes(records) == []
    assert tree(root) == before


class GoldenSuite:
    """The checks every standard module's cases get, declared once (Ignition-style).

    A test class sets ``CASES`` (inputs with an expected tree under ``golden/``) and
    ``INVALID`` (inputs that must be refused); ``tests/templateconfig/modules/conftest.py`` parametrizes
    ``case`` and ``invalid_case`` from them. Each case gets: the expected tree and
    recorded actions, idempotency, a dry run that plans exactly what a real run writes,
    and, for the invalid ones, an unchanged tree with a message naming key and value.
    """

    CASES: List[Case] = []
    INVALID: List[Case] = []

    def test_golden(self, case, fixture_root):
        assert_golden(case, fixture_root)

    def test_idempotent(self, case, fixture_root):
        assert_idempotent(case, fixture_root)

    def test_dry_run_plans_what_a_real_run_writes(self, case, fixture_root):
        assert_dry_run_matches(case, fixture_root)

    def test_invalid_values_change_nothing(self, invalid_case, fixture_root):
        assert_invalid_changes_nothing(invalid_case, fixture_root)


class CleanupSuite(GoldenSuite):
    """GoldenSuite for modules with a cleanup target: configure then cleanup gives the
    fixture back (directories configure created stay, empty; trees list files and links)."""

    def test_cleanup_restores_the_fixture(self, case, fixture_root):
        assert_cleanup_restores(case, fixture_root)
