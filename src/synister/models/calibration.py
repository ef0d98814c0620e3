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
from pathlib import Path

from synister.files import write_json
from synister.layout import CALIBRATION_SUFFIX, calibration_path

from .errors import ModelError

__all__ = [
    "CALIBRATION_SUFFIX",
    "CalibrationError",
    "calibration_path",
    "check_temperature",
    "checkpoint_temperature",
    "read_calibration",
    "write_calibration",
]


class CalibrationError(ModelError):
    """A calibration file is unreadable or holds a bad value; names the file and the key."""


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
    return write_json(path, record)
