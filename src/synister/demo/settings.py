"""What the demo chooses: the dataset, the network and the training schedule, per recipe."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..evaluate.selection import DEFAULT_RULE, SELECTION_RULES

NETWORKS = {"resnet": "ResNet18", "vgg": "VGG"}


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo chooses: the dataset, the network, the training schedule.

    ``minutes`` (when set) is the training's wall-time budget, pretraining included:
    ``probe_iterations`` are trained and timed, the iterations planned to fit the budget at that
    pace, and the plan follows the pace after each checkpoint (``iterations`` is then unused).
    """

    preset: str = "easy"
    seed: int = 0
    iterations: int = 3600  # all of seeds 0-2 >= 0.95 of the oracle (2,400: 0.892 on seed 1)
    minutes: float | None = None
    probe_iterations: int = 60
    validation_checkpoints: int = 4
    shape_vox: tuple[int, int, int] | None = None  # dataset volume (None: the preset's)
    n_synapses: int | None = None  # None: the preset's default, capped to fit
    split_tolerance: float | None = None  # None: the split's default
    input_shape: tuple[int, int, int] = (8, 48, 48)  # voxels z,y,x
    network: str = "ResNet18"
    fmaps: int = 8
    downsample_factors: tuple[tuple[int, int, int], ...] = (
        (1, 2, 2),
        (1, 2, 2),
        (2, 2, 2),
        (2, 2, 2),
    )
    n_convolutions: tuple[int, ...] | None = None  # VGG: per level (None: 2 each)
    classifier_units: int = 4096  # VGG only
    batch_size: int = 16
    learning_rate: float = 2e-3
    lr_schedule: str = "cosine"
    warmup_iterations: int = 100
    label_smoothing: float = 0.0
    logit_adjustment: bool = False  # decisions for the train part's class frequencies
    channels_last: bool = True
    augment: bool = True
    #: exponential moving average of the weights, saved beside each checkpoint (0: none)
    ema_decay: float = 0.998
    #: the final model: raw or averaged weights, of the checkpoint this rule picks on the
    #: validation part (``synister.evaluate.selection.SELECTION_RULES``). Measured on the easy
    #: demo, seeds 0-2: the last checkpoint was always the best and the average no better
    #: (0.992/0.883/0.950 against 0.992/0.892/0.958); ``margin`` keeps the last one unless an
    #: earlier one is better by more than its standard error, so one synapse cannot flip it.
    final_weights: str = "raw"
    checkpoint_rule: str = DEFAULT_RULE
    # a curriculum: first this many iterations on the (default-sized) ``pretrain_preset``
    pretrain_preset: str = "easy"
    pretrain_iterations: int = 0
    pretrain_shape_vox: tuple[int, int, int] | None = None  # None: the preset's

    def __post_init__(self) -> None:
        if not 1 <= self.validation_checkpoints <= self.iterations:
            raise ValueError(
                f"validation_checkpoints must lie in 1..iterations ({self.iterations}), "
                f"got {self.validation_checkpoints}"
            )
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be positive, got {self.minutes}")
        if self.final_weights not in ("raw", "averaged"):
            raise ValueError(f"final_weights must be raw or averaged, got {self.final_weights!r}")
        if self.final_weights == "averaged" and not self.ema_decay:
            raise ValueError("final_weights averaged needs an ema_decay")
        if self.checkpoint_rule not in SELECTION_RULES:
            raise ValueError(
                f"checkpoint_rule must be one of {', '.join(SELECTION_RULES)}, got "
                f"{self.checkpoint_rule!r}"
            )

    @property
    def checkpoint_every(self) -> int:
        return self.iterations // self.validation_checkpoints


#: A small VGG for CPUs: three levels, narrow classifier (the funlib default, 4096 units, alone
#: holds 34 M weights at 8x64x64).
_SMALL_VGG = {
    "network": "VGG",
    "downsample_factors": ((1, 2, 2), (1, 2, 2), (2, 2, 2)),
    "classifier_units": 256,
    "learning_rate": 1e-3,
}
#: Changes to :class:`DemoSettings` per (preset, network).
RECIPES: dict[tuple[str, str], dict] = {
    ("easy", "resnet"): {},
    ("easy", "vgg"): {**_SMALL_VGG, "n_convolutions": (1, 1, 1)},
    ("fafb", "resnet"): {
        "preset": "fafb",
        "minutes": 30.0,
        "iterations": 6000,  # replaced by what the budget allows
        "validation_checkpoints": 6,
        "logit_adjustment": True,
        "ema_decay": 0.999,
        "warmup_iterations": 200,
        "pretrain_iterations": 1000,
        "split_tolerance": 0.15,  # 4-neuron classes miss the default 0.05 by up to 0.07
    },
}
RECIPES[("fafb", "vgg")] = {
    **RECIPES[("fafb", "resnet")],
    **_SMALL_VGG,
    "n_convolutions": (2, 2, 2),
}


def recipe(
    preset: str = "easy",
    network: str = "resnet",
    *,
    seed: int = 0,
    minutes: float | None = None,
    iterations: int | None = None,
) -> DemoSettings:
    """The demo's settings for a preset and a network (``resnet`` or ``vgg``); ``minutes``
    (a wall-time budget) or ``iterations`` (a fixed length, no budget) replace the recipe's.

    ``easy``: a 48x48 voxel field (192 nm) holds one easy synapse and little of its lattice
    neighbours (224 nm apart), whose other classes would otherwise blur the label; a ResNet-18
    of 8 feature maps (0.5 M weights) trains a 16-patch batch in ~0.2 s of one core.
    ``fafb``: the same network first learns the easy preset (whose classes differ at a glance)
    and then the fafb preset, where training from scratch stayed at chance for 1,500 iterations;
    its decisions follow the training part's class frequencies (logit adjustment). The docs'
    accuracy page (docs/explanation/accuracy-fafb.md) has the measurements behind them.
    """
    if network not in NETWORKS:
        raise ValueError(f"network must be one of {', '.join(NETWORKS)}, got {network!r}")
    if preset not in {p for p, _ in RECIPES}:
        raise ValueError(f"the demo knows presets easy and fafb, got {preset!r}")
    settings = replace(DemoSettings(), **RECIPES[(preset, network)], seed=seed)
    if iterations:
        settings = replace(settings, iterations=iterations, minutes=None)
    if minutes:
        settings = replace(settings, minutes=minutes)
    return settings
