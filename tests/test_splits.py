from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from synister.db import SplitExists, open_database
from synister.db.imports import TableOptions, import_files
from synister.splits import (
    ImpossibleSplit,
    SplitRequest,
    SplitTargets,
    assign_parts,
    compute_split,
    eligible_synapses,
    group_keys,
    make_split,
    show_split,
)

MANC_NTS = ("acetylcholine", "gaba", "glutamate")


def groups_frame(sizes: dict[str, list[int]], prefix: str = "g") -> pd.DataFrame:
    """Synapses of one transmitter per key, one group per listed size."""
    rows, next_id = [], 0
    for nt, group_sizes in sizes.items():
        for g, size in enumerate(group_sizes):
            for _ in range(size):
                rows.append((next_id, nt, f"{prefix}{nt}{g}"))
                next_id += 1
    return pd.DataFrame(rows, columns=["synapse_id", "nt", "group"])


def part_of_groups(parts: pd.DataFrame) -> pd.Series:
    per_group = parts.groupby("group")["part"].unique()
    assert per_group.map(len).max() == 1, "a group straddles parts"
    return per_group.map(lambda p: p[0])


def test_known_optimum_is_found():
    # 100 synapses: only 10+10 reaches the 20 test synapses exactly; inside the other 80 the
    # validation target is 16, best met by the group of 15
    parts = assign_parts(groups_frame({"gaba": [40, 10, 10, 25, 15]}))
    by_group = part_of_groups(parts)
    assert by_group.to_dict() == {
        "ggaba0": "train",
        "ggaba1": "test",
        "ggaba2": "test",
        "ggaba3": "train",
        "ggaba4": "validation",
    }


def test_fractions_are_options():
    # test target 40 of 100: {20, 18} (38) is the one closest subset; the remaining 62 want
    # 25 % validation (16): {12} beats {50}. Shares 50/12/38 vs targets 45/15/40.
    parts = assign_parts(
        groups_frame({"gaba": [50, 20, 18, 12]}),
        SplitTargets(train_fraction=0.6, validation_fraction=0.25),
        tolerance=0.06,
    )
    assert part_of_groups(parts).to_dict() == {
        "ggaba0": "train",
        "ggaba1": "test",
        "ggaba2": "test",
        "ggaba3": "validation",
    }
    with pytest.raises(ImpossibleSplit, match="'gaba'.* 0.450 .*train; best reached 0.500"):
        assign_parts(
            groups_frame({"gaba": [50, 20, 18, 12]}),
            SplitTargets(train_fraction=0.6, validation_fraction=0.25),
            tolerance=0.04,
        )


def test_groups_spanning_transmitters_stay_in_one_part():
    rng = np.random.default_rng(3)
    rows = []
    for i in range(4000):
        group = f"h{rng.integers(40)}"
        rows.append((i, "gaba" if rng.random() < 0.4 else "acetylcholine", group))
    frame = pd.DataFrame(rows, columns=["synapse_id", "nt", "group"])
    parts = assign_parts(frame, seed=5)
    part_of_groups(parts)
    shares = parts.groupby("nt")["part"].value_counts(normalize=True)
    for nt in ("gaba", "acetylcholine"):
        assert abs(shares[nt]["test"] - 0.2) <= 0.05
        assert abs(shares[nt]["validation"] - 0.16) <= 0.05
        assert abs(shares[nt]["train"] - 0.64) <= 0.05


def test_every_transmitter_with_several_groups_has_groups_on_both_sides():
    # a 20 % test share would be met best by no test group at all for "gaba" (sizes 97 + 3:
    # 3 % vs 0 %), yet the rule puts a group on each side; that misses 20 % by far -> impossible
    with pytest.raises(ImpossibleSplit, match="gaba"):
        assign_parts(groups_frame({"gaba": [97, 3]}))
    parts = assign_parts(groups_frame({"gaba": [97, 3]}), tolerance=0.99)
    assert set(parts.groupby("group")["part"].first()) >= {"test"}


def test_others_like_counts_are_impossible_and_name_the_transmitter():
    frame = groups_frame({"others": [3781, 3634, 33, 9], "gaba": [10] * 20})
    with pytest.raises(ImpossibleSplit) as error:
        assign_parts(frame)
    message = str(error.value)
    assert "'others'" in message and "0.200" in message and "test" in message
    assert "best reached 0.006" in message  # 42 of 7,457: the 33 + 9 groups


def test_contradicting_both_sides_rules_are_impossible():
    # each pair of transmitters shares a group: A != B, B != C, A != C has no binary solution
    frame = pd.DataFrame(
        [
            (0, "t1", "A"),
            (1, "t1", "B"),
            (2, "t2", "B"),
            (3, "t2", "C"),
            (4, "t3", "A"),
            (5, "t3", "C"),
        ],
        columns=["synapse_id", "nt", "group"],
    )
    with pytest.raises(ImpossibleSplit, match="both sides"):
        assign_parts(frame)


def test_single_synapse_groups_get_exact_counts_and_depend_on_seed():
    frame = groups_frame({"gaba": [1] * 500, "dopamine": [1] * 250})
    a = assign_parts(frame, seed=1)
    b = assign_parts(frame, seed=1)
    c = assign_parts(frame, seed=2)
    pd.testing.assert_frame_equal(a, b)
    assert not a["part"].equals(c["part"])
    counts = a.groupby(["nt", "part"]).size()
    assert counts["gaba"].to_dict() == {"test": 100, "train": 320, "validation": 80}
    assert counts["dopamine"].to_dict() == {"test": 50, "train": 160, "validation": 40}


def test_eligibility_needs_exactly_one_chosen_transmitter():
    synapses = pd.DataFrame(
        {
            "synapse_id": [1, 2, 3, 4],
            "skeleton_id": [10, 11, 12, 13],
            "nt_known": [
                frozenset({"gaba"}),
                frozenset({"gaba", "octopamine"}),
                frozenset(),
                frozenset({"acetylcholine"}),
            ],
        }
    )
    frame, chosen = eligible_synapses(synapses)
    assert chosen == ("acetylcholine", "gaba", "octopamine")
    assert frame["synapse_id"].tolist() == [1, 4]
    frame, chosen = eligible_synapses(synapses, ["GABA", "ACh"])
    assert frame.set_index("synapse_id")["nt"].to_dict() == {
        1: "gaba",
        2: "gaba",
        4: "acetylcholine",
    }
    frame, _ = eligible_synapses(synapses, ["octopamine"])
    assert frame["synapse_id"].tolist() == [2]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="train_fraction"):
        SplitTargets(train_fraction=1.0)
    with pytest.raises(ValueError, match="grouping"):
        SplitRequest(by="neuron")


def synthetic_database(url: str, n_skeletons: int = 60, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    nts = ["gaba", "acetylcholine", "glutamate"]
    skeletons = pd.DataFrame(
        {
            "skeleton_id": np.arange(n_skeletons, dtype="int64") + 1000,
            "hemi_lineage_id": pd.array(rng.integers(0, 12, n_skeletons), dtype="Int64"),
            "nt_known": [frozenset({nts[i % 3]}) for i in range(n_skeletons)],
        }
    )
    sizes = rng.integers(5, 60, n_skeletons)
    skeleton_ids = np.repeat(skeletons["skeleton_id"].to_numpy(), sizes)
    n = len(skeleton_ids)
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(n, dtype="int64") + 1,
            "z": rng.uniform(0, 1e4, n),
            "y": rng.uniform(0, 1e4, n),
            "x": rng.uniform(0, 1e4, n),
            "skeleton_id": pd.array(skeleton_ids, dtype="Int64"),
            "brain_region": [f"r{i}" for i in rng.integers(0, 30, n)],
            "prepost": None,
            "confidence": np.nan,
        }
    )
    with open_database(url) as db:
        db.import_records(synapses=synapses, skeletons=skeletons)


@pytest.fixture
def synthetic_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'split.db'}"
    synthetic_database(url)
    return url


@pytest.mark.parametrize("by", ["skeleton", "hemi_lineage", "brain_region", "synapse"])
def test_make_split_stores_group_disjoint_parts(synthetic_url, by):
    with open_database(synthetic_url) as db:
        meta = make_split(db, "s", SplitRequest(by=by, seed=3, tolerance=0.1))
        assert meta["grouping"] == by and meta["seed"] == 3
        assert meta["transmitters"] == ["acetylcholine", "gaba", "glutamate"]
        stored = db.synapses(split="s")
        assert set(stored["part"]) == {"train", "validation", "test"}
        column = {"skeleton": "skeleton_id", "hemi_lineage": "hemi_lineage_id"}.get(by, by)
        if by != "synapse":
            assert stored.groupby(column)["part"].nunique().max() == 1
        shown = show_split(db, "s")
        for nt in meta["transmitters"]:
            assert shown["parts"][nt] == meta["summary"][nt]


def test_impossible_or_taken_names_store_nothing(synthetic_url):
    with open_database(synthetic_url) as db:
        make_split(db, "s", SplitRequest())
        with pytest.raises(SplitExists):
            make_split(db, "s", SplitRequest(seed=9))
        with pytest.raises(ImpossibleSplit):
            make_split(db, "strict", SplitRequest(tolerance=0.0, by="hemi_lineage"))
        assert list(db.splits()) == ["s"]


@pytest.fixture(scope="module")
def manc_synapses(shared_data, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('manc') / 'manc.db'}"
    options = TableOptions(units="voxels", voxel_size_nm=(8.0, 8.0, 8.0))
    with open_database(url) as db:
        import_files(db, [shared_data / "malevnc_v0"], options)
    return url


def test_manc_split_by_body(manc_synapses):
    with open_database(manc_synapses) as db:
        synapses = db.synapses()
        request = SplitRequest(by="skeleton", transmitters=MANC_NTS, seed=7)
        parts, meta = compute_split(synapses, request)
        again, _ = compute_split(synapses, request)
        pd.testing.assert_frame_equal(parts, again)
        frame = synapses.merge(parts, on="synapse_id")
        assert len(frame) == 47_471 + 21_606 + 10_869
        assert frame.groupby("skeleton_id")["part"].nunique().max() == 1
        targets = SplitTargets()
        for nt, per_part in meta["summary"].items():
            total = sum(p["synapses"] for p in per_part.values())
            for part, counts in per_part.items():
                assert abs(counts["synapses"] / total - targets.share(part)) <= 0.05, (nt, part)

        with pytest.raises(ImpossibleSplit, match="'others'"):
            make_split(db, "with_others", SplitRequest(transmitters=(*MANC_NTS, "others")))
        assert db.splits() == {}


def test_synapses_without_hemi_lineage_or_region_keep_their_skeleton_as_group():
    frame = pd.DataFrame(
        {
            "synapse_id": [1, 2, 3],
            "skeleton_id": pd.array([10, 11, 11], dtype="Int64"),
            "hemi_lineage_id": pd.array([4, pd.NA, pd.NA], dtype="Int64"),
            "brain_region": ["MB", None, "LH"],
        }
    )
    assert group_keys(frame, "hemi_lineage").tolist() == [
        "hemi_lineage:4",
        "skeleton:11",
        "skeleton:11",
    ]
    assert group_keys(frame, "brain_region").tolist() == [
        "brain_region:MB",
        "skeleton:11",
        "brain_region:LH",
    ]
