"""The schema of a model bundle's ``model.json`` and its checks (see :mod:`.bundle`).

Errors name the file and the field, e.g. ``.../model.json input_shape_vox: expected 3 positive
integers, got [16, 160]``. The ``network`` settings are checked by the training config's own
rules (:class:`synister.config._ModelFields`), so a setting added there is checked here too.
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

import synister
from synister import nt
from synister.config import ConfigError, _ModelFields, build_config

from .errors import ModelError

MANIFEST_FILE = "model.json"
FORMAT = "synister-model-bundle"
FORMAT_VERSION = 1

#: What ``synister.volumes.normalize`` does, declared: uint8 0..255 maps linearly onto -1..1.
NORMALIZATION: dict[str, Any] = {
    "input_dtype": "uint8",
    "input_range": [0, 255],
    "output_range": [-1.0, 1.0],
    "formula": "raw / 255 * 2 - 1",
}


class BundleError(ModelError):
    """A bundle is missing, malformed or inconsistent; the message names the file and field."""


# ---- model.json ----------------------------------------------------------------------------------


def positive_numbers(values: Any, count: int, kind: type) -> list:
    """``values`` as ``count`` positive numbers of ``kind``, else ValueError."""
    what = "integers" if kind is int else "numbers"
    if not isinstance(values, list | tuple) or len(values) != count:
        raise ValueError(f"expected {count} positive {what}")
    for value in values:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if kind is int:
            ok = ok and float(value).is_integer()
        if not ok or not math.isfinite(value) or value <= 0:
            raise ValueError(f"expected {count} positive {what}")
    return [kind(v) for v in values]


class Normalization(BaseModel):
    """Intensity normalisation: ``input_dtype`` values in ``input_range`` map linearly onto
    ``output_range``. synister reads uint8 volumes and applies 0..255 -> -1..1."""

    model_config = ConfigDict(extra="forbid")

    input_dtype: Literal["uint8"]
    input_range: tuple[float, float]
    output_range: tuple[float, float]
    formula: str | None = None

    @field_validator("output_range")
    @classmethod
    def _the_one_synister_applies(cls, output_range, info):
        if tuple(info.data.get("input_range") or ()) != (0, 255) or tuple(output_range) != (-1, 1):
            raise ValueError(
                "synister applies uint8 input_range [0, 255] -> output_range [-1, 1] only "
                "(synister.volumes.normalize)"
            )
        return output_range


class BundleManifest(BaseModel):
    """The schema of ``model.json``."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["synister-model-bundle"]
    format_version: int
    synister_version: str
    checkpoint: str
    network: dict[str, Any]
    classes: list[str]
    input_shape_vox: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    normalization: Normalization
    temperature: float | None = None
    provenance: dict[str, Any] = {}

    @field_validator("format_version", mode="before")
    @classmethod
    def _known_version(cls, value):
        if value != FORMAT_VERSION:
            raise ValueError(
                f"this synister ({synister.__version__}) reads bundles of format_version "
                f"{FORMAT_VERSION}; update synister for others"
            )
        return value

    @field_validator("checkpoint")
    @classmethod
    def _plain_file_name(cls, name: str):
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError("expected the name of a file in the bundle folder")
        return name

    @field_validator("classes", mode="before")
    @classmethod
    def _canonical_classes(cls, names):
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ValueError("expected a non-empty list of class names")
        canonical = [nt.canonical(name) for name in names]  # UnknownTransmitter is a ValueError
        if len(set(canonical)) != len(canonical):
            raise ValueError("a class is listed twice")
        if "neither" in canonical[:-1]:
            raise ValueError("'neither' can only be the last class")
        return canonical

    @field_validator("input_shape_vox", mode="before")
    @classmethod
    def _shape(cls, values):
        return positive_numbers(values, 3, int)

    @field_validator("voxel_size_nm", mode="before")
    @classmethod
    def _voxel_size(cls, values):
        return positive_numbers(values, 3, float)

    @field_validator("temperature", mode="before")
    @classmethod
    def _temperature(cls, value):
        if value is None:
            return None
        return positive_numbers([value], 1, float)[0]


def manifest_error(error: ValidationError, where) -> BundleError:
    item = error.errors()[0]
    key = ".".join(str(part) for part in item.get("loc", ())) or "(top level)"
    message = str(item.get("msg", "")).removeprefix("Value error, ")
    if item.get("type") == "missing":
        return BundleError(f"{where} {key}: missing (required field)")
    if item.get("type") == "extra_forbidden":
        return BundleError(f"{where} {key}: unknown field")
    got = json.dumps(item.get("input"), default=str)
    return BundleError(f"{where} {key}: {message}, got {got}")


class BundleNetwork(_ModelFields):
    """model.json's network as a config: validated by the config's rules, built by build_model.

    The data and database keys a network does not need get placeholders.
    """

    SECTION: ClassVar[str] = "model.json"
    voxel_size: tuple[float, float, float]
    split_name: str = "-"
    raw_container: str = "-"
    raw_dataset: str = "-"


def network_config(manifest: BundleManifest, where: str) -> BundleNetwork:
    """model.json's network, classes, input shape and voxel size as a config."""
    record = {
        "network": manifest.network,
        "classes": list(manifest.classes),
        "input_shape_vox": manifest.input_shape_vox,
        "voxel_size_nm": manifest.voxel_size_nm,
    }
    return record_config(record, where)


def record_config(record: dict[str, Any], where: str) -> BundleNetwork:
    """A network record (:func:`~.checkpoint.network_record`: network settings, classes,
    input shape, voxel size) as a config that builds the network; errors name ``where``."""
    classes = list(record["classes"])
    neither = bool(classes) and classes[-1] == "neither"
    reserved = {"synapse_types", "neither_class", "input_shape", "voxel_size"}
    clash = sorted(reserved & set(record["network"]))
    if clash:
        raise BundleError(f"{where} network.{clash[0]}: belongs outside 'network' in model.json")
    values = {
        **record["network"],
        "synapse_types": classes[:-1] if neither else classes,
        "neither_class": neither,
        "input_shape": tuple(record["input_shape_vox"]),
        "voxel_size": tuple(record["voxel_size_nm"]),
    }
    try:
        return build_config(BundleNetwork, values, f"{where} network")
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
