"""The demo's settings: they must make a valid training setup and a network that runs on them.

The demo itself (minutes of training) is not run here; benchmarks and the README report it.
"""

from __future__ import annotations

import torch

from synister.config import load_train_setup
from synister.demo import DemoSettings
from synister.models import build_model
from synister.setup import prepare_training


def test_default_settings_make_a_setup_whose_network_classifies_a_batch(tmp_path):
    s = DemoSettings()
    assert s.iterations % s.validation_checkpoints == 0  # the last checkpoint is the last step
    setup = prepare_training(
        tmp_path,
        "demo",
        0,
        db_url=f"sqlite:///{tmp_path / 'x.db'}",
        split_name="skeleton",
        raw_container=str(tmp_path / "raw.zarr"),
        raw_dataset="raw",
        check_volume=False,  # no volume: only the network is built here
        input_shape=s.input_shape,
        network=s.network,
        fmaps=s.fmaps,
        downsample_factors=list(s.downsample_factors),
        batch_size=s.batch_size,
        learning_rate=s.learning_rate,
        augment=s.augment,
        checkpoint_every=s.checkpoint_every,
    )
    cfg, _ = load_train_setup(setup)
    assert tuple(cfg.input_shape) == s.input_shape and cfg.network == s.network
    model = build_model(cfg).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 1, *s.input_shape))
    assert logits.shape == (2, len(cfg.classes)) == (2, 6)
