"""synister.predict.store and .report: output tables written a slice at a time, bounded links."""

from __future__ import annotations

import numpy as np
import pandas as pd

from synister.predict.positions import synapse_table
from synister.predict.report import LINK_POINTS, REPORT_POINTS, link_rows, points_per_link
from synister.predict.store import write_synapse_files
from synister.tables import spreadsheet_safe

CLASSES = ["gaba", "acetylcholine", "glutamate", "serotonin", "octopamine", "dopamine"]


def test_tables_written_in_slices_equal_the_whole_table_written_at_once(tmp_path):
    n = 11
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "row": np.arange(n),
            "id": np.arange(n) + 100,
            # no neuron in the first slice, a formula-like id in the last
            "neuron_id": [None] * 4 + ["a", "b", "a", "=cmd()", "b", "-2", None],
            "x_nm": rng.random(n) * 1e4,
            "y_nm": rng.random(n) * 1e4,
            "z_nm": rng.random(n) * 1e4,
        }
    )
    probabilities = rng.dirichlet(np.ones(6), n).astype(np.float32)
    probabilities[[0, 1, 2, 9]] = np.nan  # rows outside the volume: first slice all of them
    status = np.where(np.isnan(probabilities[:, 0]), "outside_volume", "ok")
    synapses = synapse_table(rows, probabilities, CLASSES, status)

    sliced = tmp_path / "sliced"
    sliced.mkdir()
    write_synapse_files(sliced, synapses, csv=True, slice_rows=3)
    synapses.to_parquet(tmp_path / "whole.parquet", index=False)  # pandas, all at once
    expected = pd.read_parquet(tmp_path / "whole.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(sliced / "synapses.parquet"), expected)
    pd.testing.assert_frame_equal(expected, synapses)
    text = (sliced / "synapses.csv").read_text()
    assert text == spreadsheet_safe(synapses).to_csv(index=False)
    assert text.count("\n") == n + 1 and "'=cmd()" in text and ",-2," in text

    empty = tmp_path / "empty"
    empty.mkdir()
    write_synapse_files(empty, synapses.iloc[:0], csv=True)
    assert len(pd.read_parquet(empty / "synapses.parquet")) == 0
    assert (empty / "synapses.csv").read_text().startswith("row,id,neuron_id,x_nm")


def test_a_neurons_link_shows_at_most_link_points_evenly_spread():
    few = np.array([5, 9, 12])
    np.testing.assert_array_equal(link_rows(few), few)
    many = np.arange(10_000) * 3
    shown = link_rows(many)
    assert len(shown) == LINK_POINTS and len(set(shown.tolist())) == LINK_POINTS
    assert shown[0] == many[0] and shown[-1] == many[-1]  # from the first to the last
    assert np.ptp(np.diff(shown)) <= 3  # evenly: gaps of 30 +- one row


def test_all_links_of_a_report_stay_within_its_budget_small_neurons_whole():
    assert points_per_link([5, 80, 3000]) == LINK_POINTS  # within budget: no neuron cut
    counts = [100] * 10_000  # 1,000,000 synapses of 10,000 neurons
    cap = points_per_link(counts)
    assert cap == REPORT_POINTS // 10_000
    counts = [3] * 20_000 + [50_000] * 40
    cap = points_per_link(counts)
    shown = sum(min(c, cap) for c in counts)
    assert shown <= REPORT_POINTS < shown + 40  # the largest such cap
    assert min(counts) <= cap  # the small ones whole
