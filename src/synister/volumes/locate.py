"""Where a volume's bytes are: local paths and URLs as tensorstore key-value stores, the small
metadata files read from them, and the tensorstore context whose cache pool holds the chunks.

Remote reading (http(s)://, gs://, s3://) goes through the same kvstore specs. Its settings
live here: one context per process (its chunk cache and request limits shared by every volume
the process opens), :data:`REQUESTS_IN_FLIGHT` requests at a time, retries with backoff on
timeouts and 5xx bounded to :data:`RETRIES` (tensorstore's default, 32 retries up to 32 s
apart, kept a run without network waiting for minutes), and errors as one line that names the
URL. Credentials come from where tensorstore's drivers look (Google application default
credentials, AWS environment variables and profile); none is ever part of a location.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tensorstore as ts

#: requests in flight per process and storage kind (tensorstore's default: 32)
REQUESTS_IN_FLIGHT = 64
#: retries of a request that timed out or got a 5xx: 0.25 s, 0.5 s ... at most 4 s apart
RETRIES = {"max_retries": 6, "initial_delay": "0.25s", "max_delay": "4s"}
#: seconds a metadata read at open may take before the volume is reported unreachable
OPEN_TIMEOUT_S = float(os.environ.get("SYNISTER_REMOTE_TIMEOUT", "60"))
#: a transfer that moves less than 1 byte/s for this long counts as stalled and is retried
_STALL_ENV = {
    "TENSORSTORE_CURL_LOW_SPEED_TIME_SECONDS": "30",
    "TENSORSTORE_CURL_LOW_SPEED_LIMIT_BYTES": "1",
}
_REMOTE_DRIVERS = ("http", "gcs", "s3")

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
        if url.username or url.password:
            raise ValueError(
                f"{redact(container)}: credentials in a URL are not accepted (they would be "
                "printed and stored with the run); use a bucket URL (gs://, s3://) with "
                "application default credentials or AWS environment variables / profile"
            )
        base = f"{url.scheme}://{url.netloc}" + (f"?{url.query}" if url.query else "")
        kvstore: dict[str, Any] = {"driver": "http", "base_url": base}
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
    return hint, kvstore, redact(container)


def redact(location: str | Path) -> str:
    """``location`` as it may be printed and stored: a URL without user information or query
    string (signed URLs carry their signature there)."""
    text = re.sub(r"(://)[^/@\s]*@", r"\1", str(location))
    return re.sub(r"(://[^?\s]*)\?\S*$", r"\1?…", text)


def is_remote(kvstore: dict[str, Any] | None) -> bool:
    return isinstance(kvstore, dict) and kvstore.get("driver") in _REMOTE_DRIVERS


def describe_error(error: BaseException) -> str:
    """A tensorstore error as one line, without the spec it appends (which may name
    credential settings) or query strings."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = re.sub(r"\s*\[tensorstore_spec=.*$", "", text)
    text = re.sub(r"\s*\[source locations=.*$", "", text)
    return re.sub(r"(https?://[^\s\"'?]+)\?[^\s\"']*", r"\1?…", text)


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
    """Read several small JSON files concurrently; missing ones map to ``None``. A remote
    store that does not answer within :data:`OPEN_TIMEOUT_S` is reported unreachable."""
    store = ts.KvStore.open(kvstore, context=reading_context()).result()
    futures = {key: store.read(key) for key in keys}
    found: dict[str, Any] = {}
    for key, future in futures.items():
        try:
            result = future.result(timeout=OPEN_TIMEOUT_S)
        except TimeoutError as err:
            raise OSError(
                f"{where}: no answer for {key} within {OPEN_TIMEOUT_S:g} s (is the network "
                "up? SYNISTER_REMOTE_TIMEOUT sets the wait)"
            ) from err
        except Exception as err:  # network or permission errors name the file they hit
            raise OSError(f"{where}: cannot read {key}: {describe_error(err)}") from err
        if result.state != "value":
            found[key] = None
            continue
        try:
            found[key] = json.loads(bytes(result.value))
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}/{key}: not valid JSON ({err})") from err
    return found


_CONTEXTS: dict[tuple[int, int], ts.Context] = {}


def reading_context(cache_bytes: int = 256 * 2**20) -> ts.Context:
    """The process's tensorstore context for reading with a chunk cache of ``cache_bytes``:
    volumes opened in one process share its cache (a chunk read by one is not fetched again by
    another), its requests in flight and its retry limits (see the module docstring)."""
    for name, value in _STALL_ENV.items():  # read when the first request is made
        os.environ.setdefault(name, value)
    key = (os.getpid(), int(cache_bytes))
    if key not in _CONTEXTS:
        spec: dict[str, Any] = {"cache_pool": {"total_bytes_limit": int(cache_bytes)}}
        for kind in ("http", "gcs", "s3"):
            spec[f"{kind}_request_concurrency"] = {"limit": REQUESTS_IN_FLIGHT}
            spec[f"{kind}_request_retries"] = dict(RETRIES)
        _CONTEXTS[key] = ts.Context(spec)
    return _CONTEXTS[key]
