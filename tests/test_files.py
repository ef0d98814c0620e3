"""synister.files: whole-or-nothing writes (flushed to disk), the JSON rule, content hashes."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from synister import files


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_failing_writer_leaves_the_old_file_and_no_temporary_one(tmp_path):
    target = tmp_path / "run.json"
    files.write_json(target, {"state": "running"})

    def half_then_fail(tmp):
        tmp.write_text('{"state": "compl')  # a crash half-way through the new content
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        files.write_atomic(target, half_then_fail)
    assert json.loads(target.read_text()) == {"state": "running"}
    assert _listing(tmp_path) == ["run.json"]


def test_a_killed_writers_temporaries_are_swept_and_nothing_else(tmp_path):
    # kill -9 runs no cleanup: what a killed write leaves, a resumed run removes
    (tmp_path / ".block_0.parquet.tmp12200").write_bytes(b"half")
    (tmp_path / ".bundle.old77").mkdir()
    (tmp_path / ".bundle.old77" / "model.pt").write_bytes(b"x")
    for kept in ("block_0.parquet", ".hidden", ".x.tmpfile", "a.tmp1"):
        (tmp_path / kept).write_bytes(b"")
    assert files.remove_temporaries(tmp_path) == 2
    assert _listing(tmp_path) == [".hidden", ".x.tmpfile", "a.tmp1", "block_0.parquet"]
    assert files.remove_temporaries(tmp_path / "absent") == 0


def test_writes_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = files.os.fsync, files.os.replace

    def fsync(fd):
        events.append("fsync")
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", open(src).read()))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", fsync)
    monkeypatch.setattr(files.os, "replace", replace)
    files.write_text(tmp_path / "a.txt", "hello")
    assert events[:2] == ["fsync", ("replace", "hello")]  # the file, then the rename
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_json_writes_nan_and_infinity_as_null_and_numpy_as_numbers(tmp_path):
    content = {
        "nan": float("nan"),
        "inf": -math.inf,
        "np": np.float32(0.5),
        "n": np.int64(3),
        "shape": (16, 160),
        "array": np.array([1.0, np.nan]),
        "set": {"b", "a"},
    }
    path = files.write_json(tmp_path / "m.json", content)
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text and text.endswith("\n")
    assert json.loads(text) == {
        "nan": None,
        "inf": None,
        "np": 0.5,
        "n": 3,
        "shape": [16, 160],
        "array": [1.0, None],
        "set": ["a", "b"],
    }


def test_replace_folder_is_whole_or_nothing(tmp_path):
    out = tmp_path / "bundle"
    files.replace_folder(out, lambda tmp: (tmp / "model.json").write_text("1"))
    assert _listing(out) == ["model.json"]

    def fail(tmp):
        (tmp / "model.json").write_text("2")
        raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        files.replace_folder(out, fail)
    assert (out / "model.json").read_text() == "1" and _listing(tmp_path) == ["bundle"]
    files.replace_folder(out, lambda tmp: (tmp / "weights").write_text("3"))
    assert _listing(out) == ["weights"] and _listing(tmp_path) == ["bundle"]


def test_file_sha256_is_the_hash_of_the_bytes(tmp_path):
    data = bytes(range(256)) * 70_000  # more than one read block
    path = files.write_bytes(tmp_path / "w", data)
    assert files.file_sha256(path) == hashlib.sha256(data).hexdigest()
