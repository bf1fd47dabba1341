"""Where a store lives: a local path, or an fsspec URL (s3://, gs://, memory://, ...).

Local stores stay plain `pathlib.Path`s: they are memory-mapped and locked, and everything written to them
is renamed into place. A URL becomes a `upath.UPath` (universal-pathlib: the pathlib API over fsspec), so the
zarr backend reads and writes an object store through the same path operations, and zarr itself through its
`FsspecStore`. `file://` URLs are local paths (never a folder named `file:`).

Credentials and endpoints come from each filesystem's own configuration: for s3 the AWS variables and files
(`AWS_PROFILE`, `AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL` for an S3-compatible server, ...), for gs
`GOOGLE_APPLICATION_CREDENTIALS`; fsspec's `FSSPEC_<PROTOCOL>_<OPTION>` variables set any other option.

Training reads a remote store through a local read-through cache: each shard file is downloaded once, checked,
and kept under `$AFTPIPE_REMOTE_CACHE` (default `~/.cache/aftpipe/remote`) named by its checksum, then
memory-mapped like a local shard, so random batches cost what they cost locally.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from aftpipe.errors import AftpipeError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}  # protocol → the aftpipe extra that installs it


def is_url(where: str | os.PathLike) -> bool:
    """Whether `where` is written as a URL (`proto://...`); `file://` counts (it is turned into a path)."""
    return isinstance(where, str) and bool(_URL.match(where))


def is_remote(path: Any) -> bool:
    """Whether `path` (as returned by `location`) lives behind fsspec rather than on the local filesystem."""
    return not isinstance(path, Path)


def location(where: str | os.PathLike) -> Any:
    """A local `Path`, or a `UPath` for a URL other than `file://`."""
    if isinstance(where, Path) or (not isinstance(where, str) and is_remote(where) and hasattr(where, "fs")):
        return where  # already a location (a UPath is not a Path)
    if not is_url(where):
        return Path(where)
    where = str(where)
    if where.startswith("file://"):
        parsed = urlparse(where)
        if parsed.netloc not in ("", "localhost"):
            raise AftpipeError(f"{where} names the host `{parsed.netloc}`; a file:// URL is a local path, written "
                               "file:///absolute/path")
        return Path(unquote(parsed.path))
    try:
        from upath import UPath
    except ImportError:
        raise AftpipeError(f"{where} is an fsspec URL, which needs universal-pathlib; pip install "
                           f"'aftpipe[{EXTRAS.get(where.split(':', 1)[0], 'remote')}]'") from None
    try:
        return UPath(where)
    except (ImportError, ValueError) as e:  # no fsspec implementation for the protocol
        extra = EXTRAS.get(where.split(":", 1)[0])
        how = f"pip install 'aftpipe[{extra}]'" if extra else "install the fsspec package for its protocol"
        raise AftpipeError(f"cannot open {where} ({_first_line(e)}); {how}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


@contextlib.contextmanager
def remote_errors(path: Any, doing: str) -> Iterator[None]:
    """Errors of an object store's client (missing credentials, no such bucket, access denied, no route to
    the endpoint) as one-line AftpipeErrors that keep the library's own message."""
    if not is_remote(path):
        yield
        return
    try:
        yield
    except (AftpipeError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - every client library has its own exception tree
        scheme = str(path).split(":", 1)[0]
        raise AftpipeError(f"cannot {doing} {path} ({_first_line(e)}); check the {scheme} credentials and "
                           "endpoint this process sees (its environment and config files)") from None


def fresh(path: Any) -> Any:
    """`path` with its filesystem's listing cache dropped: zarr writes through its own client, so a cached
    listing could miss what it wrote."""
    if is_remote(path):
        path.fs.invalidate_cache()
    return path


def remove(path: Any) -> None:
    """Remove a file or a folder tree, local or remote; nothing there is fine."""
    if is_remote(path):
        if path.exists():
            path.fs.rm(path.path, recursive=True)
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def write_bytes(path: Any, data: bytes) -> None:
    """Write a whole file so that readers see the old bytes or the new ones, never a part: a rename
    locally; an object store's PUT is already all-or-nothing."""
    if is_remote(path):
        path.write_bytes(data)
        return
    from aftpipe.fileio import write_atomic

    write_atomic(path, data)


def zarr_store(path: Any, read_only: bool = False) -> Any:
    """What zarr opens for `path`: the local path as a string, or an FsspecStore for a URL."""
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(path), storage_options=dict(path.storage_options), read_only=read_only)


def cache_root() -> Path:
    """Where remote stores' shards (and heads fitted on them) are cached locally."""
    env = os.environ.get("AFTPIPE_REMOTE_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "aftpipe" / "remote"


def cache_folder(path: Any) -> Path:
    """The local folder caching the remote store `path`: named by a hash of its URL, readable by a person."""
    url = str(path).rstrip("/")
    return cache_root() / f"{url.rsplit('/', 1)[-1]}-{hashlib.sha256(url.encode()).hexdigest()[:16]}"


__all__ = ["cache_folder", "cache_root", "fresh", "is_remote", "is_url", "location", "remote_errors", "remove",
           "write_bytes", "zarr_store"]
