"""The table reader of ``predict-positions``, ``predict-volume`` and ``explain``: the names of
:mod:`synister.tables` (the one reader, shared with ``db import`` and the service), kept here
so that imports of ``synister.predict.tables`` keep working. New code imports
:mod:`synister.tables`.
"""

from ..tables import (
    ID_COLUMNS,
    NEURON_COLUMNS,
    POSITION_COLUMNS,
    UNITS,
    PositionTable,
    TableColumns,
    TableError,
    choose_columns,
    csv_separator,
    duplicate_id_error,
    first_duplicate,
    parse_voxel_size,
    position_rows,
    read_neuron_ids,
    read_positions,
    table_header,
    table_kind,
)

__all__ = [
    "ID_COLUMNS",
    "NEURON_COLUMNS",
    "POSITION_COLUMNS",
    "UNITS",
    "PositionTable",
    "TableColumns",
    "TableError",
    "choose_columns",
    "csv_separator",
    "duplicate_id_error",
    "first_duplicate",
    "parse_voxel_size",
    "position_rows",
    "read_neuron_ids",
    "read_positions",
    "table_header",
    "table_kind",
]
