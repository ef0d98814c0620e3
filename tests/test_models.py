"""synister.models: funlib-compatible Vgg3D, the 3D ResNet-18 and original-format checkpoints."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from synister.config import TrainConfig
from synister.models import (
    CheckpointError,
    ResNet3D,
    Vgg3D,
    build_model,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

FAFB_FACTORS = [(1, 2, 2), (1, 2, 2), (1, 2, 2), (2, 2, 2)]


def _fafb_expected_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of funlib's Vgg3D(fmaps=12, FAFB factors, input 16x160x160), by hand."""
    expected: dict[str, tuple[int, ...]] = {}
    channels_in, index = 1, 0
    for channels in (12, 24, 48, 96):  # fmaps x fmap_inc per level
        for _ in range(2):  # n_convolutions: conv, batch norm, relu
            expected[f"features.{index}.weight"] = (channels, channels_in, 3, 3, 3)
            expected[f"features.{index}.bias"] = (channels,)
            for name in ("weight", "bias", "running_mean", "running_var"):
                expected[f"features.{index + 1}.{name}"] = (channels,)
            expected[f"features.{index + 1}.num_batches_tracked"] = ()
            channels_in, index = channels, index + 3
        index += 1  # max pool
    # 16x160x160 -> 16x20x20 -> 8x10x10 voxels, 96 maps: 76800 inputs to the classifier
    for layer, shape in ((0, (4096, 76800)), (3, (4096, 4096)), (6, (6, 4096))):
        expected[f"classifier.{layer}.weight"] = shape
        expected[f"classifier.{layer}.bias"] = (shape[0],)
    return expected


def test_vgg_fafb_state_dict_keys_and_shapes_match_funlib():
    with torch.device("meta"):  # no memory for the 332M weights, no forward pass
        model = Vgg3D((16, 160, 160), fmaps=12, downsample_factors=FAFB_FACTORS)
    state = model.state_dict()
    expected = _fafb_expected_shapes()
    assert list(state) == list(expected)
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    assert isinstance(model.classifier[0], nn.Linear) and model.classifier[0].in_features == 76800
    assert [type(m).__name__ for m in model.classifier] == [
        "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"
    ]  # fmt: skip
    assert [m.kernel_size for m in model.features if isinstance(m, nn.MaxPool3d)] == FAFB_FACTORS


def _reference_vgg(fmaps: int, classes: int) -> nn.Module:
    """The original layout written out by hand: 2 levels of 2 convs, pools (1,2,2) and (2,2,2)."""

    def block(c_in, c_out):
        return [nn.Conv3d(c_in, c_out, 3, padding=1), nn.BatchNorm3d(c_out), nn.ReLU()]

    reference = nn.Module()
    reference.features = nn.Sequential(
        *block(1, fmaps), *block(fmaps, fmaps), nn.MaxPool3d((1, 2, 2)),
        *block(fmaps, 2 * fmaps), *block(2 * fmaps, 2 * fmaps), nn.MaxPool3d((2, 2, 2)),
    )  # fmt: skip
    flat = 2 * fmaps * 2 * 4 * 4  # input 4x16x16 -> 2x4x4
    reference.classifier = nn.Sequential(
        nn.Linear(flat, 4096), nn.ReLU(), nn.Dropout(),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(), nn.Linear(4096, classes),
    )  # fmt: skip
    return reference


def _randomize_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm3d):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
            layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)


def test_original_layout_checkpoint_loads_with_identical_logits(tmp_path):
    generator = torch.Generator().manual_seed(0)
    reference = _reference_vgg(fmaps=3, classes=5)
    with torch.no_grad():
        _randomize_batch_norms(reference, generator)
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-4)
    path = tmp_path / "model_checkpoint_1500"  # the original's name, no "iteration" key inside
    torch.save(
        {
            "model_state_dict": reference.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
        },
        path,
    )
    model = Vgg3D((4, 16, 16), fmaps=3, downsample_factors=[(1, 2, 2), (2, 2, 2)],
                  fmap_inc=(2, 2), n_convolutions=(2, 2), output_classes=5)  # fmt: skip
    assert load_checkpoint(path, model) == 1500
    raw = torch.rand(2, 1, 4, 16, 16, generator=generator) * 2 - 1
    reference.eval(), model.eval()
    with torch.no_grad():
        expected = reference.classifier(reference.features(raw).flatten(1))
        assert torch.equal(model(raw), expected)
        assert torch.equal(model(raw[:, 0]), expected)  # the original's (B, Z, Y, X) input


def test_checkpoint_round_trip_restores_optimizer_and_accepts_ddp_prefixes(tmp_path):
    torch.manual_seed(0)
    model = Vgg3D((2, 8, 8), fmaps=2, downsample_factors=[(1, 2, 2)], fmap_inc=(2,),
                  n_convolutions=(1,), output_classes=3)  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 1, 2, 8, 8)).sum().backward()
    optimizer.step()
    path = save_checkpoint(tmp_path / "model_checkpoint_7", model, optimizer, 7)
    assert list_checkpoints(tmp_path) == [(7, path)]
    restored = Vgg3D((2, 8, 8), fmaps=2, downsample_factors=[(1, 2, 2)], fmap_inc=(2,),
                     n_convolutions=(1,), output_classes=3)  # fmt: skip
    restored_optimizer = torch.optim.Adam(restored.parameters(), lr=1e-3)
    assert load_checkpoint(path, restored, restored_optimizer) == 7
    restored_state = restored.state_dict()
    assert all(torch.equal(value, restored_state[key]) for key, value in model.state_dict().items())
    first = next(iter(restored_optimizer.state.values()))
    assert first["step"] == 1 and first["exp_avg"].abs().sum() > 0  # not a fresh optimizer
    prefixed = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model_state_dict": prefixed}, tmp_path / "ddp")
    fresh = Vgg3D((2, 8, 8), fmaps=2, downsample_factors=[(1, 2, 2)], fmap_inc=(2,),
                  n_convolutions=(1,), output_classes=3)  # fmt: skip
    assert load_checkpoint(tmp_path / "ddp", fresh) == 0
    assert torch.equal(fresh.classifier[6].weight, model.classifier[6].weight)
    wrong = Vgg3D((2, 8, 8), fmaps=2, downsample_factors=[(1, 2, 2)], fmap_inc=(2,),
                  n_convolutions=(1,), output_classes=4)  # fmt: skip
    with pytest.raises(CheckpointError, match="model_checkpoint_7: the checkpoint does not fit"):
        load_checkpoint(path, wrong)


def test_vgg_rejects_inputs_pooling_cannot_divide():
    with pytest.raises(ValueError, match=r"\(4, 16, 18\) cannot be max-pooled at level 1"):
        Vgg3D((4, 16, 18), downsample_factors=[(1, 2, 2), (1, 2, 2)], fmap_inc=(2, 2),
              n_convolutions=(2, 2))  # fmt: skip
    with pytest.raises(ValueError, match="one value per level"):
        Vgg3D((4, 16, 16), downsample_factors=[(1, 2, 2)], fmap_inc=(2, 2), n_convolutions=(2,))


def _config(**changes) -> TrainConfig:
    values = dict(
        synapse_types=["gaba", "acetylcholine", "glutamate"],
        input_shape=(8, 32, 32),
        fmaps=4,
        db_name_data="d",
        split_name="s",
        voxel_size=(40, 4, 4),
        raw_container="raw.zarr",
        raw_dataset="raw",
        downsample_factors=[(1, 2, 2), (1, 2, 2), (2, 2, 2)],
    )
    return TrainConfig(**{**values, **changes})


def test_resnet18_forward_shape_and_gradients():
    torch.manual_seed(0)
    model = build_model(_config(network="ResNet18", neither_class=True))
    assert isinstance(model, ResNet3D)
    blocks = [m for m in model.modules() if type(m).__name__ == "BasicBlock3D"]
    assert len(blocks) == 8  # ResNet-18: 4 stages x 2 blocks (+ stem + fc = 18 weight layers)
    raw = torch.rand(2, 1, 8, 32, 32) * 2 - 1
    logits = model(raw)
    assert logits.shape == (2, 4)  # three transmitters + neither
    logits.sum().backward()
    assert model.stem[0].weight.grad.abs().sum() > 0
    assert model(torch.rand(1, 1, 6, 40, 24)).shape == (1, 4)  # any input size


def test_build_model_vgg_follows_the_config():
    model = build_model(_config(fmap_inc=(2, 2, 1), n_convolutions=(1, 2, 3)))
    assert isinstance(model, Vgg3D)
    convs = [m for m in model.features if isinstance(m, nn.Conv3d)]
    assert [c.out_channels for c in convs] == [4, 8, 8, 16, 16, 16]
    assert model.classifier[0].in_features == 16 * 4 * 4 * 4
    assert model(torch.zeros(2, 1, 8, 32, 32)).shape == (2, 3)


def test_vgg_classifier_units_shrink_the_classifier_and_default_to_funlib():
    small = Vgg3D((4, 16, 16), fmaps=2, downsample_factors=[(1, 2, 2), (2, 2, 2)],
                  fmap_inc=(2, 2), n_convolutions=(1, 1), classifier_units=32)  # fmt: skip
    assert [m.out_features for m in small.classifier if isinstance(m, nn.Linear)] == [32, 32, 6]
    assert small(torch.zeros(3, 1, 4, 16, 16)).shape == (3, 6)
    default = Vgg3D((4, 16, 16), fmaps=2, downsample_factors=[(1, 2, 2), (2, 2, 2)],
                    fmap_inc=(2, 2), n_convolutions=(1, 1))  # fmt: skip
    assert default.classifier[0].out_features == 4096
    built = build_model(_config(classifier_units=64))
    assert built.classifier[3].in_features == built.classifier[3].out_features == 64
    with pytest.raises(ValueError, match="classifier_units"):
        Vgg3D((4, 16, 16), downsample_factors=[(1, 2, 2)], fmap_inc=(2,),
              n_convolutions=(1,), classifier_units=0)  # fmt: skip


# ---- what a checkpoint says when it does not fit -------------------------------------------------


def _predict_config(**changes):
    from synister.config import PredictConfig

    values = dict(
        train_checkpoint="e/02_train/setup_t0/model_checkpoint_10",
        experiment="e",
        train_number=0,
        predict_number=0,
        split_part="validation",
        synapse_types=["gaba", "acetylcholine", "glutamate"],
        input_shape=(8, 32, 32),
        fmaps=4,
        db_name_data="d",
        split_name="s",
        voxel_size=(40, 4, 4),
        raw_container="raw.zarr",
        raw_dataset="raw",
        downsample_factors=[(1, 2, 2), (1, 2, 2), (2, 2, 2)],
    )
    return PredictConfig(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"fmaps": 6}, "fmaps: checkpoint has 4, config says 6"),
        (
            {"downsample_factors": [(1, 2, 2), (2, 2, 2)]},
            "downsample_factors: checkpoint has 3 levels, config says 2",
        ),
        (
            {"n_convolutions": (2, 1, 2)},
            "n_convolutions: checkpoint has 2, 2, 2, config says 2, 1, 2",
        ),
        ({"fmap_inc": (2, 3, 2)}, "fmap_inc (all but the last level): checkpoint has 2, 2, "),
        ({"neither_class": True}, "classes: checkpoint has 3 outputs, config says 4 (gaba, "),
        ({"network": "ResNet18"}, "network: checkpoint has VGG, config says ResNet18"),
        ({"input_shape": (8, 64, 64)}, "input_shape: checkpoint has 8, 32, 32, config says 8, 64"),
    ],
)
def test_a_checkpoint_that_does_not_fit_says_which_setting_differs(tmp_path, changes, expected):
    path = save_checkpoint(tmp_path / "model_checkpoint_10", build_model(_config()), None, 10)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path, build_model(_config(**changes)))
    message = str(error.value)
    assert expected in message and "\n" not in message and "size mismatch" not in message


def test_mismatch_without_a_network_record_still_names_the_setting(tmp_path):
    # the original's checkpoints hold no record: fmaps and the input shape come from the shapes
    model = build_model(_config())
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "model_checkpoint_5")
    with pytest.raises(CheckpointError, match="fmaps: checkpoint has 4, config says 5$"):
        load_checkpoint(tmp_path / "model_checkpoint_5", build_model(_config(fmaps=5)))
    with pytest.raises(CheckpointError, match="last feature map of 64 voxels, the config's"):
        load_checkpoint(
            tmp_path / "model_checkpoint_5", build_model(_config(input_shape=(8, 64, 64)))
        )
    resnet = build_model(_config(network="ResNet18"))
    torch.save(resnet.state_dict(), tmp_path / "bare")  # a bare state_dict
    with pytest.raises(CheckpointError, match="fmaps: checkpoint has 4, config says 8"):
        load_checkpoint(tmp_path / "bare", build_model(_config(network="ResNet18", fmaps=8)))


def test_files_that_are_not_checkpoints(tmp_path):
    (tmp_path / "random").write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty").write_bytes(b"")
    torch.save({"model_state_dict": {"w": torch.zeros(1)}, "x": _Unsafe()}, tmp_path / "objects")
    model = build_model(_config())
    for name, expected in (
        ("random", "random: not a checkpoint (not a file torch.save wrote)"),
        ("empty", "empty: not a checkpoint"),
        ("objects", "objects: holds Python objects besides weights"),
        ("missing", "missing: checkpoint not found"),
    ):
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(tmp_path / name, model)
        message = str(error.value)
        assert expected in message, message
        assert "weights_only" not in message and "\n" not in message


class _Unsafe:
    pass


def test_checkpoints_record_their_network_and_still_load_the_original_way(tmp_path):
    cfg = _config(network="ResNet18")
    model = build_model(cfg)
    path = save_checkpoint(tmp_path / "model_checkpoint_3", model, None, 3)
    state = torch.load(path, weights_only=True)
    assert state["synister_network"] == {
        "network": cfg.network_settings(),
        "classes": ["gaba", "acetylcholine", "glutamate"],
        "input_shape_vox": [8, 32, 32],
        "voxel_size_nm": [40.0, 4.0, 4.0],
    }
    plain = ResNet3D(output_classes=3, start_channels=4)  # as the original code loads it
    plain.load_state_dict(state["model_state_dict"])


def test_prediction_refuses_another_input_shape_unless_allowed(tmp_path):
    # the ResNet pools globally: weights load at any input shape, so only the record can tell
    trained = build_model(_config(network="ResNet18"))
    path = save_checkpoint(tmp_path / "model_checkpoint_10", trained, None, 10)
    other = _predict_config(network="ResNet18", input_shape=(8, 48, 48))
    with pytest.raises(
        CheckpointError, match=r"trained on 8, 32, 32 voxels, the config says 8, 48"
    ):
        load_checkpoint(path, build_model(other))
    allowed = other.model_copy(update={"allow_other_input_shape": True})
    assert load_checkpoint(path, build_model(allowed)) == 10
    assert load_checkpoint(path, build_model(_predict_config(network="ResNet18"))) == 10
    # training may go on at another shape (a deliberate choice, recorded in its checkpoints)
    assert load_checkpoint(path, build_model(_config(network="ResNet18", input_shape=(8, 48, 48))))
    # an older checkpoint without a record: the train_config.ini beside it says the shape
    setup = tmp_path / "setup_t0"
    setup.mkdir()
    torch.save({"model_state_dict": trained.state_dict()}, setup / "model_checkpoint_10")
    _config(network="ResNet18").write(setup / "train_config.ini")
    with pytest.raises(CheckpointError, match="trained on 8, 32, 32 voxels"):
        load_checkpoint(setup / "model_checkpoint_10", build_model(other))
