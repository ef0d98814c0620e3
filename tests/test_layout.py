"""synister.layout: the experiment's folders and file names, and the import layers of the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from synister import layout

REPO = Path(__file__).resolve().parents[1]


def test_setup_folders_and_checkpoint_files(tmp_path):
    setup = layout.train_setup_dir(tmp_path, "e", 3)
    assert setup == tmp_path / "e" / "02_train" / "setup_t3"
    assert layout.predict_setup_dir(tmp_path, "e", 3, 1) == tmp_path / "e/03_predict/setup_t3_p1"
    assert layout.train_id_of(setup) == 3 and layout.experiment_of(setup) == "e"
    setup.mkdir(parents=True)
    assert layout.experiment_base(setup) == tmp_path.resolve()
    beside = ["model_checkpoint_10.calibration.json", ".model_checkpoint_30.tmp123"]
    for name in ["model_checkpoint_10", "model_checkpoint_2", "model_checkpoint_x", *beside]:
        (setup / name).write_text("")
    assert layout.list_checkpoints(setup) == [
        (2, setup / "model_checkpoint_2"),
        (10, setup / "model_checkpoint_10"),
    ]
    checkpoint = layout.checkpoint_path(setup, 10)
    assert layout.calibration_path(checkpoint).name == "model_checkpoint_10.calibration.json"
    assert layout.train_config_beside(checkpoint) == setup / "train_config.ini"
    assert layout.relative_checkpoint("e", 3, 10) == "e/02_train/setup_t3/model_checkpoint_10"


def test_prediction_setups_of_one_training(tmp_path):
    root = layout.predict_root(tmp_path, "e")
    for name in ("setup_t0_p0", "setup_t0_p4", "setup_t1_p0", "setup_t0_px"):
        (root / name).mkdir(parents=True)
    assert sorted(layout.predict_numbers(root, 0)) == [0, 4]
    assert layout.predict_numbers(tmp_path / "absent", 0) == {}


def _lint_imports(cwd: Path, source: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run(
        [str(lint), "--no-cache", str(REPO / "pyproject.toml")],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_imports_run_downward_and_an_upward_one_breaks_the_contract(tmp_path):
    kept = _lint_imports(REPO, REPO / "src")
    assert kept.returncode == 0 and "1 kept, 0 broken" in kept.stdout, kept.stdout + kept.stderr
    copy = tmp_path / "src"
    shutil.copytree(REPO / "src" / "synister", copy / "synister",
                    ignore=shutil.ignore_patterns("__pycache__", "static"))  # fmt: skip
    with open(copy / "synister" / "nt.py", "a") as handle:
        handle.write("\nfrom synister.predict import engine  # upward: nt is the bottom layer\n")
    broken = _lint_imports(tmp_path, copy)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "synister.nt is not allowed to import synister.predict" in broken.stdout
    assert "synister.nt -> synister.predict.engine" in broken.stdout
