"""``synister explain``: attributions of a table of synapse positions, one zarr and one PNG each.

Output folder::

    explanations.csv        one row per position: id, x/y/z as given and in nm, status, the
                            predicted class and its probability, the classes explained, files
    synapse_<id>.zarr       zarr v3 group: ``raw`` (uint8 patch) and one float32 array per
                            explained score (``attribution_<class>``, ``attribution_<a>_vs_<b>``),
                            with ``resolution`` and ``offset`` (z, y, x nm) so they overlay the
                            source volume, and the method, model and score in the attributes
    synapse_<id>.png        the patch's sections with each attribution drawn over them

A position wholly outside the volume gets status ``outside_volume`` and no files; one whose
patch reaches outside is explained on the zero-padded patch (status ``partly_outside``). A run
that is stopped and started again with the same folder, model and settings keeps the synapses
already written.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..files import replace_folder
from ..identity import RunIdentity
from ..models import LoadedModel, ModelError, load_model
from ..nt import canonical
from ..predict.engine import Predictor
from ..tables import TableError, read_positions
from ..volumes import Volume
from ..volumes.sanity import (
    PositionMismatch,
    PositionWarning,
    check_positions,
    locate,
    require_fit,
)
from .attribution import METHODS, attribute
from .montage import draw_montage

INDEX_FILE = "explanations.csv"


class ExplainInputError(ValueError):
    """A bad model, table, class name or option for ``explain``; names what and where."""


def _load(path: str | Path, device: str | None) -> tuple[LoadedModel, Predictor]:
    """The model at ``path`` (any form :func:`~synister.models.load_model` takes: a bundle, a
    checkpoint in its training setup, ...) and the engine's predictor of it."""
    try:
        loaded = load_model(path)
        return loaded, Predictor.from_model(loaded, device=device, batch_size=1)
    except ModelError as error:
        raise ExplainInputError(str(error)) from None


def _class_index(name: str | None, classes: list[str]) -> int | None:
    if name is None:
        return None
    try:
        key = canonical(name)
    except ValueError as error:
        raise ExplainInputError(f"--second-class: {error}") from None
    if key not in classes:
        raise ExplainInputError(
            f"--second-class: {name!r} is not a class of the model ({', '.join(classes)})"
        )
    return classes.index(key)


def _done(folder: Path, settings: RunIdentity) -> bool:
    """Whether ``folder`` holds a finished explanation made with ``settings``."""
    try:
        attrs = json.loads((folder / "zarr.json").read_text())["attributes"]
    except (OSError, KeyError, ValueError):
        return False
    stored = attrs.get("settings")
    return (
        isinstance(stored, dict)
        and not settings.diff(stored)
        and folder.with_suffix(".png").is_file()
    )


def _write_zarr(folder: Path, raw: np.ndarray, arrays: dict[str, np.ndarray], attrs: dict):
    """Write the group into a temporary folder, then rename it: never half a group."""
    import zarr

    def fill(tmp: Path) -> None:
        group = zarr.open_group(tmp, mode="w")
        for name, values in {"raw": raw, **arrays}.items():
            array = group.create_array(name, data=values, chunks=values.shape)
            array.attrs.update({"resolution": attrs["resolution"], "offset": attrs["offset"]})
        group.attrs.update(attrs)

    replace_folder(folder, fill)


def explain_positions(
    model_path: str | Path,
    volume_url: str,
    positions_path: str | Path,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    method: str = "integrated_gradients",
    second_class: str | None = None,
    device: str | None = None,
    progress: bool = True,
    limit: int | None = None,
    table_options: dict | None = None,
    strict: bool = False,
    warn: Callable[[str], None] | None = None,
    **attribute_options,
) -> pd.DataFrame:
    """Explain every position of a table with the model at ``model_path`` (see the module doc);
    returns the index table it writes. Everything given is checked before anything is written.

    ``second_class`` adds, per synapse, the attribution of the logit difference between the
    predicted class and it (if the prediction is that class: between it and the runner-up).
    ``limit`` keeps the first rows of the table only. ``table_options`` (``units``,
    ``voxel_size``, ``id_column``, ``position_columns``) say how to read the table (see
    :func:`synister.tables.read_positions`). ``attribute_options`` go to
    :func:`synister.explain.attribution.attribute`. Where most positions fall outside the
    volume (a units or axis mix-up) ``warn(text)`` is told before anything is explained (default:
    a :class:`~synister.volumes.sanity.PositionWarning`), or ``strict`` refuses.
    """
    if method not in METHODS:
        raise ExplainInputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    loaded, predictor = _load(model_path, device)
    classes, network = predictor.classes, predictor.model
    second = _class_index(second_class, classes)
    try:
        table = read_positions(positions_path, **(table_options or {}))
    except TableError as error:
        raise ExplainInputError(str(error)) from None
    positions = table.rows
    if limit is not None:
        positions = positions.iloc[: max(0, int(limit))].reset_index(drop=True)
    try:
        volume = Volume(volume_url, dataset, scale_nm=loaded.voxel_size_nm)
        volume.require_uint8()
    except (OSError, ValueError) as error:
        raise ExplainInputError(str(error)) from None
    if not np.allclose(volume.voxel_size_nm, loaded.voxel_size_nm):
        raise ExplainInputError(
            f"{volume.location}: voxel size {volume.voxel_size_nm.tolist()} nm differs from the "
            f"model's {list(loaded.voxel_size_nm)} nm"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = predictor.device
    shape = predictor.input_shape_vox
    centers = positions[["z_nm", "y_nm", "x_nm"]].to_numpy()
    positions["status"] = locate(volume, centers, shape)
    check = check_positions(
        volume, centers, shape, units=table.units, voxel_size_xyz_nm=table.voxel_size_xyz_nm,
        status=positions["status"].to_numpy(),
    )  # fmt: skip
    try:
        warning = require_fit(check, strict, table.source)
    except PositionMismatch as error:
        raise ExplainInputError(str(error)) from None
    if warning:  # before the slow part
        (warn or (lambda text: warnings.warn(text, PositionWarning, stacklevel=3)))(warning)
    what = {"model": loaded.identity, "method": method, "second_class": second_class}
    settings = RunIdentity({**what, "options": attribute_options})
    rows = []
    started = time.perf_counter()
    todo = positions[positions["status"] != "outside_volume"]
    bar = tqdm(total=len(todo), desc="explaining", unit=" synapses", disable=not progress)
    for row in positions.itertuples(index=False):
        record = {"id": row.id, "x": row.x, "y": row.y, "z": row.z, "x_nm": row.x_nm,
                  "y_nm": row.y_nm, "z_nm": row.z_nm, "status": row.status}  # fmt: skip
        if row.status == "outside_volume":
            rows.append(record)
            continue
        name = "synapse_" + re.sub(r"[^A-Za-z0-9._-]+", "_", str(row.id))
        folder = out / f"{name}.zarr"
        center = np.array([row.z_nm, row.y_nm, row.x_nm])
        patch = volume.read_patches(center[None], shape)[0]
        probabilities = predictor.probabilities(patch[None, None])[0]
        predicted = int(probabilities.argmax())
        order = np.argsort(-probabilities, kind="stable")
        scores = {f"attribution_{classes[predicted]}": (predicted, None)}
        if second is not None:
            first, other = (predicted, second) if second != predicted else (second, int(order[1]))
            label = f"attribution_{classes[first]}_vs_{classes[other]}"
            scores[label] = (first, other)
        record.update(
            predicted=classes[predicted],
            probability=float(probabilities[predicted]),
            explained=";".join(k.removeprefix("attribution_") for k in scores),
            zarr=folder.name,
            png=f"{name}.png",
        )
        rows.append(record)
        if not _done(folder, settings):
            arrays, values = {}, {}
            for label, (target, other) in scores.items():
                arrays[label], values[label] = attribute(
                    network, patch, target, other=other, method=method, device=device,
                    **attribute_options,
                )  # fmt: skip
            start_vox = volume.patch_starts_vox(center[None], shape)[0]
            attrs = {
                "resolution": volume.voxel_size_nm.tolist(),
                "offset": (volume.offset_nm + start_vox * volume.voxel_size_nm).tolist(),
                "center_nm_zyx": center.tolist(),
                "classes": classes,
                "probabilities": probabilities.tolist(),
                "temperature": loaded.temperature,
                "scores": {k: float(v) for k, v in values.items()},
                "settings": settings.to_json(),
            }
            draw_montage(
                out / f"{name}.png", patch,
                {k.removeprefix("attribution_").replace("_vs_", " vs "): v
                 for k, v in arrays.items()},
                title=f"synapse {row.id}: {classes[predicted]} "
                f"(p = {probabilities[predicted]:.2f}), {method.replace('_', ' ')}",
                voxel_size_nm=volume.voxel_size_nm.tolist(),
            )  # fmt: skip
            _write_zarr(folder, patch, arrays, attrs)
        bar.update(1)
    bar.close()
    index = pd.DataFrame(rows)
    index.to_csv(out / INDEX_FILE, index=False)
    index.attrs["seconds"] = time.perf_counter() - started
    return index
