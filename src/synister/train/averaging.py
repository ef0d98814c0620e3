"""An exponential moving average (EMA) of a network's weights, kept while it trains.

Why: the weights at one checkpoint carry the noise of the last few hundred steps, so which
checkpoint validates best can hinge on one synapse. The average over the last stretch of
training is smoother and usually at least as accurate. Batch-norm buffers (running mean and
variance) are averaged like the weights; integer buffers (batch counts) are copied.

The average is saved beside each checkpoint as ``model_checkpoint_<N>.averaged``: a checkpoint
file of the same layout (weights only, no optimizer state), which ``list_checkpoints`` does not
count as a training checkpoint, and which ``prepare-prediction --checkpoint`` can predict with.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synister.layout import averaged_path
from synister.models.checkpoint import (
    model_record,
    read_checkpoint,
    save_weights,
    strip_wrapper_prefixes,
    unwrap_model,
)

#: key of the average's own state (decay, updates) in its file
AVERAGING_KEY = "synister_averaging"


class WeightAverage:
    """EMA of a model's state: ``avg = d * avg + (1 - d) * weights`` after every step.

    The decay of update ``n`` (counting from 1) is ``min(decay, (1 + n) / (10 + n))``, so that
    the first updates follow the weights closely instead of keeping the initial ones for
    thousands of steps (TensorFlow's ``num_updates`` rule).
    """

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the weight average's decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.state = {
            key: value.detach().clone() for key, value in unwrap_model(model).state_dict().items()
        }

    def current_decay(self) -> float:
        n = self.updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        for key, value in unwrap_model(model).state_dict().items():
            average = self.state[key]
            if average.is_floating_point():
                average.lerp_(value.detach(), 1.0 - decay)
            else:
                average.copy_(value)
        self.updates += 1

    def save(self, path: str | Path, iteration: int, network: dict | None = None) -> Path:
        """Write the average as a weights-only checkpoint (atomically), with its decay and
        update count under :data:`AVERAGING_KEY` so that a resumed run continues it."""
        extra = {AVERAGING_KEY: {"decay": self.decay, "updates": self.updates}}
        return save_weights(path, self.state, iteration, network, extra)

    def load(self, path: str | Path) -> None:
        """Continue the average stored in ``path`` (written by :meth:`save`)."""
        state = read_checkpoint(path)
        weights = strip_wrapper_prefixes(state["model_state_dict"])
        if set(weights) != set(self.state):
            raise ValueError(f"{path}: the averaged weights do not fit the network")
        for key, value in weights.items():
            self.state[key].copy_(value)
        self.updates = int((state.get(AVERAGING_KEY) or {}).get("updates", 0))


def save_average(
    average: WeightAverage, checkpoint: str | Path, model: torch.nn.Module, iteration: int
) -> Path:
    """Write ``average`` beside the checkpoint path ``checkpoint``, with the model's network
    record (so that it predicts like the checkpoint)."""
    return average.save(averaged_path(checkpoint), iteration, model_record(model))
