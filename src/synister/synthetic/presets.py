"""Presets of the generator: how far apart the classes lie and how the variance is shared.

Features are Gaussian in the units of ``FEATURE_UNITS``; a class mean is ``BASE + separation *
CLASS_OFFSETS[nt] * unit``. The variance of a synapse's feature splits into a hemilineage part
(shared by all neurons of a hemilineage), a neuron part (shared by the neuron's synapses) and a
synapse part. Only the synapse part averages out over a neuron's synapses, so neuron-level
decisions beat single synapses, and the hemilineage part makes hemilineage splits harder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..nt import TRANSMITTERS

#: Latent features of one synapse, in the order of every feature vector.
FEATURES: tuple[str, ...] = (
    "vesicle_diameter_nm",  # clear vesicles
    "log_vesicle_count",  # vesicles in the presynaptic cloud
    "cloud_radius_nm",  # how tightly the vesicles cluster
    "dense_core_logit",  # logit of the fraction of dense-core vesicles
    "tbar_width_nm",  # platform width of the T-bar
    "cleft_width_nm",  # synaptic cleft
)

#: Value of each feature for a "neutral" synapse.
BASE: tuple[float, ...] = (38.0, 3.0, 55.0, -2.6, 90.0, 16.0)

#: One unit of each feature (the scale the class offsets and the variances are expressed in).
FEATURE_UNITS: tuple[float, ...] = (3.0, 0.18, 6.0, 0.55, 10.0, 1.5)

#: Class offsets in feature units, chosen after what biology hints: monoamines (serotonin,
#: octopamine, dopamine) have many dense-core vesicles and larger vesicles; GABA larger, pleomorphic
#: clear vesicles; acetylcholine many small clear vesicles and large T-bars; glutamate few, small
#: vesicles and a wide cleft. Every pair differs in several features, none in all.
CLASS_OFFSETS: dict[str, tuple[float, ...]] = {
    "gaba": (1.0, -0.3, 0.4, -0.8, -0.6, -0.3),
    "acetylcholine": (-1.0, 0.6, -0.4, -1.2, 0.8, -0.7),
    "glutamate": (-0.8, -0.9, -1.0, -0.6, -0.8, 1.1),
    "serotonin": (0.6, -0.6, 0.9, 1.4, -1.0, -0.5),
    "octopamine": (1.6, -1.0, 0.2, 0.9, 0.6, 0.6),
    "dopamine": (0.2, 0.2, 1.2, 1.8, 0.2, 0.5),
}

#: Known-transmitter neurons per class in the FAFB export (the default class proportions).
FAFB_NEURON_COUNTS: dict[str, int] = {
    "acetylcholine": 397,
    "gaba": 165,
    "dopamine": 83,
    "glutamate": 32,
    "octopamine": 5,
    "serotonin": 5,
}


@dataclass(frozen=True)
class Preset:
    """Everything that sets the difficulty and the default size of a synthetic dataset."""

    name: str
    separation: float  # scales CLASS_OFFSETS
    var_hemi_lineage: float  # variances in squared feature units
    var_neuron: float
    var_synapse: float
    shape_vox: tuple[int, int, int]  # default volume, z,y,x
    n_synapses: int  # default number of synapses (capped by what fits the volume)
    synapses_per_neuron: float  # mean; counts vary log-normally
    neurons_per_hemi_lineage: float
    min_neurons_per_class: int = 4
    neuron_proportions: dict[str, float] = field(default_factory=dict)  # empty = FAFB
    # imaging nuisances
    noise_sigma: float = 13.0
    defect_probability: float = 0.02  # per section
    # dense-core vesicles are this many times the clear vesicles' diameter; large ones rarely fit
    # the ~110 nm deep bouton, so fewer are drawn than the latents ask for
    dense_core_scale: float = 1.7

    def proportions(self) -> dict[str, float]:
        counts = self.neuron_proportions or FAFB_NEURON_COUNTS
        total = float(sum(counts.values()))
        return {nt: counts.get(nt, 0) / total for nt in TRANSMITTERS}


PRESETS: dict[str, Preset] = {
    "easy": Preset(
        name="easy",
        # wide enough that vesicle size, dense cores and T-bar width differ at a glance, so the
        # one-command demo's small CPU network learns it in minutes (3.5 stayed at chance)
        separation=5.0,
        var_hemi_lineage=0.04,
        var_neuron=0.06,
        var_synapse=0.30,
        shape_vox=(48, 768, 768),
        n_synapses=600,  # what fits 48x768x768
        synapses_per_neuron=10.0,
        neurons_per_hemi_lineage=3.0,
        neuron_proportions={nt: 1.0 for nt in TRANSMITTERS},
        noise_sigma=4.0,  # dense cores and vesicle rims stay crisp at 4 nm pixels
        defect_probability=0.0,
        dense_core_scale=1.0,  # so the drawn dense-core fraction follows the latent one
    ),
    "fafb": Preset(
        name="fafb",
        # tuned so that the image-level ceiling (the classifier of features measured back from
        # the images) lands near the paper's FAFB figures (0.87 synapse, 0.94 neuron) with the
        # latent oracle above it: the drawing keeps only part of the latents (ten-odd vesicles
        # sample the cloud's radius and dense-core fraction, the drawn count saturates), so the
        # classes lie wider apart than the images show. Before: separation 0.98, variances
        # 0.12/0.15/0.60 and dense-core vesicles 1.7x (most did not fit the bouton): oracle
        # 0.88, image-level ceiling 0.70-0.76 at synapse level.
        separation=1.6,
        var_hemi_lineage=0.25,
        var_neuron=0.35,
        var_synapse=0.45,
        shape_vox=(64, 1024, 1024),
        n_synapses=2000,
        synapses_per_neuron=12.0,
        neurons_per_hemi_lineage=4.0,
        dense_core_scale=1.3,
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; the error lists the known ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
