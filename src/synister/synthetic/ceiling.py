"""The image-level ceiling: the Bayes classifier of features measured back from the images.

The oracle (:mod:`synister.synthetic.oracle`) classifies the generator's latent features, which
the rendered images show only in part (a cloud of ten vesicles says little about its radius; a
cleft 1.5 nm wider moves its membranes by a third of a pixel). The features measured from the
images (:mod:`synister.synthetic.measure`) keep what the pictures show. Their classifier has
the oracle's form, a hierarchical Gaussian (class mean, a neuron-shared offset, a per-synapse
part), with full covariances because measurement couples and rescales the features; it is
fitted on one set of neurons and scored on others. One synapse's features then have covariance
``B + W``; the mean of a neuron's n synapses ``B + W / n`` (B between neurons, W within).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .latents import GenerativeModel
from .oracle import load_latents
from .presets import FEATURES

#: Where ``synister synthetic`` writes the measured features (synapse_id + FEATURES columns).
IMAGE_FEATURES_FILE = "image_features.parquet"
#: Folds of the neuron-grouped cross-validation that scores a whole dataset.
CV_FOLDS = 5


@dataclass
class HierarchicalGaussian:
    """Class means, between-neuron covariance B and within-neuron covariance W of features."""

    classes: tuple[str, ...]
    means: np.ndarray  # (n_classes, n_features)
    between: np.ndarray  # (n_features, n_features)
    within: np.ndarray
    fill: np.ndarray  # (n_features,) stands in for a missing measurement

    @classmethod
    def fit(
        cls, x: np.ndarray, labels: np.ndarray, neurons: np.ndarray, classes: Iterable[str]
    ) -> HierarchicalGaussian:
        """Fit on features ``x`` (n, f) with class indices ``labels`` and neuron ids ``neurons``.

        W pools every neuron's scatter around its own mean; the scatter of neuron means around
        their class mean estimates B + W * mean(1/n), from which W's share is taken off.
        """
        classes = tuple(classes)
        fill = np.nanmean(x, axis=0)
        x = np.where(np.isfinite(x), x, fill)
        n_f = x.shape[1]
        frame = pd.DataFrame(x).assign(neuron=neurons, label=labels)
        grouped = frame.groupby("neuron", sort=True)
        neuron_mean = grouped[list(range(n_f))].mean().to_numpy()
        neuron_n = grouped.size().to_numpy()
        neuron_label = grouped["label"].first().to_numpy()
        codes = pd.factorize(frame["neuron"], sort=True)[0]
        resid = x - neuron_mean[codes]
        dof_within = max(len(x) - len(neuron_n), 1)
        within = resid.T @ resid / dof_within
        means = np.zeros((len(classes), n_f))
        scatter = np.zeros((n_f, n_f))
        for c in range(len(classes)):
            rows = labels == c
            if not rows.any():  # a class the fit never saw is never predicted
                means[c] = np.nan
                continue
            means[c] = x[rows].mean(0)
            dev = neuron_mean[neuron_label == c] - means[c]
            scatter += dev.T @ dev
        dof_between = max(len(neuron_n) - len(classes), 1)
        between = scatter / dof_between - within * np.mean(1.0 / neuron_n)
        # keep B positive semi-definite (small samples can make the difference indefinite)
        vals, vecs = np.linalg.eigh((between + between.T) / 2)
        between = (vecs * np.maximum(vals, 1e-6 * np.trace(within) / n_f)) @ vecs.T
        return cls(classes, means, between, within, fill)

    def _log_posteriors(self, x: np.ndarray, cov: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """(n, n_classes) unnormalised log posteriors; ``cov`` is (n, f, f) or (f, f)."""
        x = np.where(np.isfinite(x), x, self.fill)
        diff = x[:, None, :] - self.means[None]  # (n, c, f)
        cov = np.broadcast_to(cov, (len(x), *self.within.shape))
        inv = np.linalg.inv(cov)
        _, logdet = np.linalg.slogdet(cov)
        d2 = np.einsum("ncf,nfg,ncg->nc", np.nan_to_num(diff), inv, np.nan_to_num(diff))
        d2[:, ~np.isfinite(self.means).all(1)] = np.inf
        return -0.5 * (d2 + logdet[:, None]) + np.log(np.maximum(prior, 1e-300))[None]

    def synapse_posteriors(self, x: np.ndarray, prior: np.ndarray) -> np.ndarray:
        lp = self._log_posteriors(x, self.between + self.within, prior)
        p = np.exp(lp - lp.max(1, keepdims=True))
        return p / p.sum(1, keepdims=True)

    def neuron_decisions(self, mean_x: np.ndarray, n: np.ndarray, prior: np.ndarray) -> np.ndarray:
        cov = self.between[None] + self.within[None] / np.asarray(n, float)[:, None, None]
        return self._log_posteriors(mean_x, cov, prior).argmax(1)


def _score(
    fitted: HierarchicalGaussian, table: pd.DataFrame, model: GenerativeModel
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per synapse: true and predicted class, posteriors; per neuron: truth and decision."""
    index = {c: i for i, c in enumerate(model.classes)}
    truth = table["nt"].map(index).to_numpy()
    x = table[list(FEATURES)].to_numpy(dtype=float)
    post = fitted.synapse_posteriors(x, model.synapse_prior)
    x = np.where(np.isfinite(x), x, fitted.fill)
    frame = pd.DataFrame(x).assign(neuron=table["skeleton_id"].to_numpy(), truth=truth)
    grouped = frame.groupby("neuron", sort=True)
    mean_x = grouped[list(range(x.shape[1]))].mean().to_numpy()
    n = grouped.size().to_numpy()
    neuron_pred = fitted.neuron_decisions(mean_x, n, model.neuron_prior)
    return truth, post.argmax(1), post, grouped["truth"].first().to_numpy(), neuron_pred


def _accuracies(parts: list, skeleton_ids: list[np.ndarray], n_classes: int) -> dict:
    truth = np.concatenate([p[0] for p in parts])
    pred = np.concatenate([p[1] for p in parts])
    post = np.concatenate([p[2] for p in parts])
    neuron_truth = np.concatenate([p[3] for p in parts])
    neuron_pred = np.concatenate([p[4] for p in parts])
    codes = pd.factorize(np.concatenate(skeleton_ids), sort=True)[0]
    n_neurons = codes.max() + 1
    votes = np.zeros((n_neurons, n_classes))
    np.add.at(votes, (codes, pred), 1.0)
    mass = np.zeros((n_neurons, n_classes))
    np.add.at(mass, codes, post)
    vote_pred = (votes + 1e-6 * mass / np.maximum(votes.sum(1, keepdims=True), 1)).argmax(1)
    vote_truth = np.zeros(n_neurons, int)
    vote_truth[codes] = truth
    joint = float((neuron_pred == neuron_truth).mean())
    vote = float((vote_pred == vote_truth).mean())
    return {
        "synapse": float((pred == truth).mean()),
        # a ceiling: the better of the two neuron-level rules (with covariances estimated from
        # few neurons the joint posterior is not always the better one)
        "neuron": max(joint, vote),
        "neuron_joint": joint,
        "neuron_vote": vote,
        "n_synapses": int(len(truth)),
        "n_neurons": int(len(neuron_truth)),
    }


def _fit(table: pd.DataFrame, model: GenerativeModel) -> HierarchicalGaussian:
    index = {c: i for i, c in enumerate(model.classes)}
    return HierarchicalGaussian.fit(
        table[list(FEATURES)].to_numpy(dtype=float),
        table["nt"].map(index).to_numpy(),
        table["skeleton_id"].to_numpy(),
        model.classes,
    )


def ceiling_from_features(
    features: pd.DataFrame,
    model: GenerativeModel,
    train_ids: Iterable[int],
    eval_ids: Iterable[int],
) -> dict:
    """Accuracy on ``eval_ids`` of the classifier of ``features`` (synapse_id, skeleton_id, nt,
    FEATURES) fitted on ``train_ids``: ``synapse``; ``neuron_joint`` (joint posterior of a
    neuron's synapses, as the oracle's ``neuron``), ``neuron_vote`` (majority of the synapse
    decisions) and ``neuron``, the better of the two."""
    by_id = features.set_index("synapse_id", drop=False)
    train = by_id.loc[np.asarray(list(train_ids), dtype=np.int64)]
    evaluated = by_id.loc[np.asarray(list(eval_ids), dtype=np.int64)]
    if len(evaluated) == 0:
        nan = float("nan")
        return {"synapse": nan, "neuron": nan, "neuron_joint": nan, "neuron_vote": nan,
                "n_synapses": 0, "n_neurons": 0}  # fmt: skip
    scored = _score(_fit(train, model), evaluated, model)
    return _accuracies([scored], [evaluated["skeleton_id"].to_numpy()], len(model.classes))


def cross_validated_ceiling(
    features: pd.DataFrame, model: GenerativeModel, folds: int = CV_FOLDS, seed: int = 0
) -> dict:
    """Accuracy over all synapses, each neuron scored by a classifier fitted without it
    (neurons dealt to ``folds`` folds per class)."""
    rng = np.random.default_rng(seed)
    neurons = features.groupby("skeleton_id")["nt"].first()
    fold_of = {}
    for _, group in neurons.groupby(neurons):
        ids = rng.permutation(group.index.to_numpy())
        fold_of.update({sk: i % folds for i, sk in enumerate(ids)})
    fold = features["skeleton_id"].map(fold_of).to_numpy()
    parts, skeletons = [], []
    for f in range(folds):
        held = features[fold == f]
        if held.empty:
            continue
        parts.append(_score(_fit(features[fold != f], model), held, model))
        skeletons.append(held["skeleton_id"].to_numpy())
    return _accuracies(parts, skeletons, len(model.classes))


def load_image_features(dataset_dir: str | Path) -> tuple[pd.DataFrame, GenerativeModel]:
    """The measured features (synapse_id, skeleton_id, nt, FEATURES) of a dataset folder and
    its generative model; the error says how to get them when they were not measured."""
    path = Path(dataset_dir) / IMAGE_FEATURES_FILE
    latents, model = load_latents(dataset_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the dataset was generated without measuring its images "
            "(generate it again without --no-ceiling)"
        )
    return pd.read_parquet(path), model


def image_ceiling(
    dataset_dir: str | Path, train_ids: Iterable[int], eval_ids: Iterable[int] | None = None
) -> dict:
    """Image-level ceiling of a dataset folder on ``eval_ids``, fitted on ``train_ids``;
    without ``eval_ids``, cross-validated within ``train_ids`` (by neuron)."""
    features, model = load_image_features(dataset_dir)
    if eval_ids is None:
        wanted = np.asarray(list(train_ids), dtype=np.int64)
        return cross_validated_ceiling(features[features["synapse_id"].isin(wanted)], model)
    return ceiling_from_features(features, model, train_ids, eval_ids)


__all__ = [
    "IMAGE_FEATURES_FILE",
    "HierarchicalGaussian",
    "ceiling_from_features",
    "cross_validated_ceiling",
    "image_ceiling",
    "load_image_features",
]
