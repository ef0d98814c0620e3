"""No traceback for a user error anywhere in the CLI, whoever adds a command.

How a user error ends (decided here, and checked for every command of the real tree):
- click's usage errors (an unknown option, a missing required option, a value of the wrong
  type) keep click's form and exit status 2: the usage line, a hint, "Error: ..." last;
- every other user error is one line ``error: ...`` on stderr and exit status 1, with nothing
  written (no empty database, no output folder).
Below that, the bad inputs a new user met (issue #21), each with the message it must give.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from synister.cli import app

runner = CliRunner()
ROOT = typer.main.get_command(app)


def _commands(command, path=()) -> list[tuple[str, ...]]:
    """Every command that runs: leaves, hidden ones included, and groups that run themselves."""
    subs = getattr(command, "commands", {})
    found = [path] if not subs or getattr(command, "invoke_without_command", False) else []
    for name, sub in sorted(subs.items()):
        found += _commands(sub, (*path, name))
    return found


COMMANDS = [" ".join(path) for path in _commands(ROOT)]
#: commands that would start work or a server on arguments naming nothing: wrong values of
#: their own ({absent}: a path under a folder that does not exist)
OWN_WRONG_VALUES = {
    "synthetic": ["--out", "{absent}/out", "--preset", "nosuch"],
    "demo": ["--out", "{absent}/out", "--preset", "nosuch"],
    "serve": ["--config", "{absent}/service.toml"],
    "serve worker": ["--config", "{absent}/service.toml"],
}
#: commands that read no input
NO_INPUT = {
    "serve example-config": "prints an example config",
    "serve example-proxy": "prints an example nginx configuration",
}


def _command(path: str):
    command = ROOT
    for name in path.split():
        command = command.commands[name]
    return command


def _naming_nothing(path: str, absent: Path) -> list[str]:
    """Every required parameter of the command given a value that names nothing."""
    if path in OWN_WRONG_VALUES:
        return [a.format(absent=absent) for a in OWN_WRONG_VALUES[path]]
    args = []
    for param in _command(path).params:
        if not param.required:
            continue
        kind = str(param.type_descriptor.annotation)
        value = "1" if "int" in kind else "0.5" if "float" in kind else str(absent / param.name)
        is_option = type(param).__name__.endswith("Option")
        args += [param.opts[0], value] if is_option else [value]
    return args


def invoke(*args, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env={"SYNISTER_DB": None, **(env or {})})


def assert_one_line_error(result, *fragments: str, status: int = 1) -> str:
    """Exit ``status``, one line ``error: ...`` on stderr holding ``fragments``, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == status, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_the_tree_is_walked():
    assert {"db import", "predict-positions", "predict-volume-worker", "serve"} <= set(COMMANDS)
    assert set(OWN_WRONG_VALUES) | set(NO_INPUT) <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_refuses_arguments_that_name_nothing(path, tmp_path, monkeypatch):
    if path in NO_INPUT:
        pytest.skip(NO_INPUT[path])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the default database, ./synister.db, is not there
    result = invoke(*path.split(), *_naming_nothing(path, tmp_path / "absent"))
    assert_one_line_error(result)
    assert list(work.iterdir()) == [] and not (tmp_path / "absent").exists()


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_answers_an_unknown_option_with_its_usage(path):
    result = invoke(*path.split(), "--no-such-option")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].endswith("No such option: --no-such-option")


# -- the bad inputs of issue #21 -------------------------------------------------------------


@pytest.fixture
def world(tmp_path):
    """A database of three transmitters' tables (voxels of 4, 4, 40 nm) with a skeleton split,
    and an empty 16 x 128 x 128 volume of 40 x 4 x 4 nm voxels the synapses lie in."""
    from synister.volumes import create_volume

    tables = tmp_path / "tables"
    tables.mkdir()
    next_id = 1
    for t, nt in enumerate(("gaba", "acetylcholine", "glutamate")):
        lines = ["body,x,y,z,conf,syn_id"]
        for body in range(12):
            for i in range(5):
                lines.append(f"{100 * t + body},{40 + 4 * i},{50 + body},{8},0.9,{next_id}")
                next_id += 1
        (tables / f"{nt}.csv").write_text("\n".join(lines) + "\n")
    url = f"sqlite:///{tmp_path / 'world.db'}"
    imported = invoke("db", "import", "--db", url, "--units", "voxels", "--voxel-size",
                      "x=4,y=4,z=40", tables)  # fmt: skip
    assert imported.exit_code == 0, imported.output
    split = invoke("split", "make", "--db", url, "--name", "skeleton", "--tolerance", "0.5")
    assert split.exit_code == 0, split.output
    volume = tmp_path / "raw.zarr"
    create_volume(volume, (16, 128, 128), (40, 4, 4))
    return {"tmp": tmp_path, "url": url, "tables": tables, "volume": volume}


def prepare_training(world, *extra):
    return invoke(
        "prepare-training", "-d", world["tmp"] / "experiments", "-e", "e", "-t", "0",
        "--db", world["url"], "--raw-container", world["volume"], "--set", "network=ResNet18",
        "--set", "fmaps=2", "--set", "input_shape=4, 16, 16", "--set",
        "downsample_factors=(1, 2, 2)", *extra,
    )  # fmt: skip


def test_prepare_training_checks_the_split_and_its_classes(world):
    assert_one_line_error(
        prepare_training(world, "--split-name", "nosuch"),
        "no split named 'nosuch'",
        "split_name",
        "stored: skeleton",
        "synister split make",
    )
    line = assert_one_line_error(
        prepare_training(world, "--set", "synapse_types=gaba, serotonin"),
        "no train synapses of serotonin",
        "synapse_types",
        "it holds gaba ",
    )
    assert "synapse_types = gaba" in line
    assert not (world["tmp"] / "experiments").exists()
    ok = prepare_training(world, "--set", "synapse_types=gaba, acetylcholine, glutamate")
    assert ok.exit_code == 0, ok.output
    assert "WARNING" not in ok.stderr  # the synapses lie in the volume


def test_a_table_in_voxels_imported_as_nm_shows_at_prepare_training(world):
    bad = world["tmp"] / "bad.db"
    url = f"sqlite:///{bad}"
    assert invoke("db", "import", "--db", url, world["tables"]).exit_code == 0  # read as nm
    made = invoke("split", "make", "--db", url, "--name", "skeleton", "--tolerance", "0.5")
    assert made.exit_code == 0, made.output
    args = ["--db", url, "--set", "synapse_types=gaba, acetylcholine, glutamate"]
    result = prepare_training(world, *args, "--strict")
    assert_one_line_error(result, "likely cause: the table is in voxels, read as nm")
    warned = prepare_training(world, *args)
    assert warned.exit_code == 0 and "WARNING: split 'skeleton' part train" in warned.stderr


def test_training_with_a_missing_volume_is_one_line(world):
    made = prepare_training(
        world, "--raw-container", world["tmp"] / "nowhere.zarr", "--skip-volume-check",
        "--set", "synapse_types=gaba, acetylcholine, glutamate",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    setup = world["tmp"] / "experiments" / "e" / "02_train" / "setup_t0"
    result = invoke("train", "1", "--setup", setup, "--no-progress")
    assert_one_line_error(result, "raw_container", "no such folder", "nowhere.zarr")


def test_volume_paths_say_what_is_there(world):
    typo = prepare_training(world, "--raw-container", world["tmp"] / "raw.zar")
    assert_one_line_error(typo, "no such folder", "raw.zar")
    dataset = prepare_training(world, "--raw-dataset", "volumes/raw")
    assert_one_line_error(dataset, f"arrays in {world['volume']}: raw")


def test_split_by_hemilineage_without_hemilineages_fails(world):
    result = invoke(
        "split", "make", "--db", world["url"], "--name", "lineage", "--by", "hemi_lineage"
    )
    assert_one_line_error(result, "would be the split by skeleton", "--by skeleton")


def test_a_catch_all_file_name_is_no_transmitter(world):
    others = world["tables"] / "others.csv"
    others.write_text("body,x,y,z,conf,syn_id\n900,1,1,1,0.9,99999\n")
    url = f"sqlite:///{world['tmp'] / 'others.db'}"
    assert_one_line_error(
        invoke("db", "import", "--db", url, others), "catch-all label", "--label others"
    )
    assert not (world["tmp"] / "others.db").exists()  # a failed import creates no database
    assert invoke("db", "import", "--db", url, "--label", "others", others).exit_code == 0


def test_an_export_without_its_synapse_file_says_so(shared_data, tmp_path):
    url = f"sqlite:///{tmp_path / 'fafb.db'}"
    result = invoke("db", "import", "--db", url, shared_data / "fafb_v3")
    assert result.exit_code == 0 and "imported 0 synapses, 2,804 skeletons" in result.stdout
    assert "WARNING: no synapses were imported" in result.stderr
    validate = invoke("db", "validate", "--db", url)
    assert validate.exit_code == 1 and "synapses: 0" in validate.stdout


def test_a_misspelt_neuron_column_is_an_error_naming_the_columns(world, tmp_path):
    table = tmp_path / "typo.csv"
    table.write_text("bodyld,x,y,z\n1,100,100,200\n")
    result = invoke(
        "predict-positions", "--model", tmp_path / "none", "--volume", world["volume"],
        "--positions", table, "--out", tmp_path / "out",
    )  # fmt: skip
    assert_one_line_error(result, "'bodyld' looks like one misspelt", "--neuron-column",
                          "columns: ['bodyld', 'x', 'y', 'z']")  # fmt: skip


def test_evaluate_before_predict_says_to_predict(trained_setup, world):
    made = invoke(
        "prepare-prediction", "-d", world["tmp"] / "experiments", "-e", "e", "-t", "0",
        "--checkpoint", trained_setup.bundle, "--db", trained_setup.url, "--split-name",
        "alternate", "--raw-container", trained_setup.volume, "--raw-dataset", "raw",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    [setup] = (world["tmp"] / "experiments" / "e" / "03_predict").iterdir()
    result = invoke("evaluate", "--setup", setup, "--out", world["tmp"] / "eval")
    assert_one_line_error(result, "not predicted yet", f"synister predict {setup}")


def test_best_of_needs_an_evaluation_of_this_training(trained_setup, world):
    base = ["prepare-prediction", "-d", trained_setup.base, "-e", "tiny", "-t", "0"]
    missing = invoke(*base, "--best-of", world["tmp"] / "eval")
    assert_one_line_error(missing, "metrics.json: not found", "synister evaluate")
    (world["tmp"] / "eval").mkdir()
    run = "alternate_other_t3_p0"
    metrics = {"best": {"run": run, "iteration": 20}, "runs": {run: {"meta": {
        "experiment": "other", "train_number": 3, "split_part": "validation"}}}}  # fmt: skip
    (world["tmp"] / "eval" / "metrics.json").write_text(json.dumps(metrics))
    other = invoke(*base, "--best-of", world["tmp"] / "eval")
    assert_one_line_error(other, "is of experiment other training 3, not tiny 0")


def test_ctrl_c_of_predict_positions_says_the_rerun_resumes(world, random_bundle, monkeypatch):
    table = world["tmp"] / "nm.csv"
    pd.DataFrame({"x": [200.0], "y": [200.0], "z": [320.0]}).to_csv(table, index=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("synister.predict.store.run_positions", interrupted)
    out = world["tmp"] / "out"
    result = invoke(
        "predict-positions", "--model", random_bundle((4, 16, 16)), "--volume", world["volume"],
        "--dataset", "raw", "--positions", table, "--out", out, "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 130 and "Traceback" not in result.output, result.output
    assert f"the predictions stored in {out} are kept" in result.stderr
    assert "run the same command again to resume" in result.stderr


def test_db_import_prints_the_range_of_the_positions(world):
    url = f"sqlite:///{world['tmp'] / 'range.db'}"
    result = invoke("db", "import", "--db", url, world["tables"] / "gaba.csv")
    assert result.exit_code == 0
    # no volume to check them against before prepare-training: the range, for the eye
    assert "positions: x 40-56, y 50-61, z 8-8 nm" in result.stdout


def test_predicting_a_part_without_some_classes_is_a_warning(world, random_bundle):
    """Training needs every class; a six-class model may predict a three-transmitter part."""
    args = ["prepare-prediction", "-d", world["tmp"] / "experiments", "-e", "e", "-t", "0"]
    args += ["--checkpoint", random_bundle((4, 16, 16)), "--db", world["url"], "-v"]
    args += ["--raw-container", world["volume"], "--raw-dataset", "raw"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "WARNING: split 'skeleton' has no validation synapses of serotonin" in result.stderr
    nowhere = invoke(*args, "--split-name", "nosuch")
    assert_one_line_error(nowhere, "no split named 'nosuch'", "--skip-data-check")
