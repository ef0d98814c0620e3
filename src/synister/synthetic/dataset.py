"""Write a synthetic dataset folder: raw volume, original-format JSON tables, latents, montages.

The folder holds ``raw.zarr`` (or ``raw.n5``; dataset ``raw``, uint8, 40x4x4 nm, offset 0, and
dataset ``structures``, the label volume of :mod:`synister.synthetic.structures` on the same
grid), ``synapses.json``/``skeletons.json``/``hemi_lineages.json`` in the original synister
export format (positions in nm), ``latents.parquet`` (every synapse's generative features),
``image_features.parquet`` (the same features measured back from the images, see
:mod:`synister.synthetic.measure`), ``summary.json`` (sizes, counts, oracle accuracies, the
image-level ceiling, the generative model) and ``montage_<nt>.png`` per class.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from ..nt import TRANSMITTERS
from ..volumes import Volume, write_volume
from .ceiling import IMAGE_FEATURES_FILE, cross_validated_ceiling
from .latents import sample_hierarchy
from .layout import PIXEL_NM, SECTION_NM, lattice_capacity, place_synapses
from .measure import measure_features
from .oracle import oracle_from_latents
from .presets import FEATURES, get_preset
from .render import load_texture, make_scene, render_section
from .structures import STRUCTURE_LABELS, structure_labels_section

VOXEL_SIZE_NM: tuple[float, float, float] = (SECTION_NM, PIXEL_NM, PIXEL_NM)
#: Sections rendered and written together (the memory unit of generation).
BLOCK_SECTIONS = 8
MONTAGE_SYNAPSES = 8
MONTAGE_PX = 160
#: Size of the latent-only draw that estimates the generator's expected oracle accuracy.
EXPECTED_ORACLE_SYNAPSES = 40_000
#: Dataset of the structure label volume, in the raw container.
STRUCTURES_DATASET = "structures"


def _tables(hemi_lineages, skeletons, synapses, centers_nm) -> dict[str, dict]:
    """The three tables in the original synister JSON export format (ids as string keys)."""
    syn = {
        str(int(sid)): {
            "x": float(c[2]),
            "y": float(c[1]),
            "z": float(c[0]),
            "skeleton_id": int(sk),
            "prepost": "pre",
        }
        for sid, sk, c in zip(
            synapses["synapse_id"], synapses["skeleton_id"], centers_nm, strict=True
        )
    }
    skel = {
        str(int(r.skeleton_id)): {"hemi_lineage_id": int(r.hemi_lineage_id), "nt_known": [r.nt]}
        for r in skeletons.itertuples()
    }
    hl = {
        str(int(r.hemi_lineage_id)): {"hemi_lineage_name": r.hemi_lineage_name, "nt_guess": [r.nt]}
        for r in hemi_lineages.itertuples()
    }
    return {"synapses.json": syn, "skeletons.json": skel, "hemi_lineages.json": hl}


def _name_labels(array_dir: Path, format: str) -> None:
    """Add the label names to the structure volume's attributes (``labels``: value -> kind)."""
    names = {str(k): v for k, v in STRUCTURE_LABELS.items()}
    meta_path = array_dir / ("zarr.json" if format == "zarr" else "attributes.json")
    meta = json.loads(meta_path.read_text())
    if format == "zarr":
        meta.setdefault("attributes", {})["labels"] = names
    else:
        meta["labels"] = names
    meta_path.write_text(json.dumps(meta, indent=2))


def _montage(volume: Volume, synapses: pd.DataFrame, nt: str, path: Path, rng) -> None:
    """A few synapses of class ``nt``: central section (middle row) and the sections around it."""
    from PIL import Image

    rows = synapses[synapses["nt"] == nt]
    if rows.empty:
        return
    pick = rows.iloc[
        np.sort(rng.choice(len(rows), min(MONTAGE_SYNAPSES, len(rows)), replace=False))
    ]
    centers = pick[["z_nm", "y_nm", "x_nm"]].to_numpy()
    patches = volume.read_patches(centers, (3, MONTAGE_PX, MONTAGE_PX))  # (n, 3, Y, X)
    gap = 4
    n = len(patches)
    canvas = np.full((3 * MONTAGE_PX + 2 * gap, n * MONTAGE_PX + (n - 1) * gap), 255, np.uint8)
    for i, p in enumerate(patches):
        for j in range(3):
            y, x = j * (MONTAGE_PX + gap), i * (MONTAGE_PX + gap)
            canvas[y : y + MONTAGE_PX, x : x + MONTAGE_PX] = p[j]
    Image.fromarray(canvas).save(path)


def generate(
    out_dir: str | Path,
    *,
    preset: str = "fafb",
    seed: int = 0,
    shape_vox: tuple[int, int, int] | None = None,
    n_synapses: int | None = None,
    format: str = "zarr",
    texture_dir: str | Path | None = None,
    montages: bool = True,
    ceiling: bool = True,
    progress: Callable[[int], None] | None = None,
    measure_progress: Callable[[int], None] | None = None,
) -> dict:
    """Generate a dataset into ``out_dir`` and return its summary (also written to summary.json).

    ``progress`` is called with the number of sections just written, ``measure_progress`` with
    the number of synapses just measured. Without ``n_synapses`` the preset's default is used,
    capped at what fits the volume. ``ceiling=False`` skips measuring the features back from
    the images (no ``image_features.parquet``, no image-level ceiling in the summary).
    """
    t0 = time.perf_counter()
    p = get_preset(preset)
    shape = tuple(int(s) for s in (shape_vox or p.shape_vox))
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape_vox must be 3 positive sizes (z, y, x), got {shape_vox}")
    if format not in ("zarr", "n5"):
        raise ValueError(f"format must be 'zarr' or 'n5', got {format!r}")
    capacity = lattice_capacity(shape)
    n = int(n_synapses) if n_synapses is not None else min(p.n_synapses, capacity)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    texture = load_texture(texture_dir) if texture_dir is not None else None

    ss = np.random.SeedSequence(seed)
    rng_latent, rng_layout, rng_scene, rng_montage = (np.random.default_rng(s) for s in ss.spawn(4))
    centers_vox = place_synapses(shape, n, rng_layout)
    hemi_lineages, skeletons, synapses, model = sample_hierarchy(p, n, rng_latent)
    centers_nm = (centers_vox + 0.5) * np.asarray(VOXEL_SIZE_NM)
    synapses = synapses.assign(z_nm=centers_nm[:, 0], y_nm=centers_nm[:, 1], x_nm=centers_nm[:, 2])
    t_latents = time.perf_counter()

    scene = make_scene(
        shape,
        synapses,
        centers_vox,
        rng_scene,
        noise_sigma=p.noise_sigma,
        defect_probability=p.defect_probability,
        texture=texture,
        dense_core_scale=p.dense_core_scale,
    )
    section_seed = int(ss.generate_state(1)[0])

    def blocks() -> Iterator[tuple[tuple[int, int, int], np.ndarray]]:
        for z0 in range(0, shape[0], BLOCK_SECTIONS):
            z1 = min(shape[0], z0 + BLOCK_SECTIONS)
            block = np.stack([render_section(scene, z, section_seed) for z in range(z0, z1)])
            yield (z0, 0, 0), block
            if progress is not None:
                progress(z1 - z0)

    container = out / ("raw.zarr" if format == "zarr" else "raw.n5")
    volume = write_volume(
        container,
        blocks(),
        VOXEL_SIZE_NM,
        (0, 0, 0),
        format=format,
        dataset="raw",
        chunks_vox=(BLOCK_SECTIONS, 256, 256),
        shape_vox=shape,
    )
    write_volume(
        container,
        (
            ((z0, 0, 0), np.stack([structure_labels_section(scene, z) for z in range(z0, z1)]))
            for z0 in range(0, shape[0], BLOCK_SECTIONS)
            for z1 in [min(shape[0], z0 + BLOCK_SECTIONS)]
        ),
        VOXEL_SIZE_NM,
        (0, 0, 0),
        format=format,
        dataset=STRUCTURES_DATASET,
        chunks_vox=(BLOCK_SECTIONS, 256, 256),
        shape_vox=shape,
    )
    _name_labels(container / STRUCTURES_DATASET, format)
    t_render = time.perf_counter()

    image_ceiling = None
    if ceiling:
        measured = measure_features(volume, scene, p.dense_core_scale, measure_progress)
        features = synapses[["synapse_id", "skeleton_id", "nt"]].copy()
        features[list(FEATURES)] = measured
        features.to_parquet(out / IMAGE_FEATURES_FILE, index=False)
        image_ceiling = cross_validated_ceiling(features, model, seed=seed)
    t_measure = time.perf_counter()

    for name, table in _tables(hemi_lineages, skeletons, synapses, centers_nm).items():
        (out / name).write_text(json.dumps(table))
    cols = ["synapse_id", "skeleton_id", "hemi_lineage_id", "nt", "z_nm", "y_nm", "x_nm", *FEATURES]
    synapses[cols].to_parquet(out / "latents.parquet", index=False)
    if montages:
        for nt in TRANSMITTERS:
            _montage(volume, synapses, nt, out / f"montage_{nt}.png", rng_montage)

    oracle = oracle_from_latents(synapses, model)
    # the same model's expectation, from a large draw of the hierarchy (no images)
    _, _, many, many_model = sample_hierarchy(
        p, EXPECTED_ORACLE_SYNAPSES, np.random.default_rng(seed)
    )
    expected = oracle_from_latents(many, many_model)
    syn_counts = synapses["nt"].value_counts()
    neuron_counts = skeletons["nt"].value_counts()
    summary = {
        "preset": preset,
        "seed": int(seed),
        "shape_vox": list(shape),
        "voxel_size_nm": list(VOXEL_SIZE_NM),
        "offset_nm": [0, 0, 0],
        "raw_container": container.name,
        "raw_dataset": "raw",
        "format": format,
        "texture": str(texture_dir) if texture_dir is not None else None,
        "n_synapses": int(n),
        "synapse_capacity": capacity,
        "n_neurons": int(len(skeletons)),
        "n_hemi_lineages": int(len(hemi_lineages)),
        "counts_per_class": {
            nt: {"synapses": int(syn_counts.get(nt, 0)), "neurons": int(neuron_counts.get(nt, 0))}
            for nt in TRANSMITTERS
        },
        "oracle_synapse_accuracy": oracle["synapse"],
        "oracle_neuron_accuracy": oracle["neuron"],
        "oracle_neuron_vote_accuracy": oracle["neuron_vote"],
        "oracle_expected": {
            k: expected[k] for k in ("synapse", "neuron", "neuron_vote", "n_synapses", "n_neurons")
        },
        # accuracy of the classifier of features measured from the images, each neuron scored
        # by a fit without it (5 folds by neuron); None when not measured
        "image_ceiling": image_ceiling,
        "structures_dataset": STRUCTURES_DATASET,
        "structure_labels": {str(k): v for k, v in STRUCTURE_LABELS.items()},
        "seconds": {
            "latents": round(t_latents - t0, 3),
            "render_and_write": round(t_render - t_latents, 3),
            "measure": round(t_measure - t_render, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
        "model": model.to_json(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
