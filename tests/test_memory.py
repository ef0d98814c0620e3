"""synister.memory: freed memory goes back to the system between a process's stages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

READ_THEN_RELEASE = """
import json, sys
from synister.memory import release_memory
from synister.tables import read_positions

def rss_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) / 1024 for l in status if l.startswith("VmRSS:"))

table = read_positions(sys.argv[1])
held = rss_mb()
release_memory()
print(json.dumps({"rows": len(table.rows), "held": held, "released": rss_mb()}))
"""


def test_reading_a_table_then_releasing_gives_the_readers_leftovers_back(tmp_path):
    n = 100_000
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "id": np.arange(n),
            "pre_pt_root_id": "neuron_" + pd.Series(rng.integers(0, 10_000, n)).astype(str),
            **{axis: rng.random(n) * 1e5 for axis in "xyz"},
        }
    )
    table.to_csv(tmp_path / "synapses.csv", index=False)
    result = subprocess.run(
        [sys.executable, "-c", READ_THEN_RELEASE, str(tmp_path / "synapses.csv")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    figures = json.loads(result.stdout)
    assert figures["rows"] == n
    # the table itself (about 8 MB) stays; the reader's buffers (about 30 MB) go
    assert figures["held"] - figures["released"] > 15, figures
