"""The README's workflow block runs as written, top to bottom, in a fresh shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from warm import WARM

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- README workflow:"


def workflow_block(text: str) -> str:
    """The ```console block that follows the marker comment."""
    after = text.split(MARKER)
    assert len(after) == 2, f"README.md must hold the marker {MARKER!r} exactly once"
    match = re.match(r"[^\n]*-->\s*\n```console\n(.*?)\n```", after[1], re.DOTALL)
    assert match, "the marker must be followed by a ```console block"
    return match.group(1)


def test_the_workflow_block_is_runnable_as_written():
    block = workflow_block(README.read_text(encoding="utf-8"))
    commands = [line.strip() for line in block.splitlines()]
    assert not [c for c in commands if c.startswith("cd ")], "no cd: every path is from one folder"
    assert "$EDITOR" not in block and "..." not in block
    assert [c for c in commands if c.startswith("synister evaluate --setup") and "*" in c]


@pytest.mark.slow
def test_readme_workflow_runs_top_to_bottom(tmp_path):
    script = tmp_path / "workflow.sh"
    script.write_text(workflow_block(README.read_text(encoding="utf-8")) + "\n")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNISTER_")}
    # the synister of this environment, as after `bash scripts/install.sh`
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    # each `synister` a process forked from one that imported it already (warm.py): the
    # script's dozen commands do not each pay the ~3 s of CPU that the imports take
    env["PATH"] = f"{WARM.bin}{os.pathsep}{env['PATH']}"
    result = subprocess.run(
        ["bash", "-e", str(script)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"the README's workflow failed (exit {result.returncode}):\n"
        f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )

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
    assert metrics["iteration"] == validation["best"]["iteration"]  # --best-of eval_validation
    assert metrics["completeness"]["status"] == "complete"
    assert (work / "eval_test" / "report.html").stat().st_size > 10_000
