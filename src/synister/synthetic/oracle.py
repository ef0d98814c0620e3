"""The Bayes-optimal classifier of the generator's latent features, and its accuracy.

Under the generator a synapse's standardised features are ``mean[c] + h + n + e`` with
hemilineage offset h, neuron offset n and synapse noise e, all independent, isotropic Gaussians.
One synapse therefore has likelihood N(mean[c], vh + vn + vs); the n synapses of one neuron
jointly depend on c only through their mean, which is N(mean[c], vh + vn + vs / n). Both
posteriors are exact, so no classifier of the images can beat these accuracies on average.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from .latents import GenerativeModel, standardised_features


def _log_posterior(x_std: np.ndarray, model: GenerativeModel, var: np.ndarray, prior: np.ndarray):
    """Unnormalised log posteriors (n, n_classes); ``var`` is each row's variance."""
    d2 = ((x_std[:, None, :] - model.means[None, :, :]) ** 2).sum(-1)
    return -0.5 * d2 / var[:, None] + np.log(np.maximum(prior, 1e-300))[None, :]


def synapse_posteriors(synapses: pd.DataFrame, model: GenerativeModel) -> np.ndarray:
    """(n, n_classes) posterior of each synapse's class from its own features alone."""
    x = standardised_features(synapses)
    var = np.full(len(x), model.var_hemi_lineage + model.var_neuron + model.var_synapse)
    lp = _log_posterior(x, model, var, model.synapse_prior)
    p = np.exp(lp - lp.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def oracle_from_latents(
    synapses: pd.DataFrame, model: GenerativeModel, synapse_ids: Iterable[int] | None = None
) -> dict:
    """Oracle accuracies on the synapses of ``synapses`` (optionally only ``synapse_ids``).

    ``synapse``: fraction of synapses whose single-synapse posterior picks the true class;
    ``neuron``: fraction of neurons whose joint posterior over their synapses (within the subset)
    picks it; ``neuron_vote``: the same for a majority vote of the synapse-level decisions (ties
    go to the larger summed posterior).
    """
    if synapse_ids is not None:
        wanted = pd.Index(np.asarray(list(synapse_ids), dtype=np.int64))
        missing = wanted.difference(synapses["synapse_id"])
        if len(missing):
            raise KeyError(f"synapse ids not in the dataset, e.g. {list(missing[:5])}")
        synapses = synapses[synapses["synapse_id"].isin(wanted)]
    if len(synapses) == 0:
        return {
            "synapse": float("nan"),
            "neuron": float("nan"),
            "neuron_vote": float("nan"),
            "n_synapses": 0,
            "n_neurons": 0,
        }
    class_index = {c: i for i, c in enumerate(model.classes)}
    truth = synapses["nt"].map(class_index).to_numpy()
    post = synapse_posteriors(synapses, model)
    syn_pred = post.argmax(1)

    x = standardised_features(synapses)
    frame = pd.DataFrame(x).assign(skeleton_id=synapses["skeleton_id"].to_numpy())
    grouped = frame.groupby("skeleton_id", sort=True)
    mean_x = grouped.mean().to_numpy()
    n_per = grouped.size().to_numpy()
    neuron_truth = (
        pd.Series(truth, index=synapses["skeleton_id"].to_numpy()).groupby(level=0).first()
    ).to_numpy()
    var = model.var_hemi_lineage + model.var_neuron + model.var_synapse / n_per
    neuron_pred = _log_posterior(mean_x, model, var, model.neuron_prior).argmax(1)

    n_cls = len(model.classes)
    codes = pd.factorize(synapses["skeleton_id"], sort=True)[0]
    votes = np.zeros((len(n_per), n_cls))
    np.add.at(votes, (codes, syn_pred), 1.0)
    mass = np.zeros((len(n_per), n_cls))
    np.add.at(mass, codes, post)
    vote_pred = (votes + 1e-6 * mass / np.maximum(n_per[:, None], 1)).argmax(1)
    return {
        "synapse": float((syn_pred == truth).mean()),
        "neuron": float((neuron_pred == neuron_truth).mean()),
        "neuron_vote": float((vote_pred == neuron_truth).mean()),
        "n_synapses": int(len(truth)),
        "n_neurons": int(len(n_per)),
    }


def load_latents(dataset_dir: str | Path) -> tuple[pd.DataFrame, GenerativeModel]:
    """The latents table and generative model of a folder written by ``synister synthetic``."""
    d = Path(dataset_dir)
    summary_path, latents_path = d / "summary.json", d / "latents.parquet"
    for p in (summary_path, latents_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found; is {d} a synthetic dataset folder?")
    summary = json.loads(summary_path.read_text())
    if "model" not in summary:
        raise ValueError(f"{summary_path} has no key 'model' (the generative model)")
    return pd.read_parquet(latents_path), GenerativeModel.from_json(summary["model"])


def oracle_accuracy(dataset_dir: str | Path, synapse_ids: Iterable[int] | None = None) -> dict:
    """Oracle accuracies (keys ``synapse``, ``neuron``, ``neuron_vote``) of a dataset folder,
    on all its synapses or only ``synapse_ids`` (e.g. one part of a split)."""
    synapses, model = load_latents(dataset_dir)
    return oracle_from_latents(synapses, model, synapse_ids)
