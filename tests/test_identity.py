"""synister.identity.RunIdentity: the one resume check of every front-end."""

from __future__ import annotations

import numpy as np

from synister.identity import RunIdentity


def test_diff_names_each_differing_key_with_both_values_then_the_missing_ones():
    now = RunIdentity({"iteration": 10, "classes": ["gaba", "glutamate"], "precision": "fp32"})
    stored = {"iteration": 99, "classes": ["gaba", "glutamate"], "unrelated": 1}
    assert now.diff(stored) == ["iteration=99 (now 10)", "precision (not stored; now 'fp32')"]
    assert now.diff(now.to_json()) == []
    assert now.diff(None) == [
        "iteration (not stored; now 10)",
        "classes (not stored; now ['gaba', 'glutamate'])",
        "precision (not stored; now 'fp32')",
    ]


def test_values_compare_as_json_gives_them_back():
    now = RunIdentity({"shape": (8, 16, 16), "voxel": np.array([40.0, 4.0, 4.0]), "t": np.nan})
    assert now.diff({"shape": [8, 16, 16], "voxel": [40.0, 4.0, 4.0], "t": None}) == []


def test_sections_are_compared_key_by_key():
    now = RunIdentity(
        {"table": {"sha256": "b", "units": "nm"}, "bundle": {"temperature": 2.0}, "tta": None},
        sections=("table", "bundle"),
    )
    stored = {"table": {"sha256": "a", "units": "nm"}, "bundle": {}, "tta": None}
    assert now.diff(stored) == [
        "table.sha256='a' (now 'b')",
        "bundle.temperature (not stored; now 2.0)",
    ]
    whole = RunIdentity({"table": {"sha256": "b", "units": "nm"}})
    assert whole.diff({"table": {"sha256": "a", "units": "nm"}}) == [
        "table={'sha256': 'a', 'units': 'nm'} (now {'sha256': 'b', 'units': 'nm'})"
    ]


def test_long_values_are_cut_in_messages():
    now = RunIdentity({"rows": list(range(1000))})
    [message] = now.diff({"rows": list(range(1, 1001))})
    assert message.startswith("rows=[1, 2, 3") and "(now [0, 1, 2" in message
    assert message.count("...") == 2 and len(message) < 2 * 100 + 20
