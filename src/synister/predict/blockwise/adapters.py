"""Stand-ins for interfaces that parallel work is building; the only place they are guessed.

Each function here is replaced by the real one when it lands on ``main`` (the rest of the
package calls only these names):

- model bundles (``synister.models.bundle.load_bundle``): :func:`load_bundle`,
  :func:`export_bundle` (tests and benchmarks only);
- the prediction engine taking in-memory uint8 patches (issue #12): :class:`Predictor`,
  which meanwhile drives today's engine core :func:`synister.predict.run_model`;
- patch placement (``synister.volumes.Volume``): :func:`patch_starts_vox`, which meanwhile
  combines ``Volume.center_vox`` with the patch convention of CONTRIBUTING.md;
- ``predict-positions`` conventions (issue #12): :func:`discover_columns`,
  :func:`class_columns`, :func:`patch_status`, :func:`summarize_neurons`;
- the job-submission template of ``worker_config.ini``: :func:`submit_command`.
"""

from __future__ import annotations

import configparser
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ...nt import canonical

BUNDLE_FILE = "model.json"
CHECKPOINT_FILE = "checkpoint.pt"

#: the field's short class names (FlyWire's synapse table)
SHORT_NAMES = {
    "gaba": "gaba",
    "acetylcholine": "ach",
    "glutamate": "glut",
    "octopamine": "oct",
    "serotonin": "ser",
    "dopamine": "da",
}

STATUS_OK, STATUS_PARTLY, STATUS_OUTSIDE = "ok", "partly_outside", "outside_volume"

ID_COLUMNS = ("id", "synapse_id", "syn_id")
NEURON_COLUMNS = ("pre_pt_root_id", "bodyId", "body", "skeleton_id", "skid")
POSITION_COLUMNS = (("x", "y", "z"), ("pre_x", "pre_y", "pre_z"))
POSITION_LIST_COLUMN = "pre_pt_position"


# ---------------------------------------------------------------------------------------------
# model bundles


@dataclass
class ModelBundle:
    """What a bundle declares (the planned ``synister.models.bundle.ModelBundle``)."""

    path: Path
    classes: tuple[str, ...]
    input_shape_vox: tuple[int, int, int]
    voxel_size_nm: tuple[float, float, float]
    network: dict
    normalization: str = "uint8_to_pm1"
    temperature: float = 1.0
    extra: dict = field(default_factory=dict)

    def build_model(self, device=None):
        """The network with the bundle's weights, in eval mode, on ``device``."""
        import torch

        from ...models import ResNet3D, Vgg3D, load_checkpoint

        kind = self.network.get("name")
        kwargs = {k: v for k, v in self.network.items() if k != "name"}
        if kind == "VGG":
            model = Vgg3D(
                input_size=self.input_shape_vox, output_classes=len(self.classes), **kwargs
            )
        elif kind == "ResNet18":
            model = ResNet3D(output_classes=len(self.classes), **kwargs)
        else:
            raise ValueError(
                f"{self.path / BUNDLE_FILE}: network.name {kind!r} is not VGG/ResNet18"
            )
        load_checkpoint(self.path / CHECKPOINT_FILE, model, map_location="cpu")
        return model.to(torch.device(device or "cpu")).eval()


def load_bundle(path: str | Path) -> ModelBundle:
    """Read a bundle folder; errors name the file and the field."""
    path = Path(path)
    meta_file = path / BUNDLE_FILE
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file}: no model bundle here (missing {BUNDLE_FILE})")
    if not (path / CHECKPOINT_FILE).is_file():
        raise FileNotFoundError(f"{path / CHECKPOINT_FILE}: the bundle's checkpoint is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{meta_file}: not valid JSON ({err})") from err
    for key in ("classes", "input_shape_vox", "voxel_size_nm", "network"):
        if key not in meta:
            raise ValueError(f"{meta_file}: field {key!r} is missing")
    shape = tuple(int(s) for s in meta["input_shape_vox"])
    voxel = tuple(float(v) for v in meta["voxel_size_nm"])
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{meta_file}: field 'input_shape_vox' must be 3 positive sizes (z,y,x)")
    if len(voxel) != 3 or min(voxel) <= 0:
        raise ValueError(f"{meta_file}: field 'voxel_size_nm' must be 3 positive sizes (z,y,x)")
    return ModelBundle(
        path=path,
        classes=tuple(canonical(c) for c in meta["classes"]),
        input_shape_vox=shape,
        voxel_size_nm=voxel,
        network=dict(meta["network"]),
        normalization=meta.get("normalization", "uint8_to_pm1"),
        temperature=float(meta.get("temperature", 1.0)),
    )


def export_bundle(
    path: str | Path,
    model,
    *,
    network: dict,
    classes: Sequence[str],
    input_shape_vox: Sequence[int],
    voxel_size_nm: Sequence[float],
) -> Path:
    """Write ``model``'s weights and what they mean as a bundle folder (tests, benchmarks)."""
    import torch

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model_state_dict": model.state_dict()}, path / CHECKPOINT_FILE)
    meta = {
        "classes": list(classes),
        "input_shape_vox": [int(s) for s in input_shape_vox],
        "voxel_size_nm": [float(v) for v in voxel_size_nm],
        "network": network,
        "normalization": "uint8_to_pm1",
        "temperature": 1.0,
    }
    (path / BUNDLE_FILE).write_text(json.dumps(meta, indent=2))
    return path


# ---------------------------------------------------------------------------------------------
# the engine on in-memory patches


class Predictor:
    """A loaded network that turns uint8 patches (N, Z, Y, X) into class probabilities (N, C).

    Batches go through :func:`synister.predict.run_model`, the loop ``synister predict`` uses,
    so the numbers are those of the per-synapse path.
    """

    def __init__(self, bundle: ModelBundle, device=None, batch_size: int = 32):
        import torch

        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.bundle = bundle
        self.device = torch.device(device or "cpu")
        self.batch_size = int(batch_size)
        self.model = bundle.build_model(self.device)

    def predict(self, patches: np.ndarray) -> np.ndarray:
        import torch

        from .. import run_model

        patches = np.ascontiguousarray(patches, dtype=np.uint8)
        n = len(patches)
        out = np.empty((n, len(self.bundle.classes)), dtype=np.float32)
        if n == 0:
            return out

        def batches():
            for start in range(0, n, self.batch_size):
                raw = torch.from_numpy(patches[start : start + self.batch_size]).unsqueeze(1)
                yield torch.arange(start, start + len(raw)), raw

        def store(rows: np.ndarray, probabilities: np.ndarray) -> None:
            out[rows] = probabilities

        run_model(self.model, batches(), self.device, store)
        if self.bundle.temperature != 1.0:  # softmax(logits / T) from softmax(logits)
            scaled = np.log(np.maximum(out, 1e-30)) / self.bundle.temperature
            scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
            out = (scaled / scaled.sum(axis=1, keepdims=True)).astype(np.float32)
        return out


# ---------------------------------------------------------------------------------------------
# patch placement and status


def patch_starts_vox(volume, centers_nm: np.ndarray, shape_vox: Sequence[int]) -> np.ndarray:
    """First voxel (z, y, x) of the patch of each centre: the engine's placement rule."""
    shape = np.asarray(shape_vox, dtype=np.int64)
    return volume.center_vox(np.asarray(centers_nm, dtype=np.float64)) - shape // 2


def patch_status(starts_vox: np.ndarray, shape_vox: Sequence[int], volume_shape_vox) -> np.ndarray:
    """``ok`` (patch inside), ``partly_outside`` (zero-padded) or ``outside_volume`` (the
    centre voxel lies outside; no prediction), per patch."""
    starts = np.asarray(starts_vox, dtype=np.int64).reshape(-1, 3)
    shape = np.asarray(shape_vox, dtype=np.int64)
    volume_shape = np.asarray(volume_shape_vox, dtype=np.int64)
    centers = starts + shape // 2
    inside = np.all((starts >= 0) & (starts + shape <= volume_shape), axis=1)
    center_in = np.all((centers >= 0) & (centers < volume_shape), axis=1)
    status = np.full(len(starts), STATUS_PARTLY, dtype=object)
    status[inside] = STATUS_OK
    status[~center_in] = STATUS_OUTSIDE
    return status


# ---------------------------------------------------------------------------------------------
# predict-positions conventions


@dataclass(frozen=True)
class Columns:
    """Where a table keeps ids, neurons and positions, and in which unit."""

    id: str | None  # None: the row number, written as column ``id``
    neuron: str | None
    position: tuple[str, str, str] | str  # x, y, z columns or one list column (x, y, z)
    units: str = "nm"  # or "voxels"
    voxel_size_xyz_nm: tuple[float, float, float] | None = None

    def __post_init__(self):
        if self.units not in ("nm", "voxels"):
            raise ValueError(f"units must be nm or voxels, got {self.units!r}")
        if self.units == "voxels" and self.voxel_size_xyz_nm is None:
            raise ValueError("positions in voxels need --voxel-size (one number or x,y,z nm)")

    @property
    def id_name(self) -> str:
        return self.id or "id"

    def source_columns(self) -> list[str]:
        """Input columns carried into the output unchanged, in output order."""
        names = [c for c in (self.id, self.neuron) if c]
        names += [self.position] if isinstance(self.position, str) else list(self.position)
        return names

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "neuron": self.neuron,
            "position": self.position,
            "units": self.units,
            "voxel_size_xyz_nm": self.voxel_size_xyz_nm,
        }

    @classmethod
    def from_json(cls, data: dict) -> Columns:
        position = data["position"]
        voxel = data.get("voxel_size_xyz_nm")
        return cls(
            id=data.get("id"),
            neuron=data.get("neuron"),
            position=position if isinstance(position, str) else tuple(position),
            units=data.get("units", "nm"),
            voxel_size_xyz_nm=tuple(voxel) if voxel else None,
        )


def discover_columns(
    names: Sequence[str],
    where: str,
    *,
    id_column: str | None = None,
    neuron_column: str | None = None,
    position_columns: Sequence[str] | None = None,
    units: str = "nm",
    voxel_size_xyz_nm: Sequence[float] | None = None,
) -> Columns:
    """Find id, neuron and position columns by their usual names (overrides win)."""
    names = list(names)

    def need(column: str, option: str) -> str:
        if column not in names:
            raise ValueError(f"{where}: no column {column!r} ({option}); columns: {names}")
        return column

    if id_column is not None:
        id_name: str | None = need(id_column, "--id-column")
    else:
        id_name = next((c for c in ID_COLUMNS if c in names), None)
    if neuron_column is not None:
        neuron: str | None = need(neuron_column, "--neuron-column")
    else:
        neuron = next((c for c in NEURON_COLUMNS if c in names), None)
    if position_columns is not None:
        position: tuple[str, str, str] | str = tuple(
            need(c, "--position-columns") for c in position_columns
        )  # type: ignore[assignment]
        if len(position) != 3:
            raise ValueError(f"--position-columns needs 3 names (x y z), got {position_columns}")
    else:
        found = next((cols for cols in POSITION_COLUMNS if all(c in names for c in cols)), None)
        if found is not None:
            position = found
        elif POSITION_LIST_COLUMN in names:
            position = POSITION_LIST_COLUMN
        else:
            raise ValueError(
                f"{where}: no position columns (looked for x,y,z, pre_x,pre_y,pre_z or "
                f"{POSITION_LIST_COLUMN}; use --position-columns); columns: {names}"
            )
    voxel = None
    if voxel_size_xyz_nm is not None:
        voxel = tuple(float(v) for v in voxel_size_xyz_nm)
        voxel = voxel * 3 if len(voxel) == 1 else voxel
        if len(voxel) != 3 or min(voxel) <= 0:
            raise ValueError(f"--voxel-size must be one or three positive numbers, got {voxel}")
    return Columns(id_name, neuron, position, units, voxel)  # type: ignore[arg-type]


def class_columns(classes: Sequence[str], naming: str = "short") -> list[str]:
    """Output probability column per class: the field's short names or the full ones."""
    if naming not in ("short", "full"):
        raise ValueError(f"naming must be short or full, got {naming!r}")
    if naming == "full":
        return list(classes)
    return [SHORT_NAMES.get(c, c) for c in classes]


def summarize_neurons(
    aggregates: pd.DataFrame,
    class_names: Sequence[str],
    neuron_column: str,
    *,
    min_synapses: int = 100,
    min_margin: float = 0.1,
) -> pd.DataFrame:
    """Per-neuron table from per-neuron sums: ``n``, ``sum_<class>`` and ``votes_<class>``.

    Columns: neuron id, synapses, mean probability per class, top_nt, top_nt_conf (mean
    probability of the top class), top_nt_votes (vote fraction), runner_up, margin, confident.
    """
    n = aggregates["n"].to_numpy(dtype=np.int64)
    sums = aggregates[[f"sum_{c}" for c in class_names]].to_numpy(dtype=np.float64)
    votes = aggregates[[f"votes_{c}" for c in class_names]].to_numpy(dtype=np.float64)
    means = sums / np.maximum(n, 1)[:, None]
    order = np.argsort(-means, axis=1, kind="stable")
    rows = np.arange(len(n))
    top, second = order[:, 0], order[:, 1] if len(class_names) > 1 else order[:, 0]
    names = np.asarray(class_names, dtype=object)
    margin = means[rows, top] - means[rows, second]
    table = pd.DataFrame({neuron_column: aggregates[neuron_column].to_numpy(), "synapses": n})
    for i, name in enumerate(class_names):
        table[name] = means[:, i]
    table["top_nt"] = names[top]
    table["top_nt_conf"] = means[rows, top]
    table["top_nt_votes"] = votes[rows, top] / np.maximum(n, 1)
    table["runner_up"] = names[second]
    table["margin"] = margin
    table["confident"] = (n >= min_synapses) & (margin >= min_margin)
    return table


# ---------------------------------------------------------------------------------------------
# cluster jobs


def submit_command(worker_config: str | Path | None, command: Sequence[str]) -> str | None:
    """The shell line that runs ``command`` as a cluster job, from ``worker_config.ini``'s
    ``[Worker] submit_command`` template (``{command}`` placeholder); None without one."""
    if worker_config is None:
        return None
    path = Path(worker_config)
    parser = configparser.ConfigParser(interpolation=None)
    if not parser.read(path):
        raise FileNotFoundError(f"{path}: worker config not found")
    template = parser.get("Worker", "submit_command", fallback=None)
    if not template:
        return None
    if "{command}" not in template:
        raise ValueError(f"{path}: [Worker] submit_command must contain {{command}}")
    return template.replace("{command}", shlex.join(command))
