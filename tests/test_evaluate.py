"""Evaluation metrics against hand-computed numbers, the output folder, and the command."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from synister.evaluate import (
    EvaluationRules,
    aggregate_predictions,
    best_run,
    confusion_matrix,
    evaluate_predictions,
    evaluate_runs,
    expected_probability_matrix,
    label_predictions,
    neuron_predictions,
    public_url,
)

CLASSES = ["gaba", "acetylcholine", "glutamate"]
G, A, U = 0, 1, 2  # class indices (U: glutamate)

# skeleton_id -> (nt_known, hemi_lineage_id)
SKELETONS = {
    1: ({"gaba"}, 10),
    2: ({"gaba"}, 10),
    3: ({"acetylcholine"}, 20),
    4: ({"glutamate"}, 30),
    5: (set(), 30),  # unknown transmitter
    6: ({"gaba", "acetylcholine"}, 10),  # two transmitters among the classes
    7: ({"serotonin"}, 30),  # transmitter not among the classes
    8: ({"acetylcholine"}, None),  # no hemilineage
    9: ({"glutamate"}, 20),  # makes hemilineage 20 mixed (ach + glu)
    10: ({"gaba"}, 99),  # in an unnamed ("unknown") hemilineage
}
# synapse_id -> (skeleton_id or None, probabilities gaba, ach, glu)
SYNAPSES = {
    1: (1, [0.7, 0.2, 0.1]),  # G -> G
    2: (1, [0.6, 0.3, 0.1]),  # G -> G
    3: (1, [0.2, 0.7, 0.1]),  # G -> A
    4: (2, [0.1, 0.85, 0.05]),  # G -> A   skeleton 2: votes tie 1:1, prob sums G 0.6 < A 1.3
    5: (2, [0.5, 0.45, 0.05]),  # G -> G
    6: (3, [0.1, 0.8, 0.1]),  # A -> A
    7: (3, [0.3, 0.3, 0.4]),  # A -> U   (max 0.4)
    8: (3, [0.2, 0.6, 0.2]),  # A -> A
    9: (4, [0.0, 0.05, 0.95]),  # U -> U   skeleton 4: vote says G, mean says U
    12: (4, [0.5, 0.1, 0.4]),  # U -> G
    13: (4, [0.5, 0.1, 0.4]),  # U -> G
    10: (8, [0.5, 0.4, 0.1]),  # A -> G   skeleton 8: votes tie G/U, sums G 0.6 < U 0.8
    11: (8, [0.1, 0.2, 0.7]),  # A -> U
    19: (9, [0.1, 0.1, 0.8]),  # U -> U
    20: (10, [0.6, 0.3, 0.1]),  # G -> G
    14: (5, [0.3, 0.3, 0.4]),  # left out: unknown transmitter
    15: (6, [0.3, 0.3, 0.4]),  # left out: several transmitters
    16: (7, [0.3, 0.3, 0.4]),  # left out: transmitter not in classes
    17: ("absent", [0.3, 0.3, 0.4]),  # left out: not in the database
    18: (None, [0.3, 0.3, 0.4]),  # left out: no skeleton
}
LINEAGE_NAMES = {10: "LINa", 20: "LINb", 30: "LINc", 99: None}


def prediction_table() -> pd.DataFrame:
    ids = sorted(SYNAPSES)
    probs = np.array([SYNAPSES[i][1] for i in ids])
    frame = pd.DataFrame({"synapse_id": np.array(ids, dtype=np.int64)})
    for c, name in enumerate(CLASSES):
        frame[f"prob_{name}"] = probs[:, c]
    return frame


def synapse_table() -> pd.DataFrame:
    rows = []
    for synapse_id, (skeleton, _) in sorted(SYNAPSES.items()):
        if skeleton == "absent":
            continue
        nts, lineage = SKELETONS[skeleton] if skeleton is not None else (set(), None)
        rows.append(
            {
                "synapse_id": synapse_id,
                "skeleton_id": skeleton,
                "hemi_lineage_id": lineage,
                "nt_known": frozenset(nts),
            }
        )
    frame = pd.DataFrame(rows)
    frame["skeleton_id"] = frame["skeleton_id"].astype("Int64")
    frame["hemi_lineage_id"] = frame["hemi_lineage_id"].astype("Int64")
    return frame


def evaluate(**rules):
    return evaluate_predictions(
        "run",
        prediction_table(),
        synapse_table(),
        CLASSES,
        {"iteration": 1000},
        rules=EvaluationRules(**rules),
        hemi_lineage_names=LINEAGE_NAMES,
    )


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2]), np.array([0, 1, 1, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]
    with pytest.raises(ValueError, match=r"pred_idx\[1\] = 3"):
        confusion_matrix(np.array([0, 1]), np.array([0, 3]), 3)


def test_label_predictions_counts_left_out_synapses_by_reason():
    labelled, left_out = label_predictions(prediction_table(), synapse_table(), CLASSES)
    assert left_out == {
        "not_in_database": 1,
        "no_skeleton": 1,
        "unknown_transmitter": 1,
        "transmitter_not_in_classes": 1,
        "several_transmitters": 1,
    }
    assert labelled["synapse_id"].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 19, 20]
    truth = dict(zip(labelled["synapse_id"], labelled["true_idx"], strict=True))
    assert truth[4] == G and truth[10] == A and truth[19] == U


def test_synapse_level_matches_hand_computed():
    metrics = evaluate().metrics["synapse"]
    assert metrics["confusion"] == [[4, 2, 0], [1, 2, 2], [2, 0, 2]]
    assert metrics["accuracy"] == pytest.approx(8 / 15)
    assert metrics["balanced_accuracy"] == pytest.approx((4 / 6 + 2 / 5 + 2 / 4) / 3)
    assert metrics["confusion_normalized"][1] == pytest.approx([1 / 5, 2 / 5, 2 / 5])
    expected = np.array(metrics["expected_probability"])
    # gaba synapses 1-5 and 20: mean of their probability rows
    assert expected[G] == pytest.approx([2.7 / 6, 2.8 / 6, 0.5 / 6])
    assert expected.sum(axis=1) == pytest.approx([1, 1, 1])


def test_accuracies_come_with_bootstrap_errors_over_neurons():
    bootstrap = evaluate().metrics["bootstrap"]
    assert bootstrap["resampled"] == "neurons"
    synapse = bootstrap["synapse"]
    assert synapse["accuracy"] == pytest.approx(8 / 15)
    assert synapse["n_groups"] == 7  # skeletons 1, 2, 3, 4, 8, 9 and 10
    low, high = synapse["ci"]
    assert 0 < low < 8 / 15 < high < 1 and 0 < synapse["se"] < 0.3
    vote = bootstrap["neuron_vote"]
    assert vote["accuracy"] == evaluate().metrics["neuron"]["vote"]["accuracy"]
    assert vote["n_groups"] == evaluate().metrics["neuron"]["vote"]["n"]
    assert "neuron_mean" in bootstrap


def test_expected_probability_is_nan_for_classes_without_synapses():
    matrix = expected_probability_matrix(np.array([0, 0]), np.array([[0.8, 0.2], [0.4, 0.6]]), 2)
    assert matrix[0] == pytest.approx([0.6, 0.4])
    assert np.isnan(matrix[1]).all()


def test_neuron_vote_breaks_ties_by_summed_probability_and_counts_them():
    neurons = evaluate().neurons["vote"].set_index("skeleton_id")
    assert neurons["pred_idx"].to_dict() == {1: G, 2: A, 3: A, 4: G, 8: U, 9: U, 10: G}
    assert neurons["tie"].to_dict() == {
        1: False, 2: True, 3: False, 4: False, 8: True, 9: False, 10: False
    }  # fmt: skip
    metrics = evaluate().metrics["neuron"]["vote"]
    assert metrics["confusion"] == [[2, 1, 0], [0, 1, 1], [1, 0, 1]]
    assert metrics["accuracy"] == pytest.approx(4 / 7)
    assert metrics["n_ties"] == 2
    assert metrics["tied_skeleton_ids"] == [2, 8]


def test_tie_with_equal_probability_sums_goes_to_first_class():
    probabilities = np.array([[0.1, 0.3, 0.6], [0.1, 0.6, 0.3]])
    # votes: class 2 and class 1 once each; summed probabilities are equal too (0.9 each)
    sums = probabilities.sum(axis=0)
    assert sums[1] == sums[2] and sums[0] < sums[1]
    groups = aggregate_predictions(np.array([5, 5]), np.array([1, 1]), probabilities)
    assert groups["pred_idx"].tolist() == [1] and groups["tie"].tolist() == [True]
    # given in the other order, the first class still wins (not the first synapse's vote)
    groups = aggregate_predictions(np.array([5, 5]), np.array([1, 1]), probabilities[::-1])
    assert groups["pred_idx"].tolist() == [1]


def test_ties_first_takes_the_first_tied_class_as_the_original_did():
    # skeleton 2 ties gaba/ach and skeleton 8 gaba/glutamate; the sums favour ach and glutamate
    neurons = evaluate(ties="first").neurons["vote"].set_index("skeleton_id")
    assert neurons["pred_idx"].to_dict() == {1: G, 2: G, 3: A, 4: G, 8: G, 9: U, 10: G}
    assert neurons["tie"].to_dict()[2] and neurons["tie"].to_dict()[8]
    metrics = evaluate(ties="first").metrics
    assert metrics["filters"]["ties"] == "first"
    assert metrics["neuron"]["vote"]["confusion"] == [[3, 0, 0], [1, 1, 0], [1, 0, 1]]
    # the mean-probability method has no vote to tie
    assert metrics["neuron"]["mean"] == evaluate().metrics["neuron"]["mean"]
    with pytest.raises(ValueError, match="ties"):
        evaluate(ties="last")


def test_cutoff_leaves_out_neurons_whose_majority_share_is_below_it():
    # majority shares: skeletons 1, 3, 4: 2/3; 2 and 8: 1/2; 9 and 10: 1
    metrics = evaluate(cutoff=2 / 3).metrics
    assert metrics["filters"]["cutoff"] == pytest.approx(2 / 3)
    assert metrics["neuron"]["left_out_cutoff"] == 2  # a share equal to the cut-off stays
    assert metrics["neuron"]["vote"]["n"] == metrics["neuron"]["mean"]["n"] == 5
    assert metrics["neuron"]["vote"]["confusion"] == [[2, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert metrics["synapse"]["n"] == 15  # the cut-off is a neuron-level rule
    strict = evaluate(cutoff=0.7).metrics
    assert strict["neuron"]["left_out_cutoff"] == 5 and strict["neuron"]["vote"]["n"] == 2
    # hemilineage units: (10, gaba) 4/6, (20, ach) 2/3, (30, glu) 2/3, (20, glu) 1/1
    assert strict["hemi_lineage"]["left_out_cutoff"] == 3
    assert strict["hemi_lineage"]["vote"]["n"] == 1
    with pytest.raises(ValueError, match="cutoff"):
        evaluate(cutoff=1.5)


def test_n_min_at_synapse_level_leaves_out_the_synapses_of_small_neurons():
    plain = evaluate(n_min=3).metrics
    original = evaluate(n_min=3, n_min_synapse_level=True).metrics
    assert plain["synapse"]["n"] == 15
    # skeletons 1, 3 and 4 hold 3 synapses each; 2, 8 (2), 9 and 10 (1) are left out
    assert original["synapse"]["n"] == 9
    assert original["synapse"]["left_out_n_min"] == 6
    assert original["synapse"]["accuracy"] == pytest.approx(5 / 9)
    assert original["filters"]["n_min_synapse_level"] is True
    assert original["neuron"]["vote"] == plain["neuron"]["vote"]


def test_neuron_mean_probability():
    neurons = evaluate().neurons["mean"].set_index("skeleton_id")
    assert neurons["pred_idx"].to_dict() == {1: G, 2: A, 3: A, 4: U, 8: U, 9: U, 10: G}
    assert neurons.loc[4, "support"] == pytest.approx(1.75 / 3)
    metrics = evaluate().metrics["neuron"]["mean"]
    assert metrics["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert metrics["n_ties"] == 0


def test_hemi_lineage_level_splits_mixed_lineages_by_transmitter():
    evaluation = evaluate()
    vote = evaluation.hemi_lineages["vote"].set_index(["hemi_lineage_id", "true_idx"])
    mean = evaluation.hemi_lineages["mean"].set_index(["hemi_lineage_id", "true_idx"])
    # lineage 20 holds an ach and a glu neuron: one unit each; 99 is unnamed, so left out
    assert list(vote.index) == [(10, G), (20, A), (20, U), (30, U)]
    assert vote["pred_idx"].tolist() == [G, A, U, G]  # lineage 10 votes 3:2 for gaba ...
    assert mean["pred_idx"].tolist() == [A, A, U, U]  # ... but its mean favours ach
    assert vote.loc[(10, G), "n_neurons"] == 2 and vote.loc[(10, G), "hemi_lineage_name"] == "LINa"
    metrics = evaluation.metrics["hemi_lineage"]
    assert metrics["vote"]["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    assert metrics["mean"]["confusion"] == [[0, 1, 0], [0, 1, 0], [0, 0, 2]]
    assert metrics["split_by_transmitter"] == 1
    assert metrics["synapses_without_hemi_lineage"] == 3  # skeleton 8 (none), 10 (unnamed)


def test_n_min_leaves_out_small_neurons_and_lineages():
    metrics = evaluate(n_min=3).metrics
    assert metrics["neuron"]["left_out_n_min"] == 4  # skeletons 2, 8 (2 synapses), 9, 10 (1)
    assert metrics["neuron"]["vote"]["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 0]]
    assert metrics["synapse"]["n"] == 15  # n_min does not touch the synapse level
    lineage = evaluate(n_min=4).metrics["hemi_lineage"]
    assert lineage["left_out_n_min"] == 3  # units (20, ach) 3, (20, glu) 1, (30, glu) 3 synapses
    assert lineage["vote"]["n"] == 1
    assert neuron_predictions(evaluate().synapses, 3, n_min=2)[1] == {"n_min": 2, "cutoff": 0}


def test_confidence_cut_off_applies_before_everything():
    metrics = evaluate(min_confidence=0.55).metrics
    # left out: synapses 5 (0.5), 7 (0.4), 10, 12, 13 (0.5)
    assert metrics["counts"]["kept_by_confidence"] == 10
    assert metrics["counts"]["fraction_kept_by_confidence"] == pytest.approx(10 / 15)
    assert metrics["synapse"]["accuracy"] == pytest.approx(7 / 10)
    # skeleton 2 keeps only synapse 4 (ach), so it is no longer a tie
    assert metrics["neuron"]["vote"]["n_ties"] == 0
    with pytest.raises(ValueError, match="min_confidence"):
        evaluate(min_confidence=1.5)


def test_accuracy_by_confidence_is_computed_before_the_cut_off():
    curve = {
        row["min_confidence"]: row
        for row in evaluate(min_confidence=0.9).metrics["synapse"]["by_confidence"]
    }
    assert curve[0.0]["n"] == 15 and curve[0.0]["accuracy"] == pytest.approx(8 / 15)
    assert curve[0.6]["n"] == 10 and curve[0.6]["accuracy"] == pytest.approx(7 / 10)
    # above 0.9 only synapse 9 (glutamate, 0.95, right) is left
    assert curve[0.95]["fraction_kept"] == pytest.approx(1 / 15) and curve[0.95]["accuracy"] == 1


def test_best_run_prefers_highest_accuracy_then_earliest_iteration():
    def run(name, iteration, acc):
        return {"run": name, "iteration": iteration, "synapse": {"accuracy": acc,
                "balanced_accuracy": acc}, "neuron": {"vote": {"accuracy": acc}}}  # fmt: skip

    runs = [run("a", 3000, 0.8), run("b", 2000, 0.9), run("c", 1000, 0.9), run("d", 500, 0.7)]
    assert best_run(runs)["run"] == "c"
    assert best_run([run("x", None, 0.9), run("y", 4000, 0.9)])["run"] == "y"
    assert best_run([run("z", 1, float("nan"))]) is None


def test_bad_prediction_table_names_the_synapse():
    table = prediction_table()
    table.loc[table["synapse_id"] == 7, "prob_glutamate"] = np.nan
    with pytest.raises(ValueError, match="synapse 7: prob_glutamate"):
        label_predictions(table, synapse_table(), CLASSES)
    with pytest.raises(ValueError, match="prob_dopamine"):
        label_predictions(prediction_table(), synapse_table(), [*CLASSES, "dopamine"])


# ---- through a database ------------------------------------------------------------------------

RUN_ITERATIONS = {"val_exp_t0_p0": 1000, "val_exp_t0_p1": 2000, "val_exp_t0_p2": 3000}


@pytest.fixture
def database(tmp_path):
    """An SQLite database with the hand-made synapses and three validation runs: p0 holds the
    hand-made probabilities, p1 and p2 predict every labelled synapse right (a tie)."""
    from synister.db import open_database

    url = f"sqlite:///{tmp_path / 'synister.db'}"
    truth = synapse_table()
    synapses = truth[["synapse_id", "skeleton_id"]].assign(
        z=0.0, y=0.0, x=truth["synapse_id"] * 40.0
    )
    skeletons = pd.DataFrame(
        {
            "skeleton_id": list(SKELETONS),
            "hemi_lineage_id": pd.array([v[1] for v in SKELETONS.values()], dtype="Int64"),
            "nt_known": [sorted(v[0]) for v in SKELETONS.values()],
        }
    )
    lineages = pd.DataFrame(
        {"hemi_lineage_id": list(LINEAGE_NAMES), "hemi_lineage_name": list(LINEAGE_NAMES.values())}
    )
    predictions = prediction_table()
    stored = predictions[predictions["synapse_id"].isin(truth["synapse_id"])]
    labelled, _ = label_predictions(stored, truth, CLASSES)
    one_hot = np.eye(3)[labelled["true_idx"]]
    with open_database(url) as db:
        db.import_records(synapses=synapses, skeletons=skeletons, hemi_lineages=lineages)
        # every synapse in the validation part of split "val" and the test part of "other"
        for split, part in (("val", "validation"), ("other", "test")):
            db.write_split(split, truth[["synapse_id"]].assign(part=part))
        for run, iteration in RUN_ITERATIONS.items():
            meta = {"split_name": "val", "split_part": "validation", "experiment": "exp",
                    "train_number": 0, "predict_number": int(run[-1]), "iteration": iteration,
                    "checkpoint": f"model_checkpoint_{iteration}", "classes": CLASSES}  # fmt: skip
            db.create_prediction_run(run, CLASSES, meta)
            if run.endswith("p0"):
                ids, probs = stored["synapse_id"].to_numpy(), stored.filter(like="prob_").to_numpy()
            else:
                ids, probs = labelled["synapse_id"].to_numpy(), one_hot
            db.write_predictions(run, ids, probs)
    return url


def test_evaluate_runs_writes_metrics_figures_and_a_self_contained_report(database, tmp_path):
    from synister.db import open_database

    out = tmp_path / "evaluation"
    with open_database(database) as db:
        # given out of order: the curve must still run by iteration
        results = evaluate_runs(db, ["val_exp_t0_p2", "val_exp_t0_p0"], out)
    assert json.loads((out / "metrics.json").read_text()) == results
    p0 = results["runs"]["val_exp_t0_p0"]
    assert p0["synapse"]["confusion"] == [[4, 2, 0], [1, 2, 2], [2, 0, 2]]
    assert p0["counts"]["left_out"]["not_in_database"] == 0
    assert p0["neuron"]["vote"]["tied_skeleton_ids"] == [2, 8]
    assert p0["iteration"] == 1000
    assert results["best"]["run"] == "val_exp_t0_p2"
    [curve] = results["accuracy_vs_iteration"]
    assert curve["series"] == "exp t0 val / validation"
    assert [p["iteration"] for p in curve["points"]] == [1000, 3000]
    assert [p["synapse_accuracy"] for p in curve["points"]] == pytest.approx([8 / 15, 1])

    pngs = ["confusion_synapse.png", "confusion_neuron_vote.png", "confusion_hemi_lineage_mean.png",
            "expected_probability_synapse.png"]  # fmt: skip
    for png in ["accuracy_vs_iteration.png", *(f"val_exp_t0_p0/{name}" for name in pngs)]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    neurons = pd.read_csv(out / "val_exp_t0_p0" / "neurons.csv").set_index("skeleton_id")
    assert (
        neurons.loc[4, "vote_predicted"] == "gaba"
        and neurons.loc[4, "mean_predicted"] == "glutamate"
    )
    assert bool(neurons.loc[2, "vote_tie"])

    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert len(sources) >= 13 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in page and "<script" not in page
    assert "0.533" in page  # p0's synapse accuracy 8/15
    interval = "{:.3f} – {:.3f}".format(*p0["bootstrap"]["synapse"]["ci"])
    assert "Accuracy with its uncertainty" in page and interval in page
    assert "LINa" in page and "model_checkpoint_1000" in page


def test_the_final_model_of_a_trainings_checkpoints_is_chosen_as_the_demo_chooses(
    database, tmp_path
):
    from synister.db import open_database

    with open_database(database) as db:
        # p1 and p2 are both all right: the best is the earlier, the final model the later
        results = evaluate_runs(db, ["val_exp_t0_p1", "val_exp_t0_p2"], tmp_path / "a")
        assert results["best"]["run"] == "val_exp_t0_p1"
        assert results["final"] == {"run": "val_exp_t0_p2", "iteration": 3000, "rule": "margin"}
        page = (tmp_path / "a" / "report.html").read_text()
        assert "Final model of these checkpoints by the margin rule" in page
        # p1 (all right) beats the later p0 (8 of 15) by more than its standard error
        final = evaluate_runs(db, ["val_exp_t0_p0", "val_exp_t0_p1"], tmp_path / "b")["final"]
        assert final["run"] == "val_exp_t0_p1"
        one = evaluate_runs(db, ["val_exp_t0_p0"], tmp_path / "c", figures=False)
        assert one["final"]["run"] == "val_exp_t0_p0"
    from synister.cli.setup import best_iteration

    assert best_iteration(tmp_path / "a", "exp", 0) == 3000  # prepare-prediction --best-of


def test_evaluate_unknown_run_names_the_run(database, tmp_path):
    from synister.db import open_database

    with open_database(database) as db, pytest.raises(KeyError, match="no_such_run"):
        evaluate_runs(db, ["no_such_run"], tmp_path / "out")


def add_run(url, run, classes=CLASSES, n=None, right=True, **meta):
    """Store run ``run`` with ``meta``: the first ``n`` labelled synapses (all by default),
    predicted right (one-hot) or all as the first class."""
    from synister.db import open_database

    labelled, _ = label_predictions(prediction_table(), synapse_table(), CLASSES)
    labelled = labelled[labelled["true_idx"] < len(classes)].head(n)
    truth = labelled["true_idx"].to_numpy() if right else np.zeros(len(labelled), dtype=int)
    with open_database(url) as db:
        db.create_prediction_run(run, classes, meta)
        db.write_predictions(run, labelled["synapse_id"].to_numpy(), np.eye(len(classes))[truth])


VALIDATION = {"split_name": "val", "split_part": "validation", "experiment": "exp"}


def test_incomplete_run_is_refused_unless_allowed_and_never_best(database, tmp_path):
    from synister.db import open_database
    from synister.evaluate import IncompleteRun

    # killed after 5 of the 15 synapses of the split's validation part, all right so far
    add_run(database, "val_exp_t0_p3", n=5, **VALIDATION, train_number=0, iteration=4000)
    out = tmp_path / "out"
    with open_database(database) as db:
        with pytest.raises(IncompleteRun, match=r"val_exp_t0_p3 \(5 of 15 synapses") as error:
            evaluate_runs(db, ["val_exp_t0_p0", "val_exp_t0_p3"], out)
        assert "--allow-incomplete" in str(error.value) and "val_exp_t0_p0" not in str(error.value)
        assert not out.exists()
        results = evaluate_runs(
            db, ["val_exp_t0_p0", "val_exp_t0_p3"], out, allow_incomplete=True, figures=False
        )
    p3 = results["runs"]["val_exp_t0_p3"]
    assert p3["synapse"]["accuracy"] == 1.0
    assert p3["completeness"] == {
        "status": "incomplete", "predicted": 5, "expected": 15, "fraction": pytest.approx(1 / 3),
        "source": "split", "reason": None,
    }  # fmt: skip
    assert results["runs"]["val_exp_t0_p0"]["completeness"]["status"] == "complete"
    assert results["best"]["run"] == "val_exp_t0_p0"  # an incomplete run is no candidate
    assert any("val_exp_t0_p3" in w and "incomplete" in w for w in results["warnings"])
    page = (out / "report.html").read_text()
    assert "5 / 15" in page and "incomplete" in page


def test_completeness_comes_from_the_runs_meta_when_stored(database, tmp_path):
    from synister.db import open_database
    from synister.evaluate import IncompleteRun

    add_run(database, "val_exp_t1_p0", **VALIDATION, expected_synapses=20)  # 15 stored
    with open_database(database) as db, pytest.raises(IncompleteRun, match="15 of 20"):
        evaluate_runs(db, ["val_exp_t1_p0"], tmp_path / "out")


def test_run_without_a_split_is_accepted_with_a_warning(database, tmp_path):
    from synister.db import open_database

    add_run(database, "fafb_original_run")  # as the original wrote it: no split in the meta
    add_run(database, "gone_exp_t0_p0", split_name="gone", split_part="test")
    with open_database(database) as db:
        results = evaluate_runs(
            db, ["fafb_original_run", "gone_exp_t0_p0"], tmp_path / "out", figures=False
        )
    first, second = (results["runs"][r]["completeness"] for r in results["runs"])
    assert first["status"] == second["status"] == "unknown"
    assert first["expected"] is None and first["predicted"] == 15
    assert "names no split" in first["reason"] and "'gone'" in second["reason"]
    assert [w.split(":")[0] for w in results["warnings"][:2]] == [
        "fafb_original_run", "gone_exp_t0_p0"
    ]  # fmt: skip


def test_no_best_across_different_synapse_sets(database, tmp_path):
    from synister.db import open_database

    add_run(database, "other_exp_t0_p0", split_name="other", split_part="test", iteration=9)
    add_run(database, "val_two_t0_p0", classes=CLASSES[:2], **VALIDATION, iteration=5)
    runs = ["val_exp_t0_p0", "val_exp_t0_p1", "other_exp_t0_p0", "val_two_t0_p0"]
    with open_database(database) as db:
        results = evaluate_runs(db, runs, tmp_path / "out", figures=False)
    assert results["best"] is None and results["final"] is None  # not one training's series
    assert "different synapse sets" in results["best_refused"]
    sets = results["synapse_sets"]
    assert [s["runs"] for s in sets] == [runs[:2], runs[2:3], runs[3:]]
    assert [(s["split_name"], s["split_part"]) for s in sets] == [
        ("val", "validation"), ("other", "test"), ("val", "validation")
    ]  # fmt: skip
    assert [s["best"]["run"] for s in sets] == ["val_exp_t0_p1", "other_exp_t0_p0", runs[3]]
    page = (tmp_path / "out" / "report.html").read_text()
    assert "different synapse sets" in page and "other / test" in page
    # one synapse set: a best as before
    with open_database(database) as db:
        one = evaluate_runs(db, runs[:2], tmp_path / "one", figures=False)
    assert one["best"]["run"] == "val_exp_t0_p1" and one["best_refused"] is None
    with open_database(database) as db:  # a test run: no final model chosen on it
        test = evaluate_runs(db, runs[2:3], tmp_path / "test", figures=False)
    assert test["best"]["run"] == "other_exp_t0_p0" and test["final"] is None


def test_a_failed_evaluation_leaves_nothing_behind(database, tmp_path, monkeypatch):
    from synister.db import open_database
    from synister.evaluate import report

    fresh = tmp_path / "new" / "deeper" / "evaluation"
    with open_database(database) as db, pytest.raises(KeyError):
        evaluate_runs(db, ["val_exp_t0_p0", "no_such_run"], fresh)
    assert not (tmp_path / "new").exists()

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    for out in (fresh, kept):  # fails while writing, after the metrics (and figures)
        with open_database(database) as db, pytest.raises(RuntimeError, match="disk full"):
            evaluate_runs(db, ["val_exp_t0_p0"], out, figures=out is fresh)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "synister.db"]
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]

    monkeypatch.undo()
    with open_database(database) as db:
        evaluate_runs(db, ["val_exp_t0_p0"], kept, figures=False)
    assert sorted(p.name for p in kept.iterdir()) == [
        "metrics.json", "notes.txt", "report.html", "val_exp_t0_p0"
    ]  # fmt: skip
    assert (kept / "notes.txt").read_text() == "mine"


def test_command_prints_table_and_json(database, tmp_path):
    from typer.testing import CliRunner

    from synister.cli import app

    out = tmp_path / "cli"
    args = [
        "evaluate",
        "--no-figures",
        "--db",
        database,
        "--out",
        str(out),
        "--n-min",
        "3",
        "val_exp_t0_p2",
        "val_exp_t0_p0",
        "val_exp_t0_p1",
    ]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["n_min"] == 3
    assert document["runs"]["val_exp_t0_p0"]["neuron"]["left_out_n_min"] == 4
    # p1 and p2 are both perfect: the earlier iteration wins
    assert "best: val_exp_t0_p1 (iteration 2000)" in result.stderr
    # only synapse 9 (glutamate, p = 0.95) passes; recall of the other classes is NaN -> null
    plain = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--no-figures",
            "--db",
            database,
            "--out",
            str(out),
            "--min-confidence",
            "0.9",
            "val_exp_t0_p0",
        ],
    )
    assert plain.exit_code == 0 and "report.html" in plain.stdout
    assert re.search(
        r"val_exp_t0_p0\s+val / validation\s+19 / 15\s+1000\s+1\s+1\.000", plain.stdout
    )
    written = json.loads((out / "metrics.json").read_text())["runs"]["val_exp_t0_p0"]["synapse"]
    assert written["per_class_accuracy"] == {"gaba": None, "acetylcholine": None, "glutamate": 1.0}
    missing = CliRunner().invoke(app, ["evaluate", "--db", database, "--out", str(out), "nope"])
    assert missing.exit_code == 1 and "nope" in missing.stderr


def write_predict_setups(database, base, numbers=(0, 2)) -> list[str]:
    """Prediction setups ``base/exp/03_predict/setup_t0_p<n>`` of runs val_exp_t0_p<n>."""
    from synister.config import PredictConfig, WorkerConfig

    setups = []
    for number in numbers:
        setup = base / "exp" / "03_predict" / f"setup_t0_p{number}"
        setup.mkdir(parents=True)
        PredictConfig(
            train_checkpoint=f"exp/02_train/setup_t0/model_checkpoint_{1000 * (number + 1)}",
            experiment="exp",
            train_number=0,
            predict_number=number,
            split_part="validation",
            synapse_types=CLASSES,
            input_shape=(8, 32, 32),
            db_url=database,
            db_name_data="synister",  # agrees with the SQLite file name
            split_name="val",  # run name: val_exp_t0_p<number>
            voxel_size=(40, 4, 4),
            raw_container="raw.zarr",
            raw_dataset="raw",
            downsample_factors=[(1, 2, 2)],
            fmap_inc=(2,),
            n_convolutions=(2,),
        ).write(setup / "predict_config.ini")
        WorkerConfig().write(setup / "worker_config.ini")
        setups.append(str(setup))
    return setups


def test_command_reads_runs_from_prediction_setups(database, tmp_path):
    from typer.testing import CliRunner

    from synister.cli import app

    setups = write_predict_setups(database, tmp_path / "base")
    # the database URL comes from the setups
    out = tmp_path / "out"
    repeated = [arg for setup in setups for arg in ("--setup", setup)]
    result = CliRunner().invoke(app, ["evaluate", "--no-figures", "--out", str(out), *repeated])
    assert result.exit_code == 0, result.output
    assert "best: val_exp_t0_p2 (iteration 3000)" in result.stdout
    document = json.loads((out / "metrics.json").read_text())
    assert list(document["runs"]) == ["val_exp_t0_p0", "val_exp_t0_p2"]
    assert not list(out.rglob("*.png")) and "<img" not in (out / "report.html").read_text()


def test_command_takes_the_setups_of_a_shell_glob(database, tmp_path):
    from typer.testing import CliRunner

    from synister.cli import app

    setups = write_predict_setups(database, tmp_path / "base", numbers=(0, 1, 2))
    # `--setup .../setup_t0_p*` as the shell expands it, and the setups alone as arguments
    for args in (["--setup", *setups], setups, [setups[0], "--setup", *setups[1:]]):
        out = tmp_path / f"out{len(args)}"
        result = CliRunner().invoke(app, ["evaluate", "--no-figures", "--out", str(out), *args])
        assert result.exit_code == 0, result.output
        document = json.loads((out / "metrics.json").read_text())
        assert sorted(document["runs"]) == ["val_exp_t0_p0", "val_exp_t0_p1", "val_exp_t0_p2"]
    # run names next to setups still work; a folder without a setup is named
    out = tmp_path / "mixed"
    result = CliRunner().invoke(
        app, ["evaluate", "--no-figures", "--out", str(out), "--setup", setups[0], "val_exp_t0_p1"]
    )
    assert result.exit_code == 0, result.output
    assert list(json.loads((out / "metrics.json").read_text())["runs"]) == [
        "val_exp_t0_p0", "val_exp_t0_p1"
    ]  # fmt: skip
    empty = tmp_path / "base" / "exp" / "03_predict" / "setup_t0_p9"
    empty.mkdir()
    result = CliRunner().invoke(
        app, ["evaluate", "--out", str(tmp_path / "x"), *setups, str(empty)]
    )
    assert result.exit_code == 1 and "setup_t0_p9" in result.stderr
    assert "predict_config.ini" in result.stderr and not (tmp_path / "x").exists()


def test_command_shows_split_and_completeness_and_refuses_incomplete(database, tmp_path):
    from typer.testing import CliRunner

    from synister.cli import app

    add_run(database, "val_exp_t0_p3", n=5, **VALIDATION, train_number=0, iteration=4000)
    add_run(database, "other_exp_t0_p0", split_name="other", split_part="test", iteration=9)
    add_run(database, "fafb_original_run")
    out = tmp_path / "out"
    base = ["evaluate", "--no-figures", "--db", database, "--out", str(out)]
    refused = CliRunner().invoke(app, [*base, "val_exp_t0_p0", "val_exp_t0_p3"])
    assert refused.exit_code == 1 and not out.exists()
    assert "val_exp_t0_p3 (5 of 15 synapses, 33%)" in refused.stderr
    assert "--allow-incomplete" in refused.stderr

    allowed = CliRunner().invoke(
        app, [*base, "--allow-incomplete", "val_exp_t0_p0", "val_exp_t0_p3"]
    )
    assert allowed.exit_code == 0, allowed.output
    lines = allowed.stdout.splitlines()
    assert re.search(r"val_exp_t0_p0\s+val / validation\s+19 / 15\s+1000", lines[1]), lines
    assert re.search(r"val_exp_t0_p3\s+val / validation\s+5 / 15 \(incomplete\)\s", lines[2])
    assert "best: val_exp_t0_p0 (iteration 1000)" in allowed.stdout
    assert "warning: val_exp_t0_p3: incomplete" in allowed.stderr

    mixed = CliRunner().invoke(
        app, [*base, "val_exp_t0_p1", "other_exp_t0_p0", "fafb_original_run"]
    )
    assert mixed.exit_code == 0, mixed.output
    assert "other / test" in mixed.stdout and "15 / ? (unknown)" in mixed.stdout
    assert "best: none, the runs predict 3 different synapse sets" in mixed.stdout
    assert "best of val / validation: val_exp_t0_p1 (iteration 2000)" in mixed.stdout
    assert "best of other / test: other_exp_t0_p0 (iteration 9)" in mixed.stdout
    assert "warning: fafb_original_run: completeness unknown" in mixed.stderr


def test_command_offers_the_original_rules(database, tmp_path):
    from typer.testing import CliRunner

    from synister.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--no-figures", "--db", database, "--out", str(out), "--n-min", "3",
         "--n-min-synapses", "--cutoff", "0.7", "--ties", "first", "val_exp_t0_p0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "metrics.json").read_text())
    assert document["runs"]["val_exp_t0_p0"]["filters"] == {
        "n_min": 3, "n_min_synapse_level": True, "min_confidence": 0.0, "cutoff": 0.7,
        "ties": "first",
    }  # fmt: skip
    assert document["runs"]["val_exp_t0_p0"]["synapse"]["n"] == 9
    bad = CliRunner().invoke(app, ["evaluate", "--db", database, "--ties", "last", "x"])
    assert bad.exit_code == 2 and "last" in bad.output
    text = CliRunner().invoke(app, ["evaluate", "--help"], env={"COLUMNS": "100"}).stdout
    assert "original" in text and "--allow-incomplete" in text


def test_fafb_hemi_lineages_split_mixed_and_drop_unknown(shared_data, tmp_path):
    """The real FAFB skeletons and hemilineages, one synapse per skeleton predicted right:
    mixed named hemilineages are split per transmitter, the 'unknown' one is left out."""
    from synister.db import open_database
    from synister.nt import TRANSMITTERS

    skeletons = json.loads((shared_data / "fafb_v3" / "skeletons_v3.json").read_text())
    lineages = json.loads((shared_data / "fafb_v3" / "hemi_lineages_v3.json").read_text())
    classes = list(TRANSMITTERS)
    single = {int(s): v for s, v in skeletons.items() if v["nt_known"] and len(v["nt_known"]) == 1}

    ids = np.array(sorted(int(s) for s in skeletons), dtype=np.int64)
    with open_database(f"sqlite:///{tmp_path / 'fafb.db'}") as db:
        db.import_records(
            synapses=pd.DataFrame(
                {"synapse_id": ids, "z": 0.0, "y": 0.0, "x": 0.0, "skeleton_id": ids}
            ),
            skeletons=pd.DataFrame(
                {
                    "skeleton_id": ids,
                    "hemi_lineage_id": [skeletons[str(i)]["hemi_lineage_id"] for i in ids],
                    "nt_known": [skeletons[str(i)]["nt_known"] or [] for i in ids],
                }
            ),
            hemi_lineages=pd.DataFrame(
                {
                    "hemi_lineage_id": [int(i) for i in lineages],
                    "hemi_lineage_name": [v["hemi_lineage_name"] for v in lineages.values()],
                }
            ),
        )
        # the database stores the original's "unknown", "unknown2", "new", ... names as None
        stored = db.hemi_lineages()
        named = set(stored.loc[stored["hemi_lineage_name"].notna(), "hemi_lineage_id"])
        db.create_prediction_run("fafb", classes, {})
        truth = [classes.index(single[i]["nt_known"][0]) if i in single else 0 for i in ids]
        db.write_predictions("fafb", ids, np.eye(len(classes))[truth])
        results = evaluate_runs(db, ["fafb"], tmp_path / "out", figures=False)

    units = {(v["hemi_lineage_id"], v["nt_known"][0]) for v in single.values()}
    named_units = [u for u in units if u[0] in named]
    per_lineage = pd.Series([u[0] for u in named_units]).value_counts()
    assert 90 not in named and 12 in named  # 'unknown' and 'DL1_dorsal'
    metrics = results["runs"]["fafb"]
    assert metrics["counts"]["labelled"] == len(single) == 687
    assert metrics["counts"]["left_out"]["several_transmitters"] == 1  # gaba + octopamine
    lineage = metrics["hemi_lineage"]
    assert lineage["vote"]["n"] == len(named_units)
    assert lineage["split_by_transmitter"] == int((per_lineage > 1).sum()) > 0
    assert lineage["vote"]["accuracy"] == 1.0


def test_public_url_hides_the_password():
    assert public_url("postgresql://bob:secret@host:5432/db") == "postgresql://bob@host:5432/db"
    assert "p%40ss" not in public_url("mongodb+srv://u:p%40ss@cluster.example.net/db?w=1")
    assert public_url("sqlite:///runs/synister.db") == "sqlite:///runs/synister.db"


@pytest.mark.parametrize("n_series", [1, 4])
def test_accuracy_plot_legends_do_not_cover_the_axes(n_series):
    from synister.evaluate.plots import accuracy_figure

    series = [
        {
            "series": f"experiment{k} t{k} skeleton / validation",
            "points": [
                {
                    "run": f"r{k}_{i}",
                    "iteration": 1000 * i,
                    "synapse_accuracy": 0.2 * i,
                    "synapse_balanced_accuracy": 0.18 * i,
                    "neuron_vote_accuracy": 0.22 * i,
                    "neuron_mean_accuracy": 0.21 * i,
                }  # fmt: skip
                for i in range(1, 5)
            ],
        }
        for k in range(n_series)
    ]
    best = {"run": "r0_4", "iteration": 4000, "synapse_accuracy": 0.8}
    figure = accuracy_figure(series, best)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legends = [ax.get_legend() for ax in figure.axes if ax.get_legend()] + figure.legends
    assert legends
    labels = [t.get_text() for legend in legends for t in legend.get_texts()]
    assert "best" in labels and len(labels) >= 4 * n_series + 1
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), legend
    # and nothing is cut off at the figure's border
    figure_box = figure.bbox
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert box.x0 >= figure_box.x0 and box.y0 >= figure_box.y0
        assert box.x1 <= figure_box.x1 and box.y1 <= figure_box.y1


def predict_positions_frame(neuron_ids: dict | None = None) -> pd.DataFrame:
    """The synapses of SYNAPSES that a table can describe (one known transmitter or none per
    neuron), as ``synister.predict_positions`` returns them (short class names, NaN rows
    outside the volume), with a column of known transmitters and one of hemilineage names."""
    rows = []
    for synapse_id, (skeleton, probs) in sorted(SYNAPSES.items()):
        if skeleton in ("absent", 6):  # not in the database; two transmitters
            continue
        nts, lineage = SKELETONS[skeleton] if skeleton is not None else (set(), None)
        neuron = None if skeleton is None else (neuron_ids or {}).get(skeleton, skeleton)
        rows.append((synapse_id, neuron, *probs, next(iter(nts), None), LINEAGE_NAMES.get(lineage)))
    rows.insert(3, (900, 1, np.nan, np.nan, np.nan, "gaba", "LINa"))  # outside the volume
    frame = pd.DataFrame(rows, columns=["id", "neuron_id", "gaba", "ach", "glut", "nt", "lineage"])
    frame.insert(0, "row", np.arange(len(frame)))
    frame["neuron_id"] = frame["neuron_id"].astype("Int64" if neuron_ids is None else "string")
    probabilities = frame[["gaba", "ach", "glut"]].to_numpy()
    top = np.nan_to_num(probabilities, nan=-1).argmax(axis=1)
    predicted = ~np.isnan(probabilities).any(axis=1)
    frame.insert(6, "top_nt", pd.array(np.where(predicted, np.array(["gaba", "ach", "glut"])[top],
                                                None), dtype="string"))  # fmt: skip
    frame.insert(7, "status", np.where(predicted, "ok", "outside_volume"))
    return frame


def test_evaluate_table_of_predict_positions_output_matches_the_database_path():
    import synister

    frame = predict_positions_frame()
    got = synister.evaluate_table(frame, truth_column="nt", neuron_column="neuron_id")
    kept = [i for i in sorted(SYNAPSES) if SYNAPSES[i][0] not in ("absent", 6)]
    predictions = prediction_table().set_index("synapse_id").loc[kept].reset_index()
    expected = evaluate_predictions(
        "table", predictions, synapse_table(), CLASSES, rules=EvaluationRules()
    )
    assert got.classes == CLASSES
    for level in ("synapse", "neuron", "calibration"):
        assert json.dumps(got.metrics[level], sort_keys=True) == json.dumps(
            expected.metrics[level], sort_keys=True
        ), level
    counts = got.metrics["counts"]
    assert counts["without_prediction"] == 1 and counts["predicted"] == len(kept)
    assert counts["left_out"] == expected.metrics["counts"]["left_out"]
    assert counts["left_out"]["unknown_transmitter"] == 1  # skeleton 5: no known transmitter
    assert got.metrics["synapse"]["accuracy"] == pytest.approx(8 / 15)
    neurons = got.neurons["mean"].set_index("skeleton_id")
    assert neurons.loc[4, "pred_idx"] == U  # the mean says glutamate where the vote says gaba
    assert got.neurons["vote"].set_index("skeleton_id").loc[4, "pred_idx"] == G
    assert got.metrics["hemi_lineage"]["mean"]["n"] == 0  # no hemilineage column given


def test_evaluate_table_keeps_text_neuron_ids_and_names_hemilineages():
    names = {k: f"n{k}" for k in SKELETONS}
    got = evaluate_predictions_table(predict_positions_frame(names))
    by_number = evaluate_predictions_table(predict_positions_frame())
    assert json.dumps(got.metrics["neuron"]) == json.dumps(by_number.metrics["neuron"]).replace(
        "[2, 8]", '["n2", "n8"]'
    )
    assert sorted(got.neurons["vote"]["skeleton_id"]) == ["n1", "n10", "n2", "n3", "n4", "n8", "n9"]
    assert set(got.synapses["skeleton_id"]) == set(got.neurons["vote"]["skeleton_id"])
    lineages = got.hemi_lineages["vote"]
    assert lineages["hemi_lineage_name"].tolist() == ["LINa", "LINb", "LINb", "LINc"]
    assert got.metrics["hemi_lineage"]["synapses_without_hemi_lineage"] == 3  # 10, 11, 20


def evaluate_predictions_table(frame):
    from synister.evaluate import evaluate_table

    return evaluate_table(frame, "nt", "neuron_id", hemi_lineage_column="lineage")


def test_evaluate_table_names_what_is_wrong():
    from synister.evaluate import evaluate_table

    frame = predict_positions_frame()
    with pytest.raises(ValueError, match=r"no column 'transmitter' \(truth_column\); columns:"):
        evaluate_table(frame, truth_column="transmitter")
    frame.loc[frame["id"] == 2, "nt"] = "glutamate"
    with pytest.raises(ValueError, match=r"neuron 1: known as gaba \(row 0\) and glutamate \(row"):
        evaluate_table(frame)
    frame.loc[frame["id"] == 2, "nt"] = "glycine"
    with pytest.raises(ValueError, match=r"column nt, row 1: unknown transmitter 'glycine'"):
        evaluate_table(frame)


def test_import_synister_stays_light():
    import subprocess
    import sys

    code = (
        "import sys, synister; assert callable(synister.__getattr__); "
        "heavy = {'pandas', 'torch', 'numpy'} & set(sys.modules); assert not heavy, heavy; "
        "assert 'evaluate_table' in dir(synister)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
