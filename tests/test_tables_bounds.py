"""A table read within bounds (:mod:`synister.tables.bounds`): rows, types and sizes from the
footer before a value is decoded; the id text rule and CSV cells safe from spreadsheets
(:mod:`synister.tables.text`)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from table_corpus import counted_frames, repeated, zeros_parquet

from synister.tables import (
    MAX_ID_CHARACTERS,
    TableError,
    TableLimits,
    read_positions,
    spreadsheet_safe,
)

LIMITS = TableLimits(max_rows=1000, max_row_bytes=4096)


_POOLS: list = []


@contextlib.contextmanager
def arrow_peak():
    """The most bytes Arrow held at once while the block ran (a pool of its own)."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    _POOLS.append(pool)  # buffers made in the block may outlive it: the pool must too
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    found = {}
    try:
        yield found
    finally:
        pa.set_memory_pool(previous)
        found["bytes"] = pool.max_memory()


def positions(n: int = 5, **columns) -> pd.DataFrame:
    frame = pd.DataFrame({"id": np.arange(n), "x": 1.0, "y": 2.0, "z": 3.0})
    return frame.assign(**columns)


def test_row_counts_come_from_the_footer(tmp_path):
    bomb = tmp_path / "bomb.parquet"
    zeros_parquet(bomb, 5_000_000)
    assert bomb.stat().st_size < 200_000  # 120 MB once decoded
    with arrow_peak() as peak, pytest.raises(TableError) as error:
        read_positions(bomb, limits=LIMITS)
    assert str(error.value) == f"{bomb}: 5000000 rows; at most 1000"
    assert peak["bytes"] < 2**20
    arrow = tmp_path / "bomb.feather"
    zeros = pa.array(np.zeros(3_000_000))
    feather.write_feather(pa.table({"x": zeros, "y": zeros, "z": zeros}), arrow)
    with arrow_peak() as peak, pytest.raises(TableError, match="3000000 rows; at most 1000"):
        read_positions(arrow, limits=LIMITS)
    assert peak["bytes"] < 2**20
    text = tmp_path / "many.csv"
    positions(5000).to_csv(text, index=False)
    with pytest.raises(TableError, match="many.csv: more than 1000 rows; at most 1000"):
        read_positions(text, limits=LIMITS)
    assert len(read_positions(text).rows) == 5000  # a command reads any size


def test_long_ids_are_refused_from_the_footer_before_they_are_decoded(tmp_path):
    path = tmp_path / "long.parquet"
    long = repeated("n" * 2**20, 300)  # 300 MB once decoded, 3 kB on disk
    table = pa.table({"id": np.arange(300), "pre_pt_root_id": long, "x": np.ones(300)})
    pq.write_table(table.append_column("y", pa.array(np.ones(300))).append_column(
        "z", pa.array(np.ones(300))), path, compression="zstd")  # fmt: skip
    assert path.stat().st_size < 5000
    with arrow_peak() as peak, pytest.raises(TableError) as error:
        read_positions(path)
    assert f"{path}, column pre_pt_root_id: " in str(error.value)
    assert f"an id is at most {MAX_ID_CHARACTERS} characters" in str(error.value)
    assert peak["bytes"] < 2**20


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("n" * (MAX_ID_CHARACTERS + 1), f"an id of {MAX_ID_CHARACTERS + 1} characters"),
        ("evil\u202eexe.doc", "U+202E, which is not printable"),
        ("two\nlines", "U+000A"),
        ("nul\x00", "U+0000"),
    ],
)
def test_ids_are_short_and_printable_in_every_format(tmp_path, value, problem):
    frame = positions(pre_pt_root_id=["a", "b", value, "c", "d"])
    frame.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(TableError) as error:
        read_positions(tmp_path / "t.parquet")
    assert str(error.value).startswith(f"{tmp_path / 't.parquet'}, column pre_pt_root_id, row 2:")
    assert problem in str(error.value)
    if "\x00" not in value and "\n" not in value:
        frame.to_csv(tmp_path / "t.csv", index=False)
        with pytest.raises(TableError, match=r"t.csv, column pre_pt_root_id, line 4: "):
            read_positions(tmp_path / "t.csv")
    ok = positions(pre_pt_root_id=["a", "b", "n" * MAX_ID_CHARACTERS, "ü ß", "-"])
    ok.to_parquet(tmp_path / "ok.parquet")
    assert read_positions(tmp_path / "ok.parquet").rows["neuron_id"].iloc[2] == ok.iloc[2, -1]


def test_decoding_errors_name_the_column(tmp_path):
    def parquet(name, **columns):
        path = tmp_path / f"{name}.parquet"
        base = {"id": pa.array(np.arange(3)), "x": pa.array(np.ones(3))}
        base |= {"y": pa.array(np.ones(3)), "z": pa.array(np.ones(3))}
        pq.write_table(pa.table(base | columns), path)
        return path

    binary = pa.array([b"\xff\xfe1", b"\xff\xfe2", b"\xff\xfe3"], pa.binary())
    cases = {
        parquet("binary", id=binary): "column id: binary data, not text",
        parquet("utf8", id=binary.view(pa.string())): "column id: cannot be read (",
        parquet("nested", z=pa.array([{"a": 1.0}] * 3)): "column z: struct<a: double> values",
        parquet("lists", x=pa.array([[1.0]] * 3)): "column x: list<element: double> values",
    }
    for path, message in cases.items():
        with pytest.raises(TableError) as error:
            read_positions(path)
        assert f"{path}, {message}" in str(error.value), str(error.value)
    text = tmp_path / "latin1.csv"
    text.write_bytes(b"id,x,y,z\n1,1,2,3\n2,1,2,3\n3,caf\xe9,2,3\n")
    with pytest.raises(TableError, match=r"latin1.csv, line 4: not UTF-8 text \(byte 0xe9\)"):
        read_positions(text)


def test_a_csv_line_longer_than_the_row_bytes_is_refused_before_parsing(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("id,x,y,z\n1,1,2,3\n" + "2,1,2,3" + " " * 5000 + "\n")
    with pytest.raises(TableError, match=r"wide.csv, line 3: longer than 4096 bytes"):
        read_positions(path, limits=LIMITS)


def test_only_the_columns_used_are_decoded(tmp_path):
    path = tmp_path / "extra.parquet"
    table = pa.table({"notes": repeated("x" * 2**20, 50), "x": np.ones(50)})
    table = table.append_column("y", pa.array(np.ones(50))).append_column(
        "z", pa.array(np.ones(50))
    )
    pq.write_table(table, path, compression="zstd")
    with arrow_peak() as peak:
        assert len(read_positions(path, limits=LIMITS).rows) == 50
    assert peak["bytes"] < 2**20


def test_csv_cells_a_spreadsheet_would_run_get_a_quote():
    frame = pd.DataFrame(
        {
            "id": ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx", "ok"],
            "neuron_id": ["-12", "-1.5e3", "+7", "a", "b", "c", "=1"],
            "x_nm": [-1.0, -2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
            "row": [-1, 2, 3, 4, 5, 6, 7],
        }
    )
    safe = spreadsheet_safe(frame)
    assert safe["id"].tolist() == [
        "'=HYPERLINK(\"http://x\")", "'+1+2", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx", "ok",
    ]  # fmt: skip
    assert safe["neuron_id"].tolist() == ["-12", "-1.5e3", "+7", "a", "b", "c", "'=1"]
    pd.testing.assert_frame_equal(safe[["x_nm", "row"]], frame[["x_nm", "row"]])
    text = io.StringIO()
    safe.to_csv(text, index=False)
    assert "\n'=1\n" not in text.getvalue() and ",-1.0," in text.getvalue()
    assert frame["id"].iloc[0].startswith("=")  # the caller's frame is unchanged


@pytest.mark.parametrize(
    ("neurons", "frames"),
    [
        ([7, 8, 9, 10, 11], [2, 2, 1]),
        (["a", "b", "c", "d", "e"], [2, 2, 1]),  # the reading as numbers fails at once
        # numbers in the first chunks, text in the last: only the whole column can say that
        # "5.0" is text here, so the file is read again, whole
        (["5.0", "6", "7", "8", "x"], [2, 2, 2, 2, 1, 5]),
    ],
)
def test_a_csv_read_in_chunks_gives_the_rows_of_the_whole_file(
    tmp_path, monkeypatch, neurons, frames
):
    path = tmp_path / "t.csv"
    positions(5, pre_pt_root_id=neurons).to_csv(path, index=False)
    whole = read_positions(path, limits=LIMITS).rows
    seen = counted_frames(monkeypatch)
    pd.testing.assert_frame_equal(read_positions(path, limits=LIMITS, chunk_rows=2).rows, whole)
    assert seen == frames
    bad = positions(5, x=["1", "2", "3", "oops", "5"])
    bad.to_csv(path, index=False)
    with pytest.raises(TableError, match=r"column x, line 5: 'oops' is not a number"):
        read_positions(path, limits=LIMITS, chunk_rows=2)
    positions(6).to_csv(path, index=False)
    with pytest.raises(TableError, match="more than 5 rows; at most 5"):
        read_positions(path, limits=TableLimits(max_rows=5), chunk_rows=2)
