"""``synister synthetic`` (a FAFB-like dataset with a known oracle) and ``synthetic-oracle``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from .db import DbOption, JsonOption, fail, open_db, user_errors


def register(app: typer.Typer) -> None:
    app.command("synthetic")(synthetic_command)
    app.command("synthetic-oracle")(oracle_command)


def _print_oracle(label: str, acc: dict) -> None:
    typer.echo(
        f"{label:<12} synapse {acc['synapse']:.3f}   neuron {acc['neuron']:.3f}   "
        f"neuron vote {acc['neuron_vote']:.3f}   ({acc['n_synapses']} synapses, "
        f"{acc['n_neurons']} neurons)"
    )


def synthetic_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    preset: Annotated[
        str, typer.Option("--preset", help="easy (oracle >= 0.95, for demos/CI) or fafb.")
    ] = "fafb",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same dataset.")] = 0,
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
) -> None:
    """Write a synthetic FAFB-like dataset (raw volume, JSON tables, latents, montages) to --out."""
    from tqdm import tqdm

    from ..synthetic import generate, get_preset

    try:
        n_z = shape[0] if shape else get_preset(preset).shape_vox[0]
        with tqdm(total=n_z, unit="section", desc="rendering") as bar:
            summary = generate(
                out,
                preset=preset,
                seed=seed,
                shape_vox=shape,
                n_synapses=synapses,
                format=format,
                texture_dir=texture,
                progress=bar.update,
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


def oracle_command(
    dataset: Annotated[Path, typer.Argument(help="A folder written by `synister synthetic`.")],
    split: Annotated[str, typer.Option("--split", help="Split whose parts to evaluate.")],
    db_url: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Oracle accuracy on each part of a stored split; also added to the dataset's summary.json."""
    from ..db import SPLIT_PARTS
    from ..synthetic import oracle_accuracy

    try:
        per_part = {}
        with open_db(db_url) as db:
            for part in SPLIT_PARTS:
                ids = db.synapses(split=split, part=part)["synapse_id"].to_numpy()
                if len(ids):
                    per_part[part] = oracle_accuracy(dataset, ids)
        if not per_part:
            fail(f"split {split!r} holds no synapses")
        summary_path = dataset / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary.setdefault("oracle_by_split", {})[split] = per_part
        summary_path.write_text(json.dumps(summary, indent=2))
    except user_errors() + (KeyError,) as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps({"split": split, "parts": per_part}))
        return
    for part, acc in per_part.items():
        _print_oracle(part, acc)
