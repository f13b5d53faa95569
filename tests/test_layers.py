"""The layering of README "Layout", kept by import-linter (`.importlinter`): a module imports only layers below it."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--config", str(folder / ".importlinter"), "--no-cache"], cwd=folder,
                          capture_output=True, text=True, env={"PYTHONPATH": str(folder), "PATH": "/usr/bin:/bin"})


def test_the_package_keeps_its_layers():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_a_wrong_way_import_breaks_the_contract(tmp_path):
    """The same check on a copy where the config module imports the pipeline (even inside a function) fails."""
    shutil.copytree(ROOT / "rlhf", tmp_path / "rlhf", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path)
    config = tmp_path / "rlhf" / "config.py"
    config.write_text(config.read_text() + "\n\ndef _upward():\n    from rlhf import pipeline  # noqa\n")
    result = lint(tmp_path)
    assert result.returncode != 0 and "0 kept, 1 broken" in result.stdout
    assert "rlhf.config -> rlhf.pipeline" in result.stdout
