"""The ``synister db`` and ``synister split`` commands, run in-process through typer's CliRunner."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from synister.cli import app
from synister.db import open_database

runner = CliRunner()


def invoke(*args: str, env: dict | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


@pytest.fixture
def tables(tmp_path):
    """Three transmitter tables in voxels of (40, 4, 4) nm with columns named like the VNC's."""
    folder = tmp_path / "tables"
    folder.mkdir()
    next_id = 1
    for t, nt in enumerate(("gaba", "acetylcholine", "glutamate")):
        lines = ["body,x,y,z,conf,syn_id"]
        for body in range(20):
            for i in range(5 + body % 4):
                lines.append(f"{100 * t + body},{i},{2 * i},{3},0.9,{next_id}")
                next_id += 1
        (folder / f"{nt}.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture
def url(tmp_path, tables):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = invoke(
        "db", "import", "--db", url, "--units", "voxels", "--voxel-size", "x=4,y=4,z=40", tables
    )
    assert result.exit_code == 0, result.output
    assert "imported 390 synapses, 60 skeletons" in result.stdout
    return url


def test_stats_json_is_one_document(url):
    result = invoke("db", "stats", "--db", url, "--json")
    assert result.exit_code == 0
    stats = json.loads(result.stdout)
    assert stats["synapses"] == 390 and stats["skeletons"] == 60
    assert stats["transmitters"]["gaba"]["skeletons"] == 20
    with open_database(url) as db:
        first = db.synapses(synapse_ids=[2]).iloc[0]
    assert first[["z", "y", "x"]].tolist() == [120.0, 8.0, 4.0]


def test_db_comes_from_environment(url):
    result = invoke("db", "stats", "--json", env={"SYNISTER_DB": url})
    assert json.loads(result.stdout)["synapses"] == 390


def test_validate_exit_status(url, tmp_path):
    assert invoke("db", "validate", "--db", url).exit_code == 1  # table skeletons: no hemilineage
    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "synapses.json").write_text(
        json.dumps({"1": {"x": 1, "y": 1, "z": 1, "skeleton_id": 5}})
    )
    (tmp_path / "clean" / "skeletons.json").write_text(
        json.dumps({"5": {"hemi_lineage_id": 1, "nt_known": ["gaba"]}})
    )
    (tmp_path / "clean" / "hemi_lineages.json").write_text(
        json.dumps({"1": {"nt_guess": None, "hemi_lineage_name": "X"}})
    )
    clean = f"sqlite:///{tmp_path / 'clean.db'}"
    assert invoke("db", "import", "--db", clean, tmp_path / "clean").exit_code == 0
    result = invoke("db", "validate", "--db", clean, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


def test_bad_input_is_one_line_without_traceback(url, tables):
    before = json.loads(invoke("db", "stats", "--db", url, "--json").stdout)
    (tables / "gaba.csv").write_text("body,x,y,z,conf,syn_id\n1,1,oops,3,0.9,999\n")
    result = invoke("db", "import", "--db", url, tables / "gaba.csv")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "gaba.csv, column y, line 2: 'oops' is not a number" in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(invoke("db", "stats", "--db", url, "--json").stdout) == before


def test_split_make_show_list_remove(url):
    result = invoke(
        "split",
        "make",
        "--db",
        url,
        "--by",
        "skeleton",
        "--name",
        "s",
        "--seed",
        "4",
        "--tolerance",
        "0.1",
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(invoke("split", "show", "--db", url, "s", "--json").stdout)
    assert shown["meta"]["grouping"] == "skeleton" and shown["meta"]["seed"] == 4
    assert set(shown["parts"]) == {"gaba", "acetylcholine", "glutamate"}
    assert sum(p["synapses"] for nt in shown["parts"].values() for p in nt.values()) == 390
    assert json.loads(invoke("split", "list", "--db", url, "--json").stdout).keys() == {"s"}

    again = invoke("split", "make", "--db", url, "--name", "s")
    assert again.exit_code == 1 and "already stored" in again.stderr
    assert "remove it with `synister split remove s`" in again.stderr

    assert invoke("split", "remove", "--db", url, "s").exit_code == 0
    missing = invoke("split", "show", "--db", url, "s")
    assert missing.exit_code == 1 and "no split named 's'" in missing.stderr


def test_split_missing_its_targets_is_stored_with_a_warning_unless_strict(url):
    args = ("split", "make", "--db", url, "--nt", "gaba,glutamate", "--tolerance", "0")
    strict = invoke(*args, "--name", "x", "--strict")
    assert strict.exit_code == 1 and "Traceback" not in strict.output
    assert strict.stderr.startswith("error: no split by skeleton brings every transmitter")
    assert "--tolerance 0 of its targets (--strict)" in strict.stderr
    assert json.loads(invoke("split", "list", "--db", url, "--json").stdout) == {}

    result = invoke(*args, "--name", "x")
    assert result.exit_code == 0, result.output
    assert "stored split 'x'" in result.stdout
    assert "transmitter     part          synapses   share  target  groups" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING: ")]
    assert warnings[-1].startswith("WARNING: the best split by skeleton needs --tolerance 0.0")
    assert any("20 neurons, the largest (skeleton " in w for w in warnings)
    shown = invoke("split", "show", "--db", url, "x")
    assert shown.exit_code == 0 and shown.stderr.splitlines() == warnings


def test_a_transmitter_that_cannot_fill_every_part_fails(url):
    with open_database(url) as db:  # two acetylcholine neurons only
        db.import_records(
            synapses=pd.DataFrame(
                {"synapse_id": [9001, 9002], "z": [0.0] * 2, "y": [0.0] * 2, "x": [1.0, 2.0]}
            ).assign(skeleton_id=[9001, 9002]),
            skeletons=pd.DataFrame(
                {"skeleton_id": [9001, 9002], "nt_known": [["dopamine"], ["dopamine"]]}
            ),
        )
    result = invoke("split", "make", "--db", url, "--name", "x", "--tolerance", "0.99")
    assert result.exit_code == 1
    assert "(none for dopamine in " in result.stderr
    assert "dopamine: 2 neurons, the largest (skeleton 900" in result.stderr
    assert json.loads(invoke("split", "list", "--db", url, "--json").stdout) == {}


def test_split_make_refuses_names_that_cannot_become_run_names(url):
    result = invoke("split", "make", "--db", url, "--name", "my split")
    assert result.exit_code == 1
    assert "split name 'my split' cannot be part of a prediction run name" in result.stderr
    long_name = invoke("split", "make", "--db", url, "--name", "x" * 30)
    assert long_name.exit_code == 1 and "at most 24" in long_name.stderr


@pytest.mark.parametrize(
    "command",
    [
        ["db", "validate"],
        ["db", "stats"],
        ["db", "export", "OUT"],
        ["split", "show", "s"],
        ["split", "list"],
        ["split", "remove", "s"],
        ["split", "make", "--name", "s"],
        ["db", "register-run", "r", "--classes", "gaba"],
    ],
)
def test_commands_on_a_mistyped_sqlite_path_create_nothing(tmp_path, command):
    path = tmp_path / "experimnts" / "synister.db"
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    result = invoke(*args, "--db", f"sqlite:///{path}")
    assert result.exit_code == 1
    assert f"no SQLite database at {path}" in result.stderr
    assert not (tmp_path / "experimnts").exists() and not (tmp_path / "out").exists()


def test_import_counts_skeletons_without_transmitter(tmp_path):
    (tmp_path / "skeletons.json").write_text(
        json.dumps(
            {
                "1": {"hemi_lineage_id": None, "nt_known": ["none"]},
                "2": {"hemi_lineage_id": None},
                "3": {"hemi_lineage_id": None, "nt_known": ["gaba"]},
            }
        )
    )
    url = f"sqlite:///{tmp_path / 'n.db'}"
    result = invoke("db", "import", "--db", url, tmp_path / "skeletons.json")
    assert result.exit_code == 0, result.output
    assert "2 of the skeletons have no known transmitter" in result.stdout


def test_database_errors_never_show_the_password(tmp_path):
    result = invoke("db", "stats", "--db", "postgresq://synister:pw-123@localhost/db")
    assert result.exit_code == 1
    assert "unsupported database URL 'postgresq://synister@localhost/db'" in result.stderr
    assert "pw-123" not in result.output


def test_export_writes_three_files(url, tmp_path):
    result = invoke("db", "export", "--db", url, "--format", "parquet", tmp_path / "out")
    assert result.exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "hemi_lineages.parquet",
        "skeletons.parquet",
        "synapses.parquet",
    ]
    assert invoke("db", "export", "--db", url, "--format", "xml", tmp_path / "o").exit_code == 1


@pytest.mark.parametrize(
    "command",
    [
        ["db"],
        ["db", "import"],
        ["db", "validate"],
        ["db", "stats"],
        ["db", "export"],
        ["split"],
        ["split", "make"],
        ["split", "show"],
        ["split", "list"],
        ["split", "remove"],
        ["db", "register-run"],
    ],
)
def test_every_command_has_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "--help" in result.stdout
    if len(command) == 2:
        assert "--db" in result.stdout


def test_register_run_takes_the_class_order_of_an_original_train_config(tmp_path, monkeypatch):
    """A MongoDB run of the original code (mongomock stands in for the server)."""
    mongomock = pytest.importorskip("mongomock")
    client = mongomock.MongoClient()
    monkeypatch.setattr("pymongo.MongoClient", lambda url: client)
    url = "mongodb://localhost:27017/fafb"
    client["fafb"].synapses.insert_one({"synapse_id": 1, "x": 0, "y": 0, "z": 0})
    client["fafb_predictions"]["skeleton_vgg_t1_p1"].insert_one(
        {"synapse_id": 1, "prediction": [0.1, 0.2, 0.3, 0.4]}
    )
    from test_config import SEED_TRAIN  # the original README's train_config.ini

    seed_types = "synapse_types = gaba, acetylcholine, glutamate, serotonin, octopamine, dopamine"
    assert seed_types in SEED_TRAIN
    three = "synapse_types = gaba, acetylcholine, glutamate\nneither_class = True"
    config = tmp_path / "train_config.ini"
    config.write_text(SEED_TRAIN.replace(seed_types, three))
    wrong = invoke("db", "register-run", "--db", url, "skeleton_vgg_t1_p1", "--classes", "gaba")
    assert wrong.exit_code == 1 and "4 classes, but 1 classes were given" in wrong.stderr
    result = invoke(
        "db", "register-run", "--db", url, "skeleton_vgg_t1_p1", "--train-config", config
    )
    assert result.exit_code == 0, result.output
    assert "classes gaba, acetylcholine, glutamate, neither" in result.stdout
    with open_database(url, create=False) as db:
        assert db.open_prediction_run("skeleton_vgg_t1_p1")[0][-1] == "neither"
    missing = invoke("db", "register-run", "--db", url, "absent", "--classes", "gaba")
    assert missing.exit_code == 1 and "no prediction run 'absent'" in missing.stderr


# ---- help texts: every command, whoever adds it, fits a narrow terminal without cut text ------


def _walk(command, path=()):
    """(path, click command) of the root, every group and every subcommand."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        if not sub.hidden:
            yield from _walk(sub, (*path, name))


def _words(text: str) -> str:
    return " ".join(text.split())


def _first_paragraph(text: str) -> str:
    return _words(text.strip().split("\n\n")[0].split("\f")[0])


def _expected_texts(command) -> list[str]:
    """Every help text ``--help`` of ``command`` must show in full."""
    import inspect

    texts = [_words(inspect.cleandoc(command.help).split("\f")[0])] if command.help else []
    texts += [_words(p.help) for p in command.params if getattr(p, "help", None)]
    for sub in getattr(command, "commands", {}).values():
        if not sub.hidden and sub.help:
            texts.append(_first_paragraph(inspect.cleandoc(sub.help)))
    return texts


def test_the_walk_finds_every_command():
    import typer

    paths = {" ".join(path) for path, _ in _walk(typer.main.get_command(app))}
    assert {"", "evaluate", "db", "db import", "split make", "predict", "demo"} <= paths
    assert len(paths) >= 20


@pytest.mark.parametrize("width", [80, 60])
def test_every_help_fits_a_narrow_terminal_without_cut_text(width):
    import typer

    for path, command in _walk(typer.main.get_command(app)):
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(width)})
        where = f"synister {' '.join(path)} --help at {width} columns"
        assert result.exit_code == 0, f"{where}: {result.output}"
        text = result.stdout
        assert "…" not in text, f"{where} cuts a text:\n{text}"
        too_long = [line for line in text.splitlines() if len(line) > width]
        assert not too_long, f"{where}: lines wider than the terminal: {too_long}"
        shown = _words(text)
        for expected in _expected_texts(command):
            assert expected in shown, f"{where} does not show in full: {expected!r}\n{text}"


def test_help_piped_to_another_program_fits_80_columns():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from warm import WARM

    script = Path(sys.executable).with_name("synister")
    if not script.exists():
        pytest.skip(f"no synister script beside {sys.executable}")
    assert "from synister.cli import main" in script.read_text()  # what the warm one runs
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    for args in (["--help"], ["evaluate", "--help"], ["db", "import", "--help"]):
        warm = WARM.bin / "synister"  # stdout is a pipe, as in `synister --help | less`
        result = subprocess.run(
            [str(warm), *args], capture_output=True, text=True, env=env, check=True
        )
        assert "…" not in result.stdout
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout


# ---- options: one name, one meaning, one help text, declared once ------------------------------

#: Options whose name means something else in these commands (name -> {command: why}); every
#: other command that has an option of the name shows the same help and takes the same type.
OTHER_MEANINGS = {
    "--out": {"train-plot": "a PNG file, not a folder"},
    "--volume": {"serve init": "NAME=PATH of a served volume, repeatable"},
    "--synapses": {"synthetic": "a number of synapses, not a table"},
    "--format": {"db export": "the export's file format, not the volume's"},
    "--split": {"synthetic-oracle": "the split to evaluate, not a filter of the synapses"},
    "--setup": {"evaluate": "prediction setups, repeatable, not a training setup"},
    "--iterations": {"demo": "the training length, not checkpoints to predict"},
    "--force": {"export-model": "replaces a bundle, not a prediction setup"},
    "--train-config": {"db register-run": "a run's class order, not a checkpoint's network"},
    "--admin": {"serve init": "the admin's name, not a flag"},
    "--port": {"serve init": "written into the new config, not overriding it"},
    "--workers": {"serve": "the service's worker processes, not predict-volume's"},
    "--overwrite": {"db export": "replaces export files, not a run"},
    "--dry-run": {"serve prune": "lists what would be removed, not a timing of blocks"},
    "--user": {"serve jobs": "whose jobs are listed, not whose tokens are revoked"},
    "--strict": {"split make": "fails on a missed share, not on positions outside the volume"},
}


def _options() -> dict[str, dict[str, object]]:
    """Long option name -> {command path: click option}, over every command, hidden ones too."""
    import typer

    found: dict[str, dict[str, object]] = {}

    def walk(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            walk(sub, (*path, name))
        for param in command.params:
            if type(param).__name__.endswith("Option"):
                name = next(o for o in param.opts if o.startswith("--"))
                found.setdefault(name, {})[" ".join(path)] = param

    walk(typer.main.get_command(app), ())
    return found


def _meaning(option) -> tuple:
    """What must agree between commands: the help, the type and its bounds, the names."""
    return (
        option.help,
        str(option.type_descriptor.annotation),
        option.min,
        option.max,
        option.multiple,
        tuple(option.opts + option.secondary_opts),
    )


def test_an_option_of_one_name_has_one_help_and_one_type_in_every_command():
    """`--db` of `db import` reads as `--db` of `evaluate`: one declaration in cli/options.py."""
    options = _options()
    differing = {}
    for name, commands in options.items():
        meanings = {}
        for command, option in commands.items():
            if command not in OTHER_MEANINGS.get(name, {}):
                meanings.setdefault(_meaning(option), []).append(command)
        if len(meanings) > 1:
            differing[name] = list(meanings.values())
    assert not differing, "options declared with more than one help or type:\n" + "\n".join(
        f"{name}: {groups}" for name, groups in sorted(differing.items())
    )
    stale = {
        (name, command)
        for name, commands in OTHER_MEANINGS.items()
        for command in commands
        if command not in options.get(name, {})
    }
    assert not stale, f"OTHER_MEANINGS names options that do not exist: {stale}"


def _declared_names(alias) -> set[str]:
    """The option names of an ``Annotated[..., typer.Option(...)]`` alias (typer takes a first
    argument that starts with "-" as a name, not a default)."""
    info = getattr(alias, "__metadata__", (None,))[0]
    if type(info).__name__ != "OptionInfo":
        return set()
    first = [info.default] if isinstance(info.default, str) and info.default[:1] == "-" else []
    return {name for decl in [*first, *info.param_decls] for name in decl.split("/")}


def test_the_shared_options_declare_the_options_of_every_command():
    """The commands take `--db`, `--model`, `--device`, ... from cli/options.py; each is one
    help text there."""
    from synister.cli import options

    options_found = _options()
    for name in ("--db", "--json", "--model", "--volume", "--dataset", "--device", "--threads",
                 "--precision", "--target-accuracy", "--out", "--progress"):  # fmt: skip
        declared = [value for value in vars(options).values() if name in _declared_names(value)]
        assert len(declared) == 1, f"{name}: declared {len(declared)} times in cli/options.py"
        help_text = declared[0].__metadata__[0].help
        for command, option in options_found[name].items():
            if command not in OTHER_MEANINGS.get(name, {}):
                assert option.help == help_text, f"{command} {name}: {option.help!r}"


def test_the_modules_that_declare_options_import_typer_and_the_standard_library_only():
    """Declaring options loads no torch, tensorstore or pandas, so help can come quickly."""
    import ast
    import sys
    from pathlib import Path

    import synister.cli

    folder = Path(synister.cli.__file__).parent
    for module in ("options", "tables", "errors"):
        tree = ast.parse((folder / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.col_offset == 0:
                assert node.level == 0 or node.module in ("options", "errors"), (
                    f"cli/{module}.py imports from .{node.module}"
                )
                names = [node.module] if node.level == 0 else []
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top == "typer" or top in sys.stdlib_module_names, (
                    f"cli/{module}.py imports {name}"
                )


def test_the_table_option_defaults_are_the_per_neuron_summary_defaults():
    from synister.cli import tables
    from synister.predict.neurons import MIN_MARGIN, MIN_SYNAPSES

    assert (tables.DEFAULT_MIN_SYNAPSES, tables.DEFAULT_MIN_MARGIN) == (MIN_SYNAPSES, MIN_MARGIN)


def test_one_fail_prints_one_line_and_exits_1():
    """Every command reports a user error through cli/errors.py:fail (no copies)."""
    import re
    from pathlib import Path

    import typer

    import synister.cli
    from synister.cli.errors import fail

    with pytest.raises(typer.Exit) as exit_info:
        fail("no such thing")
    assert exit_info.value.exit_code == 1
    folder = Path(synister.cli.__file__).parent
    copies = [
        path.name
        for path in folder.glob("*.py")
        if path.name != "errors.py" and re.search(r"^def _?fail\(", path.read_text(), re.M)
    ]
    assert not copies, f"fail defined again in {copies}"
