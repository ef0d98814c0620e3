"""Bundles of training setups (:func:`export_model`) with where their weights came from and how
well they predicted: bundle provenance.

Evaluations are not stored anywhere synister could find them again (``synister evaluate``
writes to any folder), but the prediction runs are: in the setup's database, each with its
meta (experiment, train number, checkpoint, split and part). So the metrics of a setup are
computed from its stored runs when a bundle is made, with :func:`synister.evaluate.evaluate_run`
and no cut-offs (``n_min`` 0, no confidence threshold): the same numbers ``synister evaluate``
prints with its defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np

from synister.config import ConfigError, TrainConfig, read_ini, resolve_paths
from synister.db import open_database, public_url
from synister.layout import (
    AVERAGED_SUFFIX,
    TRAIN_FILE,
    averaged_path,
    checkpoint_path,
    experiment_base,
    experiment_of,
    is_train_setup,
    list_checkpoints,
    train_id_of,
)
from synister.models.bundle import BundleError, weights_and_record, write_bundle

from .calibrate import aligned_runs
from .selection import DEFAULT_RULE, RULE_WORDS, SELECTION_RULES, choose_checkpoint

EVALUATIONS_NOTE = (
    "metrics computed when the bundle was made from the setup's prediction runs stored in its "
    "database (synister.evaluate.evaluate_run, n_min 0, no confidence cut-off); 'complete' "
    "says whether a run holds every synapse of its split part"
)


def _belongs_to(meta: dict, setup_dir: Path, experiment: str | None, train_id: int | None) -> bool:
    """Whether a run's meta names this setup: by its checkpoint's folder, else by experiment
    and train number (runs written without a checkpoint path)."""
    checkpoint = meta.get("checkpoint")
    if checkpoint:
        return Path(str(checkpoint)).expanduser().resolve().parent == setup_dir
    return (
        experiment is not None
        and meta.get("experiment") == experiment
        and meta.get("train_number") is not None
        and int(meta["train_number"]) == train_id
    )


def _run_summary(db, run: str, classes: list[str], meta: dict) -> dict[str, Any]:
    from synister.data import training_synapses

    from .runner import evaluate_run

    part = meta.get("split_part")
    expected = training_synapses(db, meta["split_name"], classes, part=part)["synapse_id"]
    predicted = db.predicted_synapse_ids(run)
    summary: dict[str, Any] = {
        "run": run,
        "split_part": part,
        "iteration": meta.get("iteration"),
        "averaged": str(meta.get("checkpoint", "")).endswith(AVERAGED_SUFFIX),
        "complete": bool(np.isin(expected.to_numpy(), predicted).all()),
        "predicted": int(len(predicted)),
        "expected": int(len(expected)),
    }
    metrics = evaluate_run(db, run, allow_incomplete=True).metrics
    summary.update(
        synapses=metrics["synapse"]["n"],
        synapse_accuracy=metrics["synapse"]["accuracy"],
        synapse_balanced_accuracy=metrics["synapse"]["balanced_accuracy"],
        neurons=metrics["neuron"]["vote"]["n"],
        neuron_vote_accuracy=metrics["neuron"]["vote"]["accuracy"],
        neuron_mean_accuracy=metrics["neuron"]["mean"]["accuracy"],
    )
    return summary


def _unreadable(run: str, meta: dict, error: Exception) -> dict[str, Any]:
    iteration = meta.get("iteration")
    return {
        "run": run,
        "split_part": meta.get("split_part"),
        "iteration": iteration if isinstance(iteration, int) else None,
        "complete": False,
        "error": str(error.args[0] if isinstance(error, KeyError) and error.args else error),
    }


def _sqlite_file_missing(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    file = url[len("sqlite:///") :]
    if file and file != ":memory:" and not Path(file).is_file():
        return f"database file {file} not found"
    return None


def setup_runs(cfg: TrainConfig, setup_dir: Path) -> tuple[list[dict], str | None]:
    """The stored prediction runs of training setup ``setup_dir`` on its own split, each with
    its metrics, sorted by part and iteration; and a note when the database could not be read
    (the runs are then empty)."""
    from synister.db import DatabaseError, open_database

    train_id, experiment = train_id_of(setup_dir), experiment_of(setup_dir)
    try:
        url = cfg.database_url()
    except ConfigError as exc:
        return [], str(exc)
    missing = _sqlite_file_missing(url)
    if missing:
        return [], missing
    runs = []
    try:
        with open_database(url) as db:
            for run in db.prediction_runs():
                try:
                    classes, meta = db.open_prediction_run(run)
                except (KeyError, DatabaseError):  # a run without its registry entry
                    continue
                if meta.get("split_name") != cfg.split_name or not _belongs_to(
                    meta, setup_dir, experiment, train_id
                ):
                    continue
                try:
                    runs.append(_run_summary(db, run, list(classes), meta))
                except (KeyError, ValueError) as exc:  # a run evaluation cannot read
                    runs.append(_unreadable(run, meta, exc))
    except (DatabaseError, OSError) as exc:
        return [], f"cannot read {public_url(url)}: {exc}"
    runs.sort(key=lambda r: (str(r["split_part"]), r["iteration"] or 0, r["run"]))
    return runs, None


def setup_provenance(setup_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The training config of ``setup_dir`` (paths resolved) and its provenance: the setup,
    experiment, train number, split, database and prediction runs with their metrics."""
    try:
        cfg = read_ini(setup_dir / TRAIN_FILE, TrainConfig)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    cfg = resolve_paths(cfg, experiment_base(setup_dir))
    runs, note = setup_runs(cfg, setup_dir)
    provenance: dict[str, Any] = {
        "source": "training setup",
        "setup": str(setup_dir),
        "experiment": experiment_of(setup_dir),
        "train_number": train_id_of(setup_dir),
        "split_name": cfg.split_name,
        "database": None,
        "evaluations": EVALUATIONS_NOTE,
        "prediction_runs": runs,
    }
    try:
        provenance["database"] = public_url(cfg.database_url())
    except ConfigError:
        pass
    if note:
        provenance["database_note"] = note
    return cfg, provenance


def best_validation_iteration(
    setup_dir: Path,
    provenance: dict[str, Any],
    cfg: TrainConfig,
    rule: str = DEFAULT_RULE,
    averaged: bool = False,
) -> int:
    """The iteration ``rule`` (see :func:`~synister.evaluate.selection.choose_checkpoint`)
    picks among the setup's complete validation runs (those of the weights ``averaged`` says,
    where there are any); ``accuracy``: the highest synapse accuracy (ties: the earliest), as
    ``synister evaluate`` picks its best run. The other rules read the runs' predictions
    from ``cfg``'s database."""
    candidates = [
        run
        for run in provenance["prediction_runs"]
        if run["split_part"] == "validation"
        and run["complete"]
        and run["iteration"] is not None
        and run.get("synapse_accuracy") is not None
        and run["synapse_accuracy"] == run["synapse_accuracy"]  # not NaN
    ]
    if not candidates:
        where = provenance.get("database") or "its database"
        note = f" ({provenance['database_note']})" if provenance.get("database_note") else ""
        experiment = provenance.get("experiment") or "EXPERIMENT"
        train = provenance.get("train_number")
        raise BundleError(
            f"{setup_dir}: no complete validation prediction run of this setup in {where}{note}, "
            "so no best iteration; predict the validation part first "
            f"(synister prepare-prediction -d BASE -e {experiment} -t {train} -i ITERATIONS -v, "
            "then synister predict on those setups), or give --iteration N"
        )
    weights = [r for r in candidates if bool(r.get("averaged", False)) == averaged]
    candidates = weights or candidates
    if rule == "accuracy":
        best = min(candidates, key=lambda r: (-r["synapse_accuracy"], int(r["iteration"])))
        return int(best["iteration"])
    by_iteration = {}  # one run per iteration: the first
    for run in candidates:
        by_iteration.setdefault(int(run["iteration"]), run["run"])
    with open_database(cfg.database_url()) as db:
        return choose_checkpoint(aligned_runs(db, by_iteration), rule)


def export_model(
    setup_dir: str | Path,
    iteration: int | Literal["best"],
    out: str | Path,
    *,
    averaged: bool = False,
    overwrite: bool = False,
    rule: str = DEFAULT_RULE,
) -> Path:
    """A bundle of training setup ``setup_dir`` at ``iteration``, or at the iteration ``rule``
    picks among its validation runs (``"best"``; :func:`best_validation_iteration`), with the
    metrics of the setup's prediction runs as provenance (see the functions above);
    ``averaged``: the weight average saved beside that checkpoint (``ema_decay``) instead of
    its raw weights. Returns the bundle folder."""
    if rule not in SELECTION_RULES:
        raise BundleError(f"--rule: expected one of {', '.join(SELECTION_RULES)}, got {rule!r}")
    setup_dir = Path(setup_dir).expanduser().resolve()
    if not is_train_setup(setup_dir):
        raise BundleError(
            f"{setup_dir}: not a training setup (no {TRAIN_FILE}); make one with "
            "synister prepare-training"
        )
    config, provenance = setup_provenance(setup_dir)
    if iteration == "best":
        iteration = best_validation_iteration(setup_dir, provenance, config, rule, averaged)
        provenance["iteration_chosen"] = f"validation runs, {rule} rule ({RULE_WORDS[rule]})"
    else:
        provenance["iteration_chosen"] = "given"
    iteration = int(iteration)
    checkpoint = checkpoint_path(setup_dir, iteration)
    if not checkpoint.is_file():
        have = ", ".join(str(i) for i, _ in list_checkpoints(setup_dir)) or "none"
        raise BundleError(
            f"{setup_dir}: no checkpoint of iteration {iteration} (checkpoints there: {have})"
        )
    if averaged:
        checkpoint = averaged_path(checkpoint)
        if not checkpoint.is_file():
            raise BundleError(
                f"{checkpoint}: no weight average of iteration {iteration}; a setup trained "
                "with ema_decay > 0 saves one beside each checkpoint"
            )
    weights, _, record = weights_and_record(checkpoint, config)
    provenance["iteration"] = iteration
    provenance["weights"] = "averaged" if averaged else "raw"
    provenance["metrics"] = {
        run["split_part"]: run
        for run in reversed(provenance["prediction_runs"])  # the first run of a part wins
        if run["iteration"] == iteration
        and run.get("averaged", False) == averaged
        and run["complete"]
        and run.get("synapse_accuracy") is not None
    }
    return write_bundle(out, weights, iteration, record, provenance, overwrite)
