"""Training snapshots: what the network saw and said at one iteration, for a person to inspect.

Each snapshot is a zarr group ``snapshots/batch_<iteration>.zarr`` (open it with
``zarr.open_group``) and a PNG ``batch_<iteration>.png`` of the central z-sections beside it, so
a look needs no tools.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import zarr
from PIL import Image, ImageDraw

_CAPTION_PX = 26
_MIN_TILE_PX = 128
_GAP_PX = 4


def _json_safe(value):
    """Parameters as plain JSON (numpy scalars and arrays turned into Python numbers/lists)."""
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))


def raw_to_uint8(raw_normalized: np.ndarray) -> np.ndarray:
    """Map network input in [-1, 1] back to 0..255 intensities."""
    return np.clip(np.rint((np.asarray(raw_normalized) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def write_snapshot(
    snapshot_dir: str | Path,
    iteration: int,
    *,
    raw: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    synapse_ids: np.ndarray,
    params: Sequence[dict],
    classes: Sequence[str],
    loss: float,
) -> Path:
    """Write the batch of one iteration; returns the zarr group's path.

    ``raw`` is the network input (B, 1, Z, Y, X) in [-1, 1] (stored as uint8 0..255, the
    volume's own scale); ``probabilities`` (B, n_classes) the softmax output; ``params`` the
    augmentation parameters of each sample (stored as the group attribute ``augmentation``).
    """
    raw = np.asarray(raw)
    if raw.ndim != 5 or raw.shape[1] != 1:
        raise ValueError(f"snapshot raw must be (B, 1, Z, Y, X), got shape {raw.shape}")
    batch = raw.shape[0]
    labels = np.asarray(labels, dtype=np.int64).reshape(batch)
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(batch, len(classes))
    snapshot_dir = Path(snapshot_dir)
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    path = snapshot_dir / f"batch_{iteration}.zarr"
    group = zarr.open_group(str(path), mode="w")
    raw_uint8 = raw_to_uint8(raw[:, 0])
    group.create_array("raw", data=raw_uint8, chunks=(1, *raw_uint8.shape[1:]))
    group.create_array("labels", data=labels)
    group.create_array("predictions", data=probabilities)
    group.create_array("synapse_ids", data=np.asarray(synapse_ids, dtype=np.int64).reshape(batch))
    group.attrs.update(
        {
            "iteration": int(iteration),
            "loss": float(loss),
            "classes": list(classes),
            "raw_axes": "b,z,y,x",
            "raw_scale": "uint8 0..255; the network saw raw / 255 * 2 - 1",
            "augmentation": _json_safe(list(params)),
        }
    )
    _write_preview_png(path.with_suffix(".png"), raw_uint8, labels, probabilities, classes)
    return path


def _write_preview_png(
    path: Path,
    raw_uint8: np.ndarray,
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: Sequence[str],
) -> None:
    """Central z-section of every sample side by side, enlarged to >= 128 px, captioned with
    the true class and the predicted class with its probability."""
    batch, depth, height, width = raw_uint8.shape
    scale = max(1, -(-_MIN_TILE_PX // width))
    tile_w, tile_h = width * scale, height * scale
    canvas = Image.new("L", (batch * (tile_w + _GAP_PX) - _GAP_PX, tile_h + _CAPTION_PX), 0)
    draw = ImageDraw.Draw(canvas)
    for i in range(batch):
        left = i * (tile_w + _GAP_PX)
        section = Image.fromarray(raw_uint8[i, depth // 2]).resize((tile_w, tile_h), Image.NEAREST)
        canvas.paste(section, (left, _CAPTION_PX))
        predicted = int(np.argmax(probabilities[i]))
        true = classes[labels[i]] if 0 <= labels[i] < len(classes) else "?"
        draw.text((left + 2, 1), f"true {true}", fill=255)
        draw.text(
            (left + 2, 13), f"pred {classes[predicted]} {probabilities[i, predicted]:.2f}", fill=255
        )
    canvas.save(path)
