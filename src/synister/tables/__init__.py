"""The one reader of user tables (CSV/TSV, Parquet, Feather): ``db import``,
``predict-positions``, ``predict-volume``, ``explain`` and the service read through it.

It finds or takes the id, neuron and position columns, converts positions to nm (from nm, or
voxels with an x,y,z voxel size) and reports bad input as one line naming the file, the line
(CSV) or row, and the column. It sits at the bottom of the package (pandas, pyarrow, numpy
only), so the database layer can use it too.
"""

from .bounds import TableLimits, read_columns, scan_csv
from .columns import (
    ID_COLUMNS,
    NEURON_COLUMNS,
    OPTION_NAMES,
    POSITION_COLUMNS,
    UNITS,
    TableColumns,
    choose_columns,
    find_column,
    parse_voxel_size,
)
from .positions import (
    PositionTable,
    check_unique_ids,
    position_rows,
    read_neuron_ids,
    read_positions,
)
from .read import (
    FOLDER_ENDINGS,
    TableError,
    csv_separator,
    read_frame,
    row_name,
    table_header,
    table_kind,
    table_stem,
)
from .text import MAX_ID_CHARACTERS, spreadsheet_safe, text_problem
from .values import duplicate_id_error, exact_ids, first_duplicate, numbers, position_list

__all__ = [
    "FOLDER_ENDINGS",
    "ID_COLUMNS",
    "MAX_ID_CHARACTERS",
    "NEURON_COLUMNS",
    "OPTION_NAMES",
    "POSITION_COLUMNS",
    "UNITS",
    "PositionTable",
    "TableColumns",
    "TableError",
    "TableLimits",
    "check_unique_ids",
    "choose_columns",
    "csv_separator",
    "duplicate_id_error",
    "exact_ids",
    "find_column",
    "first_duplicate",
    "numbers",
    "parse_voxel_size",
    "position_list",
    "position_rows",
    "read_columns",
    "read_frame",
    "read_neuron_ids",
    "read_positions",
    "row_name",
    "scan_csv",
    "spreadsheet_safe",
    "table_header",
    "table_kind",
    "table_stem",
    "text_problem",
]
