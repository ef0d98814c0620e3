"""The options that say how to read a table of synapse positions and how to name and
summarise the output, shared by ``predict-positions`` and ``predict-volume`` (one wording, one
meaning: :func:`synister.tables.choose_columns`)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

Units = Annotated[Literal["nm", "voxels"], typer.Option(help="Units of the position columns.")]
VoxelSize = Annotated[
    str | None,
    typer.Option(
        help="Voxel size of voxel positions in nm: one number, x,y,z, or x=4,y=4,z=40 "
        "(db import, for one release: x and z different must name the axes)."
    ),
]
IdColumn = Annotated[
    str | None,
    typer.Option(help="Synapse id column (default: id, synapse_id or syn_id; else rows)."),
]
NeuronColumn = Annotated[
    str | None,
    typer.Option(
        help="Neuron id column (default: pre_pt_root_id, bodyId, body, skeleton_id, skid)."
    ),
]
PositionColumns = Annotated[
    str | None,
    typer.Option(
        help="Position columns x,y,z or one list column (default: x,y,z; pre_x,pre_y,"
        "pre_z; pre_pt_position)."
    ),
]
Naming = Annotated[
    Literal["short", "full"],
    typer.Option(help="Class columns: short (gaba, ach, glut, oct, ser, da) or full."),
]
MinSynapses = Annotated[int, typer.Option(min=1, help="Fewer synapses: a neuron is not confident.")]
MinMargin = Annotated[
    float, typer.Option(min=0, help="Smaller top minus runner-up mean: not confident.")
]
#: synister.predict.neurons' MIN_SYNAPSES and MIN_MARGIN (tests/test_cli.py checks), written out
#: so that declaring options imports no prediction code
DEFAULT_MIN_SYNAPSES = 100
DEFAULT_MIN_MARGIN = 0.1


def column_options(
    id_column: str | None,
    neuron_column: str | None,
    position_columns: str | None,
    units: str,
    voxel_size: str | None,
) -> dict:
    """The keyword arguments of :func:`synister.tables.choose_columns`."""
    positions = None
    if position_columns:
        positions = [c.strip() for c in position_columns.split(",") if c.strip()]
    return {
        "id_column": id_column,
        "neuron_column": neuron_column,
        "position_columns": positions,
        "units": units,
        "voxel_size": voxel_size,
    }
