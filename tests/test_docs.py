"""The docs site: its tutorials and how-to guides run as written, and its references list every
command, option and config key.

The console blocks of the tutorials and how-to guides run top to bottom, page after page in the
order of the site's navigation, in one shell in one empty folder (the how-to guides go on from
the folder the workflow tutorial leaves). A block inside an admonition titled "Needs ..." (a GPU,
a cluster, the internet) is not run; the page says so. In a block written as a transcript
(``$ command`` lines followed by output), the output shown must appear in what the commands
print. The Python tutorial's blocks then run in the same folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from warm import WARM

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts" / "docs"))
import reference  # noqa: E402  (scripts/docs/reference.py: the generated reference pages)

#: What a block that the tests do not run may need (the admonition's title starts so).
NEEDS = ("Needs a GPU", "Needs a cluster", "Needs the internet", "Needs your data")


@dataclass
class Block:
    page: str
    line: int
    language: str
    code: str
    needs: str | None  # the title of the "Needs ..." admonition it stands in


def run_pages() -> list[str]:
    """The tutorial and how-to pages, in the order of the site's navigation."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return re.findall(r":\s*((?:tutorials|how-to)/[\w.-]+\.md)\s*$", nav, re.MULTILINE)


def page_blocks(page: str) -> list[Block]:
    """Every fenced block of ``page`` with the admonition it stands in, if any."""
    blocks, admonition = [], None  # admonition: (indent, title)
    lines = (DOCS / page).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        if admonition and line.strip() and indent <= admonition[0]:
            admonition = None
        opened = re.match(r"(\s*)(?:!!!|\?\?\?\+?)\s+\w+(?:\s+\"(.*)\")?", line)
        if opened:
            admonition = (len(opened.group(1)), opened.group(2) or "")
        fence = re.match(r"(\s*)```(\w*)", line)
        if fence:
            pad, code, start = fence.group(1), [], i + 1
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                code.append(lines[i][len(pad) :])
                i += 1
            title = admonition[1] if admonition else None
            needs = title if title and title.startswith("Needs") else None
            blocks.append(Block(page, start, fence.group(2), "\n".join(code), needs))
        i += 1
    return blocks


def transcript(code: str) -> tuple[list[str], list[str]]:
    """The commands (``$ ...`` lines and their continuations) and output lines of a block."""
    commands, output, continued = [], [], False
    for line in code.splitlines():
        if line.startswith("$ ") or continued:
            command = line[2:] if line.startswith("$ ") and not continued else line
            if continued:
                commands[-1] += "\n" + command
            else:
                commands.append(command)
            continued = line.rstrip().endswith("\\")
        elif line.strip():
            output.append(line)
    return commands, output


def script_of(blocks: list[Block], outputs: Path) -> str:
    """One bash script running every block that needs nothing the tests lack."""
    # a server a page starts in the background (`... &`) stops with the script, even a failed one
    parts = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]
    for n, block in enumerate(blocks):
        if block.language != "console" or block.needs:
            continue
        parts.append(f"echo '=== {block.page} line {block.line}' >&2")
        if block.code.lstrip().startswith("$ "):
            commands, _ = transcript(block.code)
            parts += [f"{{ {c}\n}} >> {outputs / f'{n}.txt'} 2>&1" for c in commands]
        else:
            parts.append(block.code)
    return "\n".join(parts) + "\n"


def all_blocks() -> list[Block]:
    return [block for page in run_pages() for block in page_blocks(page)]


def test_every_console_block_runs_or_says_what_it_needs():
    pages = run_pages()
    assert "tutorials/workflow.md" in pages and "how-to/service.md" in pages
    blocks = all_blocks()
    for block in blocks:
        where = f"{block.page}:{block.line}"
        if block.needs:
            assert block.needs.startswith(NEEDS), f"{where}: say what it needs: {NEEDS}"
        if block.language == "console" and not block.needs:
            assert "..." not in block.code, f"{where}: a block that runs has no '...'"
            assert "\ncd " not in "\n" + block.code, f"{where}: no cd: one folder for all"
    assert [b for b in blocks if b.page == "tutorials/python-api.md" and b.language == "python"]
    [workflow] = [
        b for b in blocks if b.page == "tutorials/workflow.md" and "--tolerance" in b.code
    ]
    commands = [line.strip() for line in workflow.code.splitlines()]
    assert [c for c in commands if c.startswith("synister evaluate --setup") and "*" in c]


# ---- the stand-ins for a reader's own tables (how-to/your-data.md, predict-a-table.md) -------


def write_stand_in_tables(folder: Path) -> None:
    """Small tables in the forms of male-VNC, neuPrint, FlyWire and CATMAID exports, with
    positions inside the tutorial's synthetic volume (40 x 384 x 384 voxels of 40 x 4 x 4 nm):
    what the how-to guides' commands read in place of the reader's files."""
    rng = np.random.default_rng(0)
    n = 36  # 12 neurons of 3 synapses; 6 acetylcholine, 6 GABA
    x_nm, y_nm = rng.uniform(200, 1300, n), rng.uniform(200, 1300, n)
    z_nm = rng.uniform(300, 1300, n)
    body = np.repeat(np.arange(10001, 10013), 3)
    (folder / "malevnc").mkdir()
    for nt, part in (("acetylcholine", slice(0, n // 2)), ("gaba", slice(n // 2, n))):
        pd.DataFrame(
            {
                "body": body[part],
                "x": np.round(x_nm[part] / 8).astype(int),
                "y": np.round(y_nm[part] / 8).astype(int),
                "z": np.round(z_nm[part] / 8).astype(int),
                "conf": 0.9,
                "syn_id": np.arange(n)[part] + 1,
            }
        ).to_csv(folder / "malevnc" / f"{nt}.csv", index=False)
    pd.DataFrame(
        {
            "bodyId": body,
            "x": np.round(x_nm / 8).astype(int),
            "y": np.round(y_nm / 8).astype(int),
            "z": np.round(z_nm / 8).astype(int),
        }
    ).to_csv(folder / "neuprint_synapses.csv", index=False)
    pd.DataFrame(
        {
            "id": np.arange(n) + 1,
            "pre_pt_root_id": body + 720575940000000000,
            "pre_pt_position": [
                [int(x / 4), int(y / 4), int(z / 40)]
                for x, y, z in zip(x_nm, y_nm, z_nm, strict=True)
            ],
        }
    ).to_parquet(folder / "flywire_synapses.parquet")
    pd.DataFrame(
        {"skeleton_id": body, "connector_id": np.arange(n) + 1, "x": x_nm, "y": y_nm, "z": z_nm}
    ).to_csv(folder / "catmaid_connectors.csv", index=False)


# ---- the run ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_tutorials_and_how_to_guides_run_as_written(tmp_path, monkeypatch):
    blocks = all_blocks()
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    write_stand_in_tables(work)
    script = tmp_path / "docs.sh"
    script.write_text(script_of(blocks, outputs))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNISTER_")}
    # the synister of this environment, as after `bash scripts/install.sh`; each `synister` a
    # process forked from one that imported it already (warm.py)
    env["PATH"] = f"{WARM.bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONUNBUFFERED"] = "1"
    result = subprocess.run(
        ["bash", str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, (
        f"the docs' console blocks failed (exit {result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )

    for n, block in enumerate(blocks):  # transcripts show what the commands print
        if block.language == "console" and not block.needs and block.code.startswith("$ "):
            printed = " ".join((outputs / f"{n}.txt").read_text().split())
            for line in transcript(block.code)[1]:
                assert " ".join(line.split()) in printed, f"{block.page}:{block.line}: {line}"

    check_workflow_results(work)
    check_output_tables(work)

    monkeypatch.chdir(work)  # the Python tutorial, in the same folder
    namespace: dict = {}
    for block in blocks:
        if block.page == "tutorials/python-api.md" and block.language == "python":
            exec(compile(block.code, f"{block.page}:{block.line}", "exec"), namespace)
    assert (work / "neurons.png").stat().st_size > 5_000


def check_workflow_results(work: Path) -> None:
    validation = json.loads((work / "eval_validation" / "metrics.json").read_text())
    assert sorted(validation["runs"]) == ["skeleton_resnet_t0_p0", "skeleton_resnet_t0_p1"]
    for metrics in validation["runs"].values():
        assert metrics["completeness"]["status"] == "complete"
        assert metrics["meta"]["split_part"] == "validation"
        assert metrics["synapse"]["n"] == metrics["completeness"]["expected"] > 0
    assert validation["best"]["iteration"] in (10, 20)
    test = json.loads((work / "eval_test" / "metrics.json").read_text())
    [metrics] = test["runs"].values()
    assert metrics["meta"]["split_part"] == "test"
    assert validation["final"]["iteration"] in (10, 20)
    assert metrics["iteration"] == validation["final"]["iteration"]  # --best-of eval_validation
    assert metrics["completeness"]["status"] == "complete"
    assert (work / "eval_test" / "report.html").stat().st_size > 10_000


# ---- the output tables' reference ---------------------------------------------------------------


def documented_columns(table: str, optional: bool = False) -> dict[str, str]:
    """Column -> type of the table under the heading ``table`` of reference/outputs.md; with
    ``optional`` only the columns written "only where" something holds."""
    text = (DOCS / "reference" / "outputs.md").read_text(encoding="utf-8")
    section = re.split(r"^## ", text, flags=re.MULTILINE)
    [body] = [s for s in section if s.split("\n", 1)[0].strip().startswith(f"`{table}`")]
    columns = {}
    rows = re.findall(r"^\| ((?:`[^`]+`(?:, )?)+) \| ([^|]+) \|(.*)$", body, re.MULTILINE)
    for names, kind, rest in rows:
        if optional and "only where" not in rest:
            continue
        for name in re.findall(r"`([^`]+)`", names):
            columns[name] = kind.strip()
    return columns


def check_output_tables(work: Path) -> None:
    """Every column of the outputs the guides wrote is in reference/outputs.md, with its type,
    and nothing documented is missing (class columns stand for one per class)."""
    classes = {"gaba", "ach", "glut", "oct", "ser", "da"}
    run = work / "eval_test" / "skeleton_resnet_t0_p2"
    tables = {
        "synapses.parquet": work / "positions" / "synapses.parquet",
        "neurons.parquet": work / "positions" / "neurons.parquet",
        "neurons.csv": run / "neurons.csv",
        "hemi_lineages.csv": run / "hemi_lineages.csv",
        "neurons_unclear.csv": run / "neurons_unclear.csv",
        "explanations.csv": work / "explained" / "explanations.csv",
    }
    for name, path in tables.items():
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        documented = documented_columns(name)
        for column, dtype in frame.dtypes.items():
            key = "<class>" if column in classes else column
            assert key in documented, f"reference/outputs.md: {name} lacks column {column}"
            kind = documented[key]
            assert _type_matches(dtype, kind), f"{name}.{column}: {dtype} but documented {kind}"
        found = {"<class>" if c in classes else c for c in frame.columns}
        absent = set(documented) - found - set(documented_columns(name, optional=True))
        assert not absent, f"{name}: documented but absent: {absent}"


def _type_matches(dtype, documented: str) -> bool:
    kind, documented = str(dtype).lower(), documented.lower()
    words = {
        "int": ("int",),
        "float": ("float",),
        "string": ("object", "string", "str"),
        "bool": ("bool",),
    }
    return any(kind.startswith(p) for word, ps in words.items() if word in documented for p in ps)


# ---- the generated references -------------------------------------------------------------------


def test_cli_reference_lists_every_command_and_option():
    page = reference.cli_reference()
    commands = reference.cli_commands()
    assert len(commands) > 25
    for words, command, ctx in commands:
        name = " ".join(words)
        assert f"## {name} {{#{reference.anchor(name)}}}" in page, name
        for param in reference.visible_params(command):
            names = param.get_help_record(ctx)[0] if param.get_help_record(ctx) else param.name
            assert f"`{names}`" in page, f"{name}: {names}"
            for opt in param.opts:
                assert opt in page
    # every subcommand --help lists is there, and nothing hidden
    assert "predict-volume-worker" not in page and "--parent-pid" not in page


def test_config_reference_lists_every_key_with_type_default_and_meaning():
    page = reference.config_reference()
    for model in reference.ini_models():
        section = page.split(f"## {model.FILE_NAME}")[1].split("\n## ")[0]
        for key, field in model.model_fields.items():
            [row] = [r for r in section.splitlines() if r.startswith(f"| `{key}` |")]
            cells = [c.strip() for c in row.strip("|").split(" | ")]
            assert len(cells) == 4 and all(cells), f"{model.FILE_NAME} {key}: {row}"
            assert field.description and cells[3], f"{model.FILE_NAME} {key} has no meaning"
    for table, model in reference.service_sections():
        section = page.split(f"### [{table}]")[1].split("\n### ")[0]
        for key in model.model_fields:
            assert f"| `{key}` |" in section, f"service.toml [{table}] {key}"


def test_service_api_reference_lists_every_route():
    page = reference.service_api_reference()
    routes = reference.service_routes(reference.service_openapi())
    assert len(routes) >= 8
    for method, path, _ in routes:
        assert f"## {method} `{path}`" in page
