"""The generative hierarchy: hemilineage -> neuron -> synapse, each adding a feature offset."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..nt import TRANSMITTERS
from .presets import BASE, CLASS_OFFSETS, FEATURE_UNITS, FEATURES, Preset


@dataclass(frozen=True)
class GenerativeModel:
    """The Gaussian model the features are drawn from, in standardised units (x - BASE) / UNITS.

    The oracle uses exactly this model, so it lives with the data (``summary.json["model"]``).
    """

    classes: tuple[str, ...]
    means: np.ndarray  # (n_classes, n_features), standardised
    var_hemi_lineage: float
    var_neuron: float
    var_synapse: float
    synapse_prior: np.ndarray  # (n_classes,) class frequencies of synapses as generated
    neuron_prior: np.ndarray  # (n_classes,) class frequencies of neurons as generated

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "features": list(FEATURES),
            "base": list(BASE),
            "units": list(FEATURE_UNITS),
            "means": self.means.tolist(),
            "var_hemi_lineage": self.var_hemi_lineage,
            "var_neuron": self.var_neuron,
            "var_synapse": self.var_synapse,
            "synapse_prior": self.synapse_prior.tolist(),
            "neuron_prior": self.neuron_prior.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> GenerativeModel:
        try:
            return cls(
                classes=tuple(d["classes"]),
                means=np.asarray(d["means"], dtype=float),
                var_hemi_lineage=float(d["var_hemi_lineage"]),
                var_neuron=float(d["var_neuron"]),
                var_synapse=float(d["var_synapse"]),
                synapse_prior=np.asarray(d["synapse_prior"], dtype=float),
                neuron_prior=np.asarray(d["neuron_prior"], dtype=float),
            )
        except KeyError as e:
            raise ValueError(f"generative model in summary.json lacks key {e.args[0]!r}") from None


def class_means(preset: Preset) -> np.ndarray:
    """(n_classes, n_features) standardised class means, rows in ``TRANSMITTERS`` order."""
    return preset.separation * np.array([CLASS_OFFSETS[nt] for nt in TRANSMITTERS], dtype=float)


def neurons_per_class(preset: Preset, n_neurons: int) -> np.ndarray:
    """Neuron counts per class (``TRANSMITTERS`` order): preset proportions, at least the floor."""
    p = np.array([preset.proportions()[nt] for nt in TRANSMITTERS])
    counts = np.floor(p * n_neurons).astype(int)
    # hand the remainder to the largest fractional parts, then apply the floor
    rest = n_neurons - counts.sum()
    order = np.argsort(-(p * n_neurons - counts), kind="stable")
    counts[order[:rest]] += 1
    return np.maximum(counts, preset.min_neurons_per_class)


def sample_hierarchy(
    preset: Preset, n_synapses: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, GenerativeModel]:
    """Draw hemilineages, neurons and ``n_synapses`` synapses with their latent features.

    Returns ``hemi_lineages`` (hemi_lineage_id, hemi_lineage_name, nt), ``skeletons``
    (skeleton_id, hemi_lineage_id, nt), ``synapses`` (synapse_id, skeleton_id, hemi_lineage_id,
    nt, one column per feature in natural units) and the model they were drawn from.
    """
    n_neurons_wanted = max(1, round(n_synapses / preset.synapses_per_neuron))
    per_class = neurons_per_class(preset, n_neurons_wanted)
    min_syn = 2
    n_neurons = int(per_class.sum())
    if n_synapses < min_syn * n_neurons:
        raise ValueError(
            f"{n_synapses} synapses are too few for {n_neurons} neurons "
            f"({preset.min_neurons_per_class} per class at least, {min_syn} synapses each); "
            "ask for more synapses or a larger --shape"
        )
    means = class_means(preset)
    n_feat = len(FEATURES)

    hl_rows, sk_rows = [], []
    neuron_class, neuron_offset = [], []
    hl_id = 1
    sk_ids = rng.choice(np.arange(1_000, 1_000 + 50 * n_neurons), n_neurons, replace=False)
    k = 0
    for ci, nt in enumerate(TRANSMITTERS):
        n_c = int(per_class[ci])
        if n_c == 0:
            continue
        n_hl = max(min(2, n_c), round(n_c / preset.neurons_per_hemi_lineage))
        hl_of_neuron = np.sort(rng.permutation(np.arange(n_c) % n_hl))
        hl_offsets = rng.normal(0, np.sqrt(preset.var_hemi_lineage), (n_hl, n_feat))
        for j in range(n_hl):
            hl_rows.append((hl_id + j, f"SYN_HL{hl_id + j:03d}", nt))
        for i in range(n_c):
            sk_rows.append((int(sk_ids[k]), hl_id + int(hl_of_neuron[i]), nt))
            off = hl_offsets[hl_of_neuron[i]] + rng.normal(0, np.sqrt(preset.var_neuron), n_feat)
            neuron_class.append(ci)
            neuron_offset.append(off)
            k += 1
        hl_id += n_hl
    neuron_class = np.array(neuron_class)
    neuron_offset = np.array(neuron_offset)

    # synapses per neuron: log-normal weights, at least ``min_syn`` each
    weights = rng.lognormal(0.0, 0.7, n_neurons)
    counts = min_syn + rng.multinomial(n_synapses - min_syn * n_neurons, weights / weights.sum())
    neuron_of_syn = rng.permutation(np.repeat(np.arange(n_neurons), counts))
    z_std = (
        means[neuron_class[neuron_of_syn]]
        + neuron_offset[neuron_of_syn]
        + rng.normal(0, np.sqrt(preset.var_synapse), (n_synapses, n_feat))
    )
    values = np.asarray(BASE) + z_std * np.asarray(FEATURE_UNITS)

    skeletons = pd.DataFrame(sk_rows, columns=["skeleton_id", "hemi_lineage_id", "nt"])
    hemi_lineages = pd.DataFrame(hl_rows, columns=["hemi_lineage_id", "hemi_lineage_name", "nt"])
    synapse_ids = rng.choice(
        np.arange(100_000, 100_000 + 20 * n_synapses), n_synapses, replace=False
    )
    synapses = pd.DataFrame(
        {
            "synapse_id": np.sort(synapse_ids).astype(np.int64),
            "skeleton_id": skeletons["skeleton_id"].to_numpy()[neuron_of_syn].astype(np.int64),
            "hemi_lineage_id": skeletons["hemi_lineage_id"].to_numpy()[neuron_of_syn],
            "nt": skeletons["nt"].to_numpy()[neuron_of_syn],
        }
    )
    for f, name in enumerate(FEATURES):
        synapses[name] = values[:, f]

    syn_counts = np.bincount(neuron_class[neuron_of_syn], minlength=len(TRANSMITTERS))
    model = GenerativeModel(
        classes=TRANSMITTERS,
        means=means,
        var_hemi_lineage=preset.var_hemi_lineage,
        var_neuron=preset.var_neuron,
        var_synapse=preset.var_synapse,
        synapse_prior=syn_counts / syn_counts.sum(),
        neuron_prior=per_class / per_class.sum(),
    )
    return hemi_lineages, skeletons, synapses, model


def standardised_features(synapses: pd.DataFrame) -> np.ndarray:
    """(n, n_features) features of a latents table in the model's standardised units."""
    missing = [f for f in FEATURES if f not in synapses.columns]
    if missing:
        raise ValueError(f"latents table lacks feature columns {missing}")
    x = synapses[list(FEATURES)].to_numpy(dtype=float)
    return (x - np.asarray(BASE)) / np.asarray(FEATURE_UNITS)
