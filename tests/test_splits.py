from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from synister.db import UNKNOWN_HEMI_LINEAGE_PATTERN, BadName, SplitExists, open_database
from synister.db.imports import TableOptions, import_files
from synister.splits import (
    ImpossibleSplit,
    SplitRequest,
    SplitTargets,
    assign_parts,
    compute_split,
    eligible_synapses,
    group_keys,
    joint,
    make_split,
    show_split,
    solve_split,
    split_quality,
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
    with pytest.raises(ImpossibleSplit, match=r"gaba.*train 0\.500 \(target 0\.450\).*0\.050"):
        assign_parts(
            groups_frame({"gaba": [50, 20, 18, 12]}),
            SplitTargets(train_fraction=0.6, validation_fraction=0.25),
            tolerance=0.04,
            strict=True,
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
    # a 5 % test share is met best by no test group at all (sizes 60, 28, 12: 0 % misses by 5,
    # 12 % by 7), yet the rule puts a group on each side; the split misses, so it warns
    targets = SplitTargets(train_fraction=0.95)
    parts = assign_parts(groups_frame({"gaba": [60, 28, 12]}), targets)
    assert part_of_groups(parts).to_dict() == {
        "ggaba0": "train",
        "ggaba1": "validation",
        "ggaba2": "test",
    }
    with pytest.raises(ImpossibleSplit, match="gaba"):
        assign_parts(groups_frame({"gaba": [60, 28, 12]}), targets, strict=True)


def test_others_like_counts_miss_their_targets_and_the_warning_names_the_groups():
    frame = groups_frame({"others": [3781, 3634, 33, 9], "gaba": [10] * 20})
    parts = assign_parts(frame)  # stored by default, as the original did
    quality = split_quality(parts, SplitTargets(), 0.05, "skeleton")
    assert [m["transmitter"] for m in quality["misses"]] == ["others"] * 3
    first, last = quality["warnings"]
    assert first.startswith("others misses its target share by more than 0.05: ")
    # the 2nd body in test, the 33 + 9 in validation (the original's two programs put the 2nd
    # body into validation and the small ones into test, which needs --tolerance 0.328)
    assert "validation 0.006 (target 0.160), test 0.487 (target 0.200)" in first
    assert first.endswith("others: 4 neurons, the largest (gothers0) holds 51 % of its synapses")
    assert last == f"the best split by skeleton needs --tolerance {quality['needed_tolerance']:.3f}"
    worst = max(abs(m["share"] - m["target"]) for m in quality["misses"])
    assert worst == pytest.approx(3634 / 7457 - 0.2, abs=1e-4)
    assert quality["needed_tolerance"] == 0.288  # rounded up to 0.001
    with pytest.raises(ImpossibleSplit) as error:
        assign_parts(frame, strict=True)
    message = str(error.value)
    assert "others misses" in message and "test 0.487 (target 0.200)" in message
    assert "needs --tolerance 0.288" in message and "gaba" not in message


def test_a_transmitter_without_synapses_in_some_part_is_refused():
    # two neurons cannot fill three parts: the split is refused whatever the tolerance
    frame = groups_frame({"serotonin": [70, 30], "gaba": [10] * 20})
    with pytest.raises(ImpossibleSplit) as error:
        assign_parts(frame, tolerance=0.99)
    message = str(error.value)
    assert "(none for serotonin in " in message and "gaba" not in message
    assert "serotonin: 2 groups, the largest (gserotonin0) holds 70 % of its synapses" in message


def test_transmitters_of_two_groups_are_impossible():
    # each transmitter lies in two groups, so one of the three parts lacks it
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
    with pytest.raises(ImpossibleSplit, match=r"\(none for t1 in 1 of the 3 parts, t2 in 1 "):
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
            make_split(db, "strict", SplitRequest(tolerance=0.0, by="hemi_lineage", strict=True))
        assert list(db.splits()) == ["s"]


def test_existing_split_name_says_how_to_remove_it(synthetic_url):
    with open_database(synthetic_url) as db:
        make_split(db, "s", SplitRequest())
        with pytest.raises(SplitExists, match="`synister split remove s`"):
            make_split(db, "s", SplitRequest(seed=9))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("by skeleton", r"holds ' '.*letters, digits"),
        ("skeleton.v2", r"'\.'"),
        ("s" * 25, r"25 bytes long; at most 24.*63 bytes"),
        ("-s", "start with a letter or digit"),
    ],
)
def test_names_that_cannot_become_run_names_are_refused(synthetic_url, name, message):
    with open_database(synthetic_url) as db:
        with pytest.raises(BadName, match=message):
            make_split(db, name, SplitRequest())
        assert db.splits() == {}


def test_missed_targets_are_stored_with_warnings_in_the_meta(synthetic_url, monkeypatch):
    # no split meets every target exactly; the program stops at its node limit (small here, to
    # be quick) and says how much better a split could be
    monkeypatch.setattr(joint, "JOINT_NODE_LIMIT", 100)
    with open_database(synthetic_url) as db:
        meta = make_split(db, "tight", SplitRequest(tolerance=0.0, seed=1))
        assert meta["warnings"] and meta["misses"] and db.splits()["tight"] == meta
        assert meta["program"]["status"] == "limit" and meta["program"]["nodes"] == 100
        gap = meta["program"]["cost"] - meta["program"]["bound"]
        assert gap > 0 and meta["warnings"][0].startswith(
            "the split program stopped at its limit of 100 branch-and-bound nodes before "
            f"proving this split the best: its cost is {meta['program']['cost']:.4f}, no split "
            f"costs less than {meta['program']['bound']:.4f} (gap {gap:.4f}; "
        )
        assert meta["warnings"][-1].endswith(f"--tolerance {meta['needed_tolerance']:.3f}")
        shares = {(m["transmitter"], m["part"]): m["synapses"] / m["total"] for m in meta["misses"]}
        for (nt, part), share in shares.items():
            assert share == meta["summary"][nt][part]["synapses"] / sum(
                p["synapses"] for p in meta["summary"][nt].values()
            )
        assert show_split(db, "tight")["meta"]["warnings"] == meta["warnings"]
        relaxed = make_split(
            db, "relaxed", SplitRequest(tolerance=meta["needed_tolerance"], seed=1)
        )
        assert relaxed["warnings"] == [] and relaxed["misses"] == []


@pytest.fixture(scope="module")
def manc_synapses(shared_data, tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('manc') / 'manc.db'}"
    options = TableOptions(units="voxels", voxel_size_nm=(8.0, 8.0, 8.0))
    folder = shared_data / "malevnc_v0"
    with open_database(url) as db:
        import_files(db, [folder / f"{nt}.csv" for nt in MANC_NTS], options)
        import_files(db, [folder / "others.csv"], replace(options, label="others"))
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

        # synapse shares on target, neurons not: glutamate's few big bodies fill train
        [glutamate] = [w for w in meta["neuron_warnings"] if w.startswith("glutamate")]
        assert "its 65 neurons fall " in glutamate and "lopsided in train, test" in glutamate
        assert not [w for w in meta["neuron_warnings"] if w.startswith("gaba")]

        with_others = SplitRequest(transmitters=(*MANC_NTS, "others"), strict=True)
        with pytest.raises(ImpossibleSplit, match="others misses"):
            make_split(db, "with_others", with_others)
        assert db.splits() == {}
        # by default the best split is stored; the warning names the 4 bodies of "others"
        meta = make_split(db, "with_others", SplitRequest(transmitters=(*MANC_NTS, "others")))
        assert "others: 4 neurons, the largest (skeleton " in meta["warnings"][0]
        assert "holds 51 % of its synapses" in meta["warnings"][0]


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


def lineage_database(url: str) -> None:
    """Neurons of one named hemilineage, of FAFB's unknown-named ones, and of none."""
    lineages = pd.DataFrame(
        {
            "hemi_lineage_id": [1, 2, 3, 4],
            "hemi_lineage_name": ["LHa1", "unknown", "new2_ventral", "ALad1"],
        }
    )
    # 6 gaba neurons in LHa1 (1), 6 in "unknown" (2), 3 in new2_ventral (3), 3 without one;
    # 6 acetylcholine neurons in ALad1 (4), 6 in "unknown"
    lineage_of = [1] * 6 + [2] * 6 + [3] * 3 + [None] * 3 + [4] * 6 + [2] * 6
    nts = ["gaba"] * 18 + ["acetylcholine"] * 12
    skeletons = pd.DataFrame(
        {
            "skeleton_id": np.arange(30) + 100,
            "hemi_lineage_id": pd.array(lineage_of, dtype="Int64"),
            "nt_known": [frozenset({nt}) for nt in nts],
        }
    )
    skeleton_ids = np.repeat(skeletons["skeleton_id"].to_numpy(), 10)
    synapses = pd.DataFrame(
        {
            "synapse_id": np.arange(len(skeleton_ids)) + 1,
            "z": 0.0,
            "y": 0.0,
            "x": np.arange(len(skeleton_ids), dtype=float),
            "skeleton_id": pd.array(skeleton_ids, dtype="Int64"),
        }
    )
    with open_database(url) as db:
        db.import_records(synapses=synapses, skeletons=skeletons, hemi_lineages=lineages)


def test_neurons_of_unknown_hemilineages_are_groups_of_their_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'lineages.db'}"
    lineage_database(url)
    with open_database(url) as db:
        meta = make_split(db, "h", SplitRequest(by="hemi_lineage", tolerance=0.2))
        # 6 + 6 in "unknown", 3 in new2_ventral, 3 without a hemilineage
        assert meta["unknown_lineage_neurons"] == 18
        assert meta["unknown_lineage_pattern"] == UNKNOWN_HEMI_LINEAGE_PATTERN
        stored = db.synapses(split="h")
        parts = stored.groupby("skeleton_id")["part"].first()
        lineage = stored.groupby("skeleton_id")["hemi_lineage_id"].first()
        # the known lineages stay whole; "unknown" (2) is no group: its neurons spread out
        for known in (1, 4):
            assert parts[lineage == known].nunique() == 1
        assert parts[lineage == 2].nunique() > 1
        summary = meta["summary"]["gaba"]
        assert sum(p["groups"] for p in summary.values()) == 1 + 12  # LHa1 + 12 lone neurons
        shown = show_split(db, "h")
        assert shown["lone_neurons"] == 18 and shown["parts"] == meta["summary"]


def test_unknown_lineage_pattern_is_an_option_kept_with_the_split(tmp_path):
    url = f"sqlite:///{tmp_path / 'lineages.db'}"
    lineage_database(url)
    with open_database(url) as db:
        request = SplitRequest(by="hemi_lineage", tolerance=0.2, unknown_lineage_pattern="lha.*")
        meta = make_split(db, "h", request)
        assert meta["unknown_lineage_pattern"] == "lha.*"
        assert meta["unknown_lineage_neurons"] == 24  # also LHa1's 6, whatever the case
        assert show_split(db, "h")["lone_neurons"] == 24
    with pytest.raises(ValueError, match="regular expression"):
        SplitRequest(by="hemi_lineage", unknown_lineage_pattern="(")


FAFB_NTS = ("GABA", "ACh", "Glu", "DA")


def fafb_database(url: str, fafb_v3: Path, synapse_counts) -> str:
    """The real FAFB v3 skeletons and hemilineages, with ``synapse_counts(rng, n)`` synapses for
    each neuron of known transmitter (seeded): the export lacks its synapses."""
    with open_database(url) as db:
        import_files(db, [fafb_v3])
        skeletons = db.skeletons()
        known = skeletons.loc[skeletons["nt_known"].map(len) > 0, "skeleton_id"].to_numpy()
        rng = np.random.default_rng(10)
        skeleton_ids = np.repeat(known, synapse_counts(rng, len(known)))
        n = len(skeleton_ids)
        db.import_records(
            synapses=pd.DataFrame(
                {
                    "synapse_id": np.arange(n) + 1,
                    "z": rng.uniform(0, 2e5, n),
                    "y": rng.uniform(0, 2e5, n),
                    "x": rng.uniform(0, 2e5, n),
                    "skeleton_id": skeleton_ids,
                }
            )
        )
    return url


@pytest.fixture(scope="module")
def fafb_url(shared_data, tmp_path_factory):
    """FAFB v3 with log-normal synapse counts, median 40 per neuron."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fafb') / 'fafb.db'}"
    return fafb_database(
        url,
        shared_data / "fafb_v3",
        lambda rng, n: np.maximum(1, rng.lognormal(np.log(40), 1.0, n).astype(int)),
    )


def test_fafb_v3_splits_by_hemi_lineage(fafb_url):
    """Issue #10: with the 118 neurons of FAFB's "unknown" lineage as one group this failed
    ("dopamine ... best reached 0.355"); now every transmitter gets every part."""
    from typer.testing import CliRunner

    from synister.cli import app

    nts = ",".join(FAFB_NTS)
    result = CliRunner().invoke(
        app, ["split", "make", "--db", fafb_url, "--name", "h", "--by", "hemi_lineage", "--nt", nts]
    )
    assert result.exit_code == 0, result.output
    with open_database(fafb_url) as db:
        meta = db.splits()["h"]
        assert meta["unknown_lineage_neurons"] >= 100  # "unknown" alone holds 118 neurons
        lone = f"{meta['unknown_lineage_neurons']:,} neurons of an unknown hemilineage (none, "
        assert lone + f"or a name matching '{UNKNOWN_HEMI_LINEAGE_PATTERN}')" in result.stdout
        names = db.hemi_lineages().set_index("hemi_lineage_id")["hemi_lineage_name"]
        stored = db.synapses(split="h")
    assert set(meta["summary"]) == {"gaba", "acetylcholine", "glutamate", "dopamine"}
    for per_part in meta["summary"].values():
        assert all(per_part[part]["synapses"] > 0 for part in ("train", "validation", "test"))
    named = stored.loc[stored["hemi_lineage_id"].map(names).notna()]
    assert named.groupby("hemi_lineage_id")["part"].nunique().max() == 1
    assert stored.groupby("skeleton_id")["part"].nunique().max() == 1
    lone = stored.loc[stored["hemi_lineage_id"].map(names).isna()]
    assert lone.groupby("hemi_lineage_id")["part"].nunique().max() == 3  # spread over parts


FAFB_FOUR = "gaba,acetylcholine,glutamate,dopamine"


@pytest.fixture(scope="module")
def fafb_few_url(shared_data, tmp_path_factory):
    """FAFB v3 with a few synapses per neuron (1 + Poisson(3), capped below at 1; seeded)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fafb_few') / 'fafb.db'}"

    def few(rng, n):
        return np.maximum(1, np.random.default_rng(3).poisson(3, n))

    return fafb_database(url, shared_data / "fafb_v3", few)


def test_fafb_v3_with_few_synapses_per_neuron_splits_by_hemi_lineage(fafb_few_url):
    """Issue #21: the original's two programs gave GABA's test part every small group and left
    validation none ("none for gaba in validation"); the joint program finds a split."""
    from typer.testing import CliRunner

    from synister.cli import app

    args = ["split", "make", "--db", fafb_few_url, "--name", "h", "--by", "hemi_lineage"]
    result = CliRunner().invoke(app, [*args, "--nt", FAFB_FOUR])
    assert result.exit_code == 0, result.output
    with open_database(fafb_few_url) as db:
        meta = db.splits()["h"]
        stored = db.synapses(split="h")
    assert meta["program"]["solver"] == "joint program"
    assert meta["program"]["status"] == "optimal"
    targets = SplitTargets()
    for nt, per_part in meta["summary"].items():
        total = sum(p["synapses"] for p in per_part.values())
        for part in ("train", "validation", "test"):
            assert per_part[part]["synapses"] > 0, (nt, part)
            if nt != "gaba":  # gaba's largest hemilineage alone holds 80 % of its synapses
                share = per_part[part]["synapses"] / total
                assert abs(share - targets.share(part)) <= 0.01, (nt, part)
    gaba = next(w for w in meta["warnings"] if w.startswith("gaba misses"))
    assert "gaba: 15 groups (hemilineages, or neurons of unknown ones), the largest " in gaba
    assert gaba.endswith("holds 80 % of its synapses")
    assert f"WARNING: {gaba}" in result.output
    named = stored.loc[stored["hemi_lineage_id"].notna() & stored["part"].notna()]
    lone = meta["unknown_lineage_neurons"]
    assert named.groupby("skeleton_id")["part"].nunique().max() == 1 and lone > 0


def test_a_split_the_two_programs_miss_is_found():
    # the test target (20) is met best by the four small groups, which leaves train+validation
    # only the big one and validation nothing; all three parts at once find a split
    parts, solved = solve_split(groups_frame({"gaba": [81, 5, 5, 5, 4]}))
    by_group = part_of_groups(parts)
    assert by_group["ggaba0"] == "train"
    assert by_group.value_counts().to_dict() == {"train": 1, "validation": 2, "test": 2}
    assert solved["solver"] == "joint program" and solved["status"] == "optimal"


def test_conflicting_groups_are_proved_impossible():
    # four groups, four transmitters of three groups each: every pair of groups shares a
    # transmitter, so two groups in one part leave a transmitter without that part; t2, t3 and
    # t4 alone already conflict
    groups = {"t1": "ABC", "t2": "ABD", "t3": "ACD", "t4": "BCD"}
    rows = [(nt, g) for nt, members in groups.items() for g in members for _ in range(5)]
    frame = pd.DataFrame(rows, columns=["nt", "group"])
    frame.insert(0, "synapse_id", np.arange(len(frame)))
    with pytest.raises(ImpossibleSplit) as error:
        assign_parts(frame, tolerance=0.99)
    message = str(error.value)
    assert message.startswith(
        "no split by group gives every transmitter synapses in every part: t2, t3, t4 share "
        "groups so that no assignment of groups to parts gives each of them synapses in all "
        "three (the integer program is infeasible): t2: 3 groups, the largest (A) holds 33 % "
    )
    assert "t1" not in message
