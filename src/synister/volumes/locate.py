"""Where a volume's bytes are: local paths and URLs as tensorstore key-value stores, the small
metadata files read from them, and the tensorstore context whose cache pool holds the chunks.

Remote reading (http(s)://, gs://, s3://) is reached through the same kvstore specs, so its
settings (timeouts, credentials, a chunk cache shared between volumes) belong here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tensorstore as ts

#: URL prefixes (neuroglancer style) that name the format explicitly.
_FORMAT_PREFIXES = {
    "precomputed://": "precomputed",
    "zarr2://": "zarr2",
    "zarr3://": "zarr3",
    "zarr://": None,  # v2 or v3, decided by the metadata file present
    "n5://": "n5",
}


def split_location(container: str | Path) -> tuple[str | None, dict[str, Any], str]:
    """Turn a path or URL into (format hint, tensorstore kvstore spec, printable location)."""
    text = str(container)
    hint: str | None = None
    for prefix, fmt in _FORMAT_PREFIXES.items():
        if text.startswith(prefix):
            text = text[len(prefix) :]
            hint = fmt
            break
    if text.startswith(("http://", "https://")):
        url = urlsplit(text)
        kvstore: dict[str, Any] = {"driver": "http", "base_url": f"{url.scheme}://{url.netloc}"}
        if url.path.strip("/"):
            kvstore["path"] = "/" + url.path.strip("/") + "/"
    elif text.startswith(("gs://", "s3://")):
        scheme, rest = text.split("://", 1)
        bucket, _, path = rest.partition("/")
        if not bucket:
            raise ValueError(f"{container}: URL names no bucket")
        kvstore = {"driver": "gcs" if scheme == "gs" else "s3", "bucket": bucket}
        if path.strip("/"):
            kvstore["path"] = path.strip("/") + "/"
    else:
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif "://" in text:
            raise ValueError(
                f"{container}: unsupported URL scheme; use a local path, http(s)://, gs://, s3:// "
                "optionally behind precomputed://, zarr://, zarr2://, zarr3:// or n5://"
            )
        kvstore = {"driver": "file", "path": str(Path(text).expanduser().absolute()) + "/"}
    if hint is None:
        lowered = text.rstrip("/").lower()
        if lowered.endswith(".n5"):
            hint = "n5"
    return hint, kvstore, str(container)


def kv_join(kvstore: dict[str, Any], key: str | None) -> dict[str, Any]:
    """A kvstore spec for the directory ``key`` below ``kvstore`` (``None``/"" keeps it)."""
    key = (key or "").strip("/")
    if not key:
        return dict(kvstore)
    joined = dict(kvstore)
    base = joined.get("path", "")
    if base and not base.endswith("/"):
        base += "/"
    joined["path"] = base + key + "/"
    return joined


def read_json_keys(kvstore: dict[str, Any], keys: Sequence[str], where: str) -> dict[str, Any]:
    """Read several small JSON files concurrently; missing ones map to ``None``."""
    store = ts.KvStore.open(kvstore).result()
    futures = {key: store.read(key) for key in keys}
    found: dict[str, Any] = {}
    for key, future in futures.items():
        try:
            result = future.result()
        except Exception as err:  # network or permission errors name the file they hit
            raise OSError(f"{where}: cannot read {key}: {err}") from err
        if result.state != "value":
            found[key] = None
            continue
        try:
            found[key] = json.loads(bytes(result.value))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}/{key}: not valid JSON ({err})") from err
    return found


def cache_context(cache_bytes: int) -> ts.Context:
    return ts.Context({"cache_pool": {"total_bytes_limit": int(cache_bytes)}})
