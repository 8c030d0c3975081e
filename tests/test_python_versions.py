"""The sources run on the oldest Python that pyproject.toml's requires-python admits.

The dev machine and CI have one Python (3.11); `hashlib.file_digest` (3.11+) once slipped into the run-folder
fingerprint this way and broke every stage on 3.10. vermin reads the sources and names the first version each
construct and library member needs.
"""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["platform", "jobs", "scripts", "bench", "tests"]


def requires_python_minimum() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    return re.search(r'^requires-python\s*=\s*">=(\d+\.\d+)"', text, re.M).group(1)


def vermin(*paths: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).parent / "vermin"), "--no-tips", "--violations", "--eval-annotations",
           f"--target={requires_python_minimum()}-", *paths]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)


def test_no_source_needs_a_newer_python_than_requires_python():
    out = vermin(*SOURCES)
    assert out.returncode == 0, f"needs a newer Python than pyproject.toml admits:\n{out.stdout}{out.stderr}"


def test_the_check_catches_a_311_only_call(tmp_path):
    (tmp_path / "new.py").write_text('import hashlib\nhashlib.file_digest(open(__file__, "rb"), "sha256")\n')
    out = vermin(str(tmp_path / "new.py"))
    assert out.returncode != 0 and "file_digest" in out.stdout
