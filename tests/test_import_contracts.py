"""The import structure (setup.cfg [importlinter]): plugin -> dicom_io only, one layer per stage,
vendor codecs independent, no cycles. Runs the real import-linter, so a new cycle fails CI."""
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_linter_contracts_kept():
    exe = shutil.which("lint-imports")
    assert exe, "lint-imports not found: install the test extras (pip install -e '.[test]')"
    run = subprocess.run([exe, "--config", str(REPO / "setup.cfg"), "--no-cache"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout, run.stdout[-2000:]
