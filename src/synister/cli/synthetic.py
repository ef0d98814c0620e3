"""``synister synthetic`` (a FAFB-like dataset with a known oracle) and ``synthetic-oracle``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from . import options as opt
from .db import open_db, user_errors
from .errors import fail


def register(app: typer.Typer) -> None:
    app.command("synthetic")(synthetic_command)
    app.command("synthetic-oracle")(oracle_command)


def _print_oracle(label: str, acc: dict) -> None:
    typer.echo(
        f"{label:<26} synapse {acc['synapse']:.3f}   neuron {acc['neuron']:.3f}   "
        f"neuron vote {acc['neuron_vote']:.3f}   ({acc['n_synapses']} synapses, "
        f"{acc['n_neurons']} neurons)"
    )


def synthetic_command(
    out: opt.Out,
    preset: opt.Preset = "fafb",
    seed: opt.Seed = 0,
    shape: Annotated[
        tuple[int, int, int] | None,
        typer.Option(
            "--shape", help="Volume size Z Y X in voxels (40x4x4 nm).", show_default=False
        ),
    ] = None,
    synapses: Annotated[
        int | None,
        typer.Option(
            "--synapses", help="Number of synapses (default: the preset's, capped to fit)."
        ),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="zarr (v3) or n5.")] = "zarr",
    texture: Annotated[
        Path | None,
        typer.Option("--texture", help="Folder of PNG EM sections to use as neuropil background."),
    ] = None,
    ceiling: Annotated[
        bool,
        typer.Option(
            "--ceiling/--no-ceiling",
            help="Measure the features back from the images for the image-level ceiling "
            "(about 0.1 s per synapse).",
        ),
    ] = True,
) -> None:
    """Write a synthetic FAFB-like dataset (raw volume and structure labels, JSON tables, latents,
    features measured from the images, montages) to --out."""
    from tqdm import tqdm

    from ..synthetic import generate, get_preset

    try:
        n_z = shape[0] if shape else get_preset(preset).shape_vox[0]
        with (
            tqdm(total=n_z, unit="section", desc="rendering") as bar,
            tqdm(unit="synapse", desc="measuring", disable=not ceiling) as measuring,
        ):
            summary = generate(
                out,
                preset=preset,
                seed=seed,
                shape_vox=shape,
                n_synapses=synapses,
                format=format,
                texture_dir=texture,
                ceiling=ceiling,
                progress=bar.update,
                measure_progress=measuring.update,
            )
    except user_errors() as e:
        fail(str(e))
    counts = summary["counts_per_class"]
    typer.echo(
        f"wrote {out}: {summary['n_synapses']} synapses, {summary['n_neurons']} neurons, "
        f"volume {tuple(summary['shape_vox'])} in {summary['seconds']['total']:.1f} s"
    )
    for nt, c in counts.items():
        typer.echo(f"  {nt:<14} {c['synapses']:>6} synapses {c['neurons']:>5} neurons")
    typer.echo(
        f"oracle accuracy: synapse {summary['oracle_synapse_accuracy']:.3f}, neuron "
        f"{summary['oracle_neuron_accuracy']:.3f}, neuron vote "
        f"{summary['oracle_neuron_vote_accuracy']:.3f} (this dataset); expected over the "
        f"generator: synapse {summary['oracle_expected']['synapse']:.3f}, neuron "
        f"{summary['oracle_expected']['neuron']:.3f}"
    )
    if summary["image_ceiling"] is not None:
        _print_oracle("image-level ceiling (5-fold by neuron):", summary["image_ceiling"])


def oracle_command(
    dataset: Annotated[Path, typer.Argument(help="A folder written by `synister synthetic`.")],
    split: Annotated[str, typer.Option("--split", help="Split whose parts to evaluate.")],
    db_url: opt.Db = None,
    as_json: opt.Json = False,
) -> None:
    """Oracle accuracy and image-level ceiling on each part of a stored split; also added to the
    dataset's summary.json.

    The ceiling's classifier is fitted on the train part; on the train part itself it is
    cross-validated by neuron.
    """
    from ..db import SPLIT_PARTS
    from ..synthetic import image_ceiling, oracle_accuracy
    from ..synthetic.ceiling import IMAGE_FEATURES_FILE

    try:
        per_part, ids_of = {}, {}
        with open_db(db_url, create=False) as db:
            for part in SPLIT_PARTS:
                ids = db.synapses(split=split, part=part)["synapse_id"].to_numpy()
                if len(ids):
                    ids_of[part] = ids
                    per_part[part] = oracle_accuracy(dataset, ids)
        if not per_part:
            fail(f"split {split!r} holds no synapses")
        ceiling = {}
        if (dataset / IMAGE_FEATURES_FILE).is_file() and "train" in ids_of:
            for part, ids in ids_of.items():
                held_out = None if part == "train" else ids
                ceiling[part] = image_ceiling(dataset, ids_of["train"], held_out)
        summary_path = dataset / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary.setdefault("oracle_by_split", {})[split] = per_part
        if ceiling:
            summary.setdefault("image_ceiling_by_split", {})[split] = ceiling
        summary_path.write_text(json.dumps(summary, indent=2))
    except user_errors() + (KeyError,) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps({"split": split, "parts": per_part, "image_ceiling": ceiling}))
        return
    for part, acc in per_part.items():
        _print_oracle(f"{part} oracle", acc)
        if part in ceiling:
            _print_oracle(f"{part} image-level ceiling", ceiling[part])
    if not ceiling:
        typer.echo(f"(no image-level ceiling: {IMAGE_FEATURES_FILE} missing or no train part)")
