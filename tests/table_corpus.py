"""Malformed tables of positions, written by code (no binary file is committed): truncated
files, wrong magic, binary, nested and non-UTF-8 columns, huge strings, NaN and infinite
positions, no rows, one column. Each is refused by the service (4xx) and by
``predict-positions`` (one error line). Also tables that are big once decoded but small on disk
(:func:`repeated`, :func:`zeros_parquet`), written without holding them in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq

ROWS = 20


def _good() -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "id": np.arange(ROWS, dtype=np.int64) + 1,
            "pre_pt_root_id": rng.integers(0, 3, ROWS).astype(np.int64) + 720575940600000000,
            "x": rng.uniform(100, 400, ROWS),
            "y": rng.uniform(100, 400, ROWS),
            "z": rng.uniform(100, 800, ROWS),
        }
    )


def _arrow(**replace) -> pa.Table:
    table = pa.Table.from_pandas(_good(), preserve_index=False)
    for name, values in replace.items():
        index = table.schema.get_field_index(name)
        table = (
            table.set_column(index, name, values)
            if index >= 0
            else table.append_column(name, values)
        )
    return table


def repeated(text: str, n: int) -> pa.DictionaryArray:
    """``text`` on ``n`` rows, held once (as Parquet's dictionary encoding stores it)."""
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([text]))


def zeros_parquet(path, rows: int, group_rows: int = 1_000_000) -> None:
    """x, y, z of ``rows`` zeros, written a row group at a time (a few kB a million rows)."""
    zeros = pa.array(np.zeros(min(rows, group_rows)))
    table = pa.table({"x": zeros, "y": zeros, "z": zeros})
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for start in range(0, rows, group_rows):
            writer.write_table(table.slice(0, min(group_rows, rows - start)))


def write_corpus(folder: Path) -> dict[str, Path]:
    """Name -> file of every malformed table."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def parquet(name: str, table: pa.Table, **options) -> None:
        files[name] = folder / f"{name}.parquet"
        pq.write_table(table, files[name], **options)

    def arrow(name: str, table: pa.Table) -> None:
        files[name] = folder / f"{name}.feather"
        feather.write_feather(table, files[name])

    def raw(name: str, suffix: str, data: bytes) -> None:
        files[name] = folder / f"{name}.{suffix}"
        files[name].write_bytes(data)

    good = _good()
    good_parquet, good_feather = folder / "good.parquet", folder / "good.feather"
    good.to_parquet(good_parquet)
    feather.write_feather(good, good_feather)
    csv_text = good.to_csv(index=False).encode()
    parquet_bytes, feather_bytes = good_parquet.read_bytes(), good_feather.read_bytes()
    good_parquet.unlink()
    good_feather.unlink()

    raw("truncated_parquet", "parquet", parquet_bytes[: len(parquet_bytes) // 2])
    raw("truncated_parquet_footer", "parquet", parquet_bytes[:-9] + b"PAR1")
    raw("truncated_feather", "feather", feather_bytes[: len(feather_bytes) // 2])
    raw("truncated_csv", "csv", csv_text[: len(csv_text) // 2].rsplit(b",", 1)[0])
    raw("wrong_magic_parquet", "parquet", b"PAR2" + parquet_bytes[4:])
    raw("wrong_footer_magic_parquet", "parquet", parquet_bytes[:-4] + b"PAR2")
    raw("wrong_magic_feather", "feather", b"ARROW2" + feather_bytes[6:])
    raw("empty_file", "csv", b"")
    raw("zero_rows_csv", "csv", b"id,pre_pt_root_id,x,y,z\n")
    raw("one_column_csv", "csv", b"x\n1\n2\n3\n")
    raw("infinite_csv", "csv", csv_text + b"99,7,inf,1,1\n")
    raw("nul_bytes_csv", "csv", csv_text[:40] + b"\x00\x00" + csv_text[40:])
    raw("latin1_csv", "csv", csv_text + b"98,7,1,1,caf\xe9\n")
    raw("huge_string_csv", "csv", csv_text + b"97," + b"9" * 200_000 + b",1,1,1\n")
    raw("bidi_id_csv", "csv", csv_text + "96,evil\u202egpj.exe,1,1,1\n".encode())
    raw("quote_never_closed_csv", "csv", csv_text + b'95,"7,1,1,1\n')
    binary = pa.array([b"\xff\xfe" + bytes([i]) for i in range(ROWS)], pa.binary())
    parquet("binary_id", _arrow(id=binary))
    parquet("non_utf8_string_id", _arrow(id=binary.view(pa.string())))
    parquet("nested_positions", _arrow(x=pa.array([{"v": 1.0}] * ROWS)))
    parquet("list_of_lists_id", _arrow(id=pa.array([[[1]]] * ROWS)))
    parquet(
        "huge_string_ids", _arrow(pre_pt_root_id=repeated("n" * 2**20, ROWS)), compression="zstd"
    )
    parquet("nan_positions", _arrow(y=pa.array([1.0] * (ROWS - 1) + [float("nan")])))
    parquet("text_positions", _arrow(z=pa.array(["abc"] * ROWS)))
    parquet("zero_rows_parquet", _arrow().slice(0, 0))
    parquet("one_column_parquet", pa.table({"x": np.ones(ROWS)}))
    parquet("fractional_ids", _arrow(id=pa.array(np.arange(ROWS) + 0.5)))
    parquet("duplicate_ids", _arrow(id=pa.array(np.zeros(ROWS, np.int64))))
    arrow("binary_id_feather", _arrow(id=binary))
    arrow("inf_positions_feather", _arrow(x=pa.array([float("inf")] * ROWS)))
    arrow("zero_rows_feather", _arrow().slice(0, 0))
    return files


def counted_frames(monkeypatch) -> list[int]:
    """The rows of each frame the table reader checks from now on (in the order it does):
    how a test sees that a table is read in chunks."""
    from synister.tables import positions

    seen: list[int] = []
    convert = positions.position_rows

    def counted(frame, *args, **kwargs):
        seen.append(len(frame))
        return convert(frame, *args, **kwargs)

    monkeypatch.setattr(positions, "position_rows", counted)
    return seen
