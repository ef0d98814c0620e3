"""Where a job's files live, and uploads streamed to disk under a bound.

Every path comes from a generated job id (32 hex digits) and fixed names; nothing a user sends
(a file name, a bundle or volume name) ever becomes part of a path.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import re
import shutil
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

JOB_ID = re.compile(r"^[0-9a-f]{32}$")

#: the result files a job may have, with their media types
RESULT_FILES = {
    "synapses.parquet": "application/vnd.apache.parquet",
    "synapses.csv": "text/csv",
    "neurons.parquet": "application/vnd.apache.parquet",
    "report.html": "text/html",
}
SNIFF_BYTES = 65536


class UploadTooLarge(Exception):  # noqa: N818 - an HTTP 413, named as such
    """The upload passed the byte limit; nothing of it is kept."""


class UploadStalled(Exception):  # noqa: N818 - an HTTP 408, named as such
    """The client sent nothing for too long; nothing of the upload is kept."""


def job_dir(results: Path, job_id: str) -> Path:
    if not JOB_ID.match(job_id):
        raise ValueError(f"not a job id: {job_id!r}")
    return Path(results) / "jobs" / job_id


def input_path(results: Path, job_id: str, file_type: str) -> Path:
    return job_dir(results, job_id) / f"input.{file_type}"


def output_dir(results: Path, job_id: str) -> Path:
    """The job's predict-positions output folder, named by the job id (the report's title)."""
    return job_dir(results, job_id) / job_id


def result_files(results: Path, job_id: str) -> dict[str, Path]:
    """The result files a finished job has (name -> path), in :data:`RESULT_FILES` order."""
    folder = output_dir(results, job_id)
    return {name: folder / name for name in RESULT_FILES if (folder / name).is_file()}


async def receive_upload(
    chunks: AsyncIterator[bytes], path: Path, limit_bytes: int, idle_seconds: float | None = None
) -> int:
    """Write the chunks of a request body to ``path`` as they arrive; raise
    :class:`UploadTooLarge` (deleting the file) as soon as more than ``limit_bytes`` came, so
    an upload never takes more memory than one chunk or more disk than the limit, and
    :class:`UploadStalled` when no chunk came for ``idle_seconds``."""
    size = 0
    stream = aiter(chunks)
    try:
        with open(path, "wb") as out:
            while True:
                try:
                    async with asyncio.timeout(idle_seconds):
                        chunk = await anext(stream)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UploadStalled(f"the upload sent nothing for {idle_seconds:g} s") from None
                size += len(chunk)
                if size > limit_bytes:
                    raise UploadTooLarge(f"the upload is larger than {limit_bytes} bytes")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return size


def sniff_type(path: Path) -> str | None:
    """``parquet``, ``feather`` or ``csv`` from the file's content, else None (binary data of
    another kind, or text that is not UTF-8)."""
    with open(path, "rb") as f:
        head = f.read(SNIFF_BYTES)
        if head.startswith(b"PAR1"):
            f.seek(-4, 2)
            return "parquet" if f.read(4) == b"PAR1" else None
    if head.startswith(b"ARROW1"):
        return "feather"
    if not head or b"\x00" in head:
        return None
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return None
    return "csv"


def type_from_name(name: str | None) -> str | None:
    """The table type a file name declares by its extension, if any."""
    name = (name or "").strip()
    if "." not in name:
        return None
    suffix = name.rsplit(".", 1)[1].lower()
    return {"csv": "csv", "parquet": "parquet", "pq": "parquet", "feather": "feather"}.get(
        suffix, suffix
    )


def shown_name(name: str | None, file_type: str) -> str:
    """The name a user gave their file, as the service shows it: no folder, no control or
    bidirectional-override characters (each becomes ``_``), at most 255 characters."""
    name = unicodedata.normalize("NFC", (name or "").strip())
    name = "".join(c if c.isprintable() else "_" for c in name)
    return name.replace("/", "_").replace("\\", "_")[:255] or f"table.{file_type}"


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it is gone)."""
    total = 0
    for root, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def remove_job(results: Path, job_id: str) -> int:
    """Remove the job's folder (its input and results); returns the bytes freed."""
    folder = job_dir(results, job_id)
    size = folder_bytes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    return size
