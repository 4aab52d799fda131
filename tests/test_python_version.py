"""The code must run on Python 3.9 (Oracle Linux 9's system Python): vermin checks it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def python_sources():
    files = []
    for folder in ("ovmd", "templateconfig", "scripts", "bench", "tests"):
        files += sorted(str(p) for p in (REPO / folder).rglob("*.py"))
    # module scripts have no .py suffix
    for script in sorted((REPO / "template.d" / "scripts").glob("*")):
        if script.is_file() and b"python" in script.read_bytes()[:100]:
            files.append(str(script))
    return files


def test_sources_need_no_python_newer_than_3_9():
    sources = python_sources()
    assert len(sources) > 10
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "--no-tips", "--violations", "--eval-annotations",
         "--target=3.9-", "--backport", "typing_extensions"] + sources,
        capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_catches_newer_syntax(tmp_path):
    """Guard against a check that cannot fail: 3.10+ syntax must be reported."""
    sample = tmp_path / "new.py"
    sample.write_text("def f(x: int | None):\n    match x:\n        case 1:\n            return 1\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "vermin"), "--no-tips", "--violations",
         "--eval-annotations", "--target=3.9-", str(sample)], capture_output=True, text=True)
    assert proc.returncode != 0
