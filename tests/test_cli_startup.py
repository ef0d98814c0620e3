"""`synister --help`, `synister COMMAND --help` and `synister --version` start quickly: they
import no torch, tensorstore or pandas (seconds of start-up each), whoever adds a command.

Each check runs in a fresh interpreter (what was imported in this one says nothing)."""

from __future__ import annotations

import json
import subprocess
import sys

import typer

from synister import __version__
from synister.cli import app

#: what no help may import
HEAVY = ("torch", "tensorstore", "pandas")


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )


def _command_paths(command, path=()) -> list[tuple[str, ...]]:
    """Every command and group of the tree, hidden ones too (they have help as well)."""
    paths = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        paths += _command_paths(sub, (*path, name))
    return paths


def test_importing_the_cli_loads_no_heavy_module():
    result = _fresh(
        "import sys, json, synister.cli\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    assert json.loads(result.stdout) == []


def test_every_help_loads_no_heavy_module():
    """All `COMMAND --help` in one fresh interpreter, as the process would run them."""
    paths = _command_paths(typer.main.get_command(app))
    assert len(paths) > 25 and ("predict-positions",) in paths and ("db", "import") in paths
    code = (
        "import sys, json\n"
        "from synister.cli import app\n"
        "loaded = {}\n"
        f"for path in {[list(p) for p in paths]!r}:\n"
        "    try:\n"
        "        app([*path, '--help'], prog_name='synister')\n"
        "    except SystemExit as stop:\n"
        "        assert stop.code in (0, None), (path, stop.code)\n"
        f"    loaded[' '.join(path)] = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
        "print('\\n' + json.dumps(loaded))"
    )
    result = _fresh(code)
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert len(loaded) == len(paths)
    assert {path: heavy for path, heavy in loaded.items() if heavy} == {}


def test_version():
    result = _fresh("from synister.cli import app; app(['--version'], prog_name='synister')")
    assert result.stdout.strip() == f"synister {__version__}"
