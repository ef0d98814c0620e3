"""The ``synister db`` and ``synister split`` commands, run in-process through typer's CliRunner."""

from __future__ import annotations

import json

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
        "db", "import", "--db", url, "--units", "voxels", "--voxel-size", "40,4,4", tables
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
    assert "gaba.csv, line 2: field 'y' is not a number" in result.stderr
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

    assert invoke("split", "remove", "--db", url, "s").exit_code == 0
    missing = invoke("split", "show", "--db", url, "s")
    assert missing.exit_code == 1 and "no split named 's'" in missing.stderr


def test_impossible_split_fails_and_stores_nothing(url):
    result = invoke(
        "split", "make", "--db", url, "--name", "x", "--nt", "gaba,glutamate", "--tolerance", "0"
    )
    assert result.exit_code == 1
    assert "error: transmitter" in result.stderr and "Traceback" not in result.output
    assert json.loads(invoke("split", "list", "--db", url, "--json").stdout) == {}


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
    ],
)
def test_every_command_has_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "--help" in result.stdout
    if len(command) == 2:
        assert "--db" in result.stdout


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

    script = Path(sys.executable).with_name("synister")
    if not script.exists():
        pytest.skip(f"no synister script beside {sys.executable}")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    for args in (["--help"], ["evaluate", "--help"], ["db", "import", "--help"]):
        result = subprocess.run(
            [str(script), *args], capture_output=True, text=True, env=env, check=True
        )  # stdout is a pipe, as in `synister --help | less`
        assert "…" not in result.stdout
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
