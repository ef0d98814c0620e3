"""The calibration of a checkpoint, stored beside it as ``model_checkpoint_<it>.calibration.json``.

``synister calibrate`` writes it; prediction reads the temperature from it (logits are divided by
it before the softmax) and evaluation reads the neuron-level "unclear" thresholds chosen with it.
A checkpoint without the file predicts raw softmax probabilities, as the original did. The file
sits next to the checkpoint it belongs to, so copying the pair keeps them together; its name does
not match ``model_checkpoint_<iteration>``, so checkpoint listings ignore it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

CALIBRATION_SUFFIX = ".calibration.json"


class CalibrationError(ValueError):
    """A calibration file is unreadable or holds a bad value; names the file and the key."""


def calibration_path(checkpoint: str | Path) -> Path:
    """``<checkpoint>.calibration.json`` beside ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CALIBRATION_SUFFIX)


def check_temperature(value, where: str) -> float:
    """``value`` as a positive finite float, else a :class:`CalibrationError` naming ``where``."""
    try:
        temperature = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: temperature must be a number, got {value!r}") from None
    if not (math.isfinite(temperature) and temperature > 0):
        raise CalibrationError(f"{where}: temperature must be positive and finite, got {value!r}")
    return temperature


def read_calibration(checkpoint: str | Path) -> dict | None:
    """The calibration record of ``checkpoint``, or None when it has none."""
    path = calibration_path(checkpoint)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CalibrationError(f"{path}: not a readable calibration file ({error})") from None
    if not isinstance(record, dict) or "temperature" not in record:
        raise CalibrationError(f"{path}: expected a JSON object with a 'temperature' key")
    record["temperature"] = check_temperature(record["temperature"], f"{path} key 'temperature'")
    return record


def checkpoint_temperature(checkpoint: str | Path) -> float | None:
    """The temperature stored beside ``checkpoint``, or None (raw softmax)."""
    record = read_calibration(checkpoint)
    return None if record is None else record["temperature"]


def write_calibration(checkpoint: str | Path, record: dict) -> Path:
    """Write ``record`` (with a positive ``temperature``) beside ``checkpoint``, atomically."""
    path = calibration_path(checkpoint)
    check_temperature(record.get("temperature"), f"{path} key 'temperature'")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def stored_temperature(checkpoint: str | Path) -> float | None:
    """The temperature a prediction with ``checkpoint`` applies: for the weights file of a model
    bundle the bundle's (model.json), else the one stored beside the checkpoint, else None."""
    from .manifest import MANIFEST_FILE

    checkpoint = Path(checkpoint)
    if (checkpoint.parent / MANIFEST_FILE).is_file():
        from .bundle import load_bundle

        bundle = load_bundle(checkpoint.parent)
        if bundle.checkpoint.resolve() == checkpoint.resolve():
            return bundle.temperature
    return checkpoint_temperature(checkpoint)
