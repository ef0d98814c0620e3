import json
import math

import numpy as np
import pytest
import torch

from synister.augment import (
    AugmentPipeline,
    ElasticAugment,
    IntensityAugment,
    SimpleAugment,
    central_offset_vox,
    crop_center,
)
from synister.volumes import normalize

OUT = (4, 20, 20)


def still(**kwargs) -> ElasticAugment:
    """An elastic step with no randomness unless asked for."""
    defaults = dict(
        jitter_sigma_vox=(0, 0, 0), rotation_interval_rad=(0, 0), prob_slip=0, prob_shift=0
    )
    return ElasticAugment(**{**defaults, **kwargs})


def random_context(elastic: ElasticAugment, out=OUT, seed=0) -> torch.Tensor:
    shape = elastic.context_shape_vox(out)
    return torch.from_numpy(np.random.default_rng(seed).random(shape, dtype=np.float32))


# ---- SimpleAugment ---------------------------------------------------------------------------
def test_mirror_reverses_a_ramp_along_each_axis():
    ramp = torch.arange(4 * 5 * 6, dtype=torch.float32).reshape(4, 5, 6)
    simple = SimpleAugment()
    for axis in range(3):
        mirror = [a == axis for a in range(3)]
        out = simple.apply(ramp, {"mirror": mirror, "transpose": [0, 1, 2]})
        assert torch.equal(out, torch.flip(ramp, [axis]))
        assert not torch.equal(out, ramp)


def test_transpose_swaps_y_and_x_after_mirroring():
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3)  # leading channel
    out = SimpleAugment().apply(x, {"mirror": [False, True, False], "transpose": [0, 2, 1]})
    expected = np.swapaxes(x.numpy()[:, :, ::-1, :], 2, 3)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_simple_params_are_fair_and_never_transpose_unequal_axes():
    rng = np.random.default_rng(1)
    simple = SimpleAugment()
    square = [simple.make_params(rng, (16, 32, 32)) for _ in range(2000)]
    assert 0.45 < np.mean([p["mirror"] for p in square]) < 0.55
    assert 0.45 < np.mean([p["transpose"] == [0, 2, 1] for p in square]) < 0.55
    oblong = [simple.make_params(rng, (16, 32, 48)) for _ in range(200)]
    assert all(p["transpose"] == [0, 1, 2] for p in oblong)


# ---- ElasticAugment ------------------------------------------------------------------------------
def test_no_jitter_no_rotation_no_misalignment_is_the_identity():
    elastic = still()
    x = random_context(elastic)
    out = elastic.apply(x, elastic.make_params(np.random.default_rng(0), OUT))
    assert out.shape == OUT
    np.testing.assert_allclose(out.numpy(), crop_center(x, OUT).numpy(), atol=1e-5)


def test_zero_jitter_through_the_trilinear_path_is_the_identity():
    elastic = still(jitter_sigma_vox=(1.0, 0, 0))  # z jitter switches to 3D sampling
    x = random_context(elastic)
    params = elastic.make_params(np.random.default_rng(0), OUT)
    assert elastic.context_shape_vox(OUT)[0] > OUT[0]
    params["jitter_vox"] = np.zeros_like(np.asarray(params["jitter_vox"])).tolist()
    np.testing.assert_allclose(
        elastic.apply(x, params).numpy(), crop_center(x, OUT).numpy(), atol=1e-5
    )


def test_rotation_by_a_right_angle_matches_rot90():
    elastic = still(rotation_interval_rad=(math.pi / 2, math.pi / 2))
    x = random_context(elastic)
    out = elastic.apply(x, elastic.make_params(np.random.default_rng(0), OUT))
    expected = np.rot90(crop_center(x, OUT).numpy(), k=-1, axes=(1, 2))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5)
    assert not np.allclose(out.numpy(), crop_center(x, OUT).numpy(), atol=0.1)


def test_a_slip_moves_exactly_one_section():
    elastic = still(max_misalign_vox=5)
    x = random_context(elastic)
    params = elastic.make_params(np.random.default_rng(0), OUT)
    params["misalign_vox"] = [[0, 0], [0, 0], [3, -2], [0, 0]]
    out = elastic.apply(x, params).numpy()
    z0, y0, x0 = central_offset_vox(x.shape, OUT)
    crop = crop_center(x, OUT).numpy()
    for z in (0, 1, 3):
        np.testing.assert_allclose(out[z], crop[z], atol=1e-5)
    moved = x.numpy()[z0 + 2, y0 + 3 : y0 + 3 + OUT[1], x0 - 2 : x0 - 2 + OUT[2]]
    np.testing.assert_allclose(out[2], moved, atol=1e-5)


class ScriptedUniforms:
    """A Generator whose ``random`` returns scripted values (the slip/shift decisions)."""

    def __init__(self, draws):
        self.draws = np.asarray(draws)
        self.rng = np.random.default_rng(0)

    def random(self, size=None):
        return self.draws.copy()

    def integers(self, low, high, size):
        offsets = np.zeros(size, dtype=np.int64)
        offsets[:, 0] = np.arange(1, size[0] + 1)  # section z shifts y by z + 1
        offsets[:, 1] = -1
        return offsets

    def __getattr__(self, name):
        return getattr(self.rng, name)


def test_slips_move_one_section_and_shifts_all_following_ones():
    elastic = still(prob_slip=0.1, prob_shift=0.1, max_misalign_vox=10)
    # section 1 slips (draw < 0.1), section 3 shifts (0.1 <= draw < 0.2), the rest stay
    params = elastic.make_params(ScriptedUniforms([0.5, 0.05, 0.5, 0.15, 0.9, 0.9]), (6, 20, 20))
    assert params["misalign_vox"] == [[0, 0], [2, -1], [0, 0], [4, -1], [4, -1], [4, -1]]


def test_summed_misalignment_is_clipped_to_the_maximum():
    elastic = still(prob_slip=0, prob_shift=1, max_misalign_vox=10)
    params = elastic.make_params(np.random.default_rng(3), (16, 20, 20))
    misalign = np.asarray(params["misalign_vox"])
    assert np.abs(misalign).max() <= 10


def test_context_covers_every_draw_at_the_fafb_patch_size():
    elastic = ElasticAugment(prob_slip=0.3, prob_shift=0.3)  # more misalignment than default
    out = (16, 160, 160)
    context = elastic.context_shape_vox(out)
    assert context[0] == 16 and context[1] == context[2]
    # a 160 square rotated by 45 degrees alone needs 160 * sqrt(2) voxels
    assert context[1] >= 160 * math.sqrt(2) + 2 * 10
    rng = np.random.default_rng(0)
    for _ in range(50):
        coords = elastic.source_coordinates_vox(context, elastic.make_params(rng, out))
        assert coords.min() >= 0
        assert np.all(coords.max(axis=(0, 1, 2)) <= np.asarray(context) - 1)


def test_uint8_and_float_contexts_resample_alike():
    elastic = ElasticAugment(prob_slip=0.3)
    shape = elastic.context_shape_vox(OUT)
    raw = torch.from_numpy(np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8))
    params = elastic.make_params(np.random.default_rng(2), OUT)
    out = elastic.apply(raw, params)
    assert out.dtype == torch.float32
    assert torch.equal(out, elastic.apply(raw.to(torch.float32), params))


def test_too_small_a_context_is_refused():
    elastic = ElasticAugment()
    params = elastic.make_params(np.random.default_rng(0), OUT)
    with pytest.raises(ValueError, match="context"):
        elastic.apply(torch.zeros(OUT), params)


def test_replayed_params_reproduce_the_output_bit_for_bit():
    elastic = ElasticAugment(prob_slip=0.3, prob_shift=0.3)
    x = random_context(elastic)
    params = elastic.make_params(np.random.default_rng(7), OUT)
    first = elastic.apply(x, params)
    again = elastic.apply(x.clone(), json.loads(json.dumps(params)))
    assert torch.equal(first, again)
    other = elastic.apply(x, elastic.make_params(np.random.default_rng(8), OUT))
    assert not torch.equal(first, other)


# ---- IntensityAugment ----------------------------------------------------------------------------
def test_intensity_moves_each_section_mean_within_the_shift_bounds():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(0.5 + 0.05 * rng.standard_normal((16, 32, 32)).astype(np.float32))
    intensity = IntensityAugment()
    params = intensity.make_params(rng, x.shape)
    out = intensity.apply(x, params)
    shift = out.mean(dim=(1, 2)) - x.mean(dim=(1, 2))
    assert torch.all(shift.abs() <= 0.1 + 1e-5)
    np.testing.assert_allclose(shift.numpy(), params["shift"], atol=1e-5)
    ratio = (out.std(dim=(1, 2)) / x.std(dim=(1, 2))).numpy()
    np.testing.assert_allclose(ratio, params["scale"], rtol=1e-4)
    assert np.all((ratio >= 0.9 - 1e-4) & (ratio <= 1.1 + 1e-4))
    assert len(set(params["shift"])) == 16  # section-wise


def test_intensity_clips_to_the_unit_interval():
    x = torch.linspace(0, 1, 10 * 10).reshape(1, 10, 10).repeat(2, 1, 1)  # each spans [0, 1]
    params = {"scale": [1.1, 1.1], "shift": [0.1, -0.1]}
    out = IntensityAugment().apply(x.clone(), params)
    assert out.min() == 0 and out.max() == 1
    assert (out[0] == 1).sum() > 0 and (out[1] == 0).sum() > 0


# ---- AugmentPipeline ---------------------------------------------------------------------------
def test_pipeline_without_steps_is_the_normalised_centre():
    pipeline = AugmentPipeline(OUT, elastic=False, simple=False, intensity=False)
    raw = np.random.default_rng(0).integers(0, 256, size=OUT, dtype=np.uint8)
    out = pipeline.apply(raw, pipeline.make_params(np.random.default_rng(0)))
    assert out.dtype == torch.float32
    assert np.array_equal(out.numpy(), normalize(raw))


def test_full_pipeline_gives_the_output_shape_in_range_and_replays():
    pipeline = AugmentPipeline((16, 160, 160))
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=pipeline.context_shape_vox, dtype=np.uint8)
    params = json.loads(json.dumps(pipeline.make_params(rng)))
    out = pipeline.apply(raw, params)
    assert out.shape == (16, 160, 160) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, pipeline.apply(raw.copy(), params))


def test_fused_pipeline_equals_the_steps_applied_one_after_the_other():
    pipeline = AugmentPipeline(OUT)
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 256, size=pipeline.context_shape_vox, dtype=np.uint8)
    seen = set()
    for _ in range(12):
        params = pipeline.make_params(rng)
        seen.add((tuple(params["simple"]["mirror"]), tuple(params["simple"]["transpose"])))
        x = torch.from_numpy(raw).float() / 255
        x = pipeline.elastic.apply(x, params["elastic"])
        x = pipeline.simple.apply(x, params["simple"])
        x = pipeline.intensity.apply(x, params["intensity"]) * 2 - 1
        np.testing.assert_allclose(pipeline.apply(raw, params).numpy(), x.numpy(), atol=2e-5)
    assert len(seen) > 4  # several mirror/transpose combinations were exercised


def test_pipeline_refuses_a_patch_of_the_wrong_shape_or_type():
    pipeline = AugmentPipeline(OUT)
    with pytest.raises(ValueError, match="context shape"):
        pipeline.apply(np.zeros(OUT, np.uint8), pipeline.make_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="uint8"):
        pipeline.apply(np.zeros(pipeline.context_shape_vox, np.float32), {})
