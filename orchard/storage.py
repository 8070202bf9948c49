"""The data root as one storage layer: a local directory or `s3://bucket/prefix`, through
pyarrow's filesystems (the same ones Ray Train writes checkpoints with).

Steps never write into object storage directly. `orchard.steps.run_step` hands a step's
body a local staging directory and publishes it here afterwards: on a local root by
renaming the directory into place, on S3 by uploading every data object first and
`manifest.json` last, so the manifest's presence is the publish marker and a reader
ignores a step directory without one. A step's inputs on S3 are downloaded into a local
cache keyed by the manifest's content hash (`localize`), so step bodies keep reading
local files.

The S3 endpoint and credentials come from the `s3_*` settings (MinIO: `s3_endpoint`
http://minio:9000; AWS: leave it unset and use the usual AWS credential chain when no keys
are set).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from orchard.errors import OrchardError

if TYPE_CHECKING:
    import pyarrow.fs as pafs

    from orchard.settings import Settings

SCHEMES = ("s3",)
CHUNK = 8 << 20


class StorageError(OrchardError):
    """The data root cannot be read or written (unreachable endpoint, missing bucket...)."""


def is_uri(location: str | Path) -> bool:
    """True for `s3://...` (any `scheme://`), false for a local path."""
    return "://" in str(location)


def join(base: str | Path, *parts: str) -> str:
    """`base/part/...` for a local path or a URI alike (pathlib would turn `s3://b` into
    `s3:/b`, a local folder named `s3:`)."""
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *(part.strip("/") for part in parts)])
    return str(Path(base, *parts))


def check_root(root: str) -> str:
    """`root` if Orchard can use it as its data root, else a one-line error."""
    if not is_uri(root):
        return root
    parsed = urlparse(root)
    if parsed.scheme not in SCHEMES:
        raise ValueError(
            f"{root!r}: a data root is a local directory or s3://bucket/prefix; "
            f"{parsed.scheme}:// is not supported"
        )
    if not parsed.netloc:
        raise ValueError(f"{root!r} names no bucket: write it as s3://bucket/prefix")
    return root.rstrip("/")


@dataclass(frozen=True)
class S3Options:
    endpoint: str | None = None  # http://host:port (MinIO, moto); None: AWS
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Options:
        key, secret = settings.s3_access_key, settings.s3_secret_key
        return cls(
            endpoint=settings.s3_endpoint,
            access_key=key.get_secret_value() if key else None,
            secret_key=secret.get_secret_value() if secret else None,
            region=settings.s3_region,
        )


@cache
def s3_filesystem(options: S3Options) -> pafs.S3FileSystem:
    """A pyarrow S3 filesystem for these options (also what Ray Train gets)."""
    import pyarrow.fs as pafs

    kwargs: dict = {"region": options.region}
    if options.access_key and options.secret_key:
        kwargs |= {"access_key": options.access_key, "secret_key": options.secret_key}
    if options.endpoint:
        endpoint = urlparse(options.endpoint)
        kwargs |= {"endpoint_override": endpoint.netloc, "scheme": endpoint.scheme or "https"}
    return pafs.S3FileSystem(**kwargs)


class Storage:
    """The data root: where step outputs live, and how to read and publish them.

    Locations are strings: absolute local paths, or `s3://bucket/key` URIs under `root`.
    `cache` is the local directory for downloaded inputs and for the staging of outputs
    bound for object storage.
    """

    def __init__(self, root: str | Path, *, s3: S3Options | None = None, cache: Path | None = None):
        import pyarrow.fs as pafs

        self.root = check_root(str(root))
        self.remote = is_uri(self.root)
        self.s3 = s3 or S3Options()
        self.fs: pafs.FileSystem = s3_filesystem(self.s3) if self.remote else pafs.LocalFileSystem()
        base = Path(self.root) if not self.remote else None
        self.cache = cache or (base.parent / ".orchard-cache" if base else Path(".orchard/cache"))

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        return cls(
            settings.data_dir, s3=S3Options.from_settings(settings), cache=settings.home / "cache"
        )

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    # -- locations -------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return join(self.root, *parts)

    def fs_path(self, location: str | Path) -> str:
        """The filesystem's own path of a location (`bucket/key` on S3)."""
        location = str(location)
        if self.remote:
            if not location.startswith("s3://"):
                raise StorageError(f"{location} is not in the data root {self.root}")
            return location.removeprefix("s3://").rstrip("/")
        return location

    def _wrap(self, error: OSError, what: str) -> StorageError:
        hint = (
            ": check ORCHARD_S3_ENDPOINT, ORCHARD_S3_ACCESS_KEY/_SECRET_KEY and the bucket"
            if self.remote
            else ""
        )
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return StorageError(f"cannot {what} ({first}){hint}")

    # -- reading ---------------------------------------------------------------------
    def is_file(self, location: str | Path) -> bool:
        import pyarrow.fs as pafs

        try:
            return self.fs.get_file_info(self.fs_path(location)).type == pafs.FileType.File
        except OSError as error:
            raise self._wrap(error, f"read {location}") from None

    def read_bytes(self, location: str | Path) -> bytes:
        try:
            with self.fs.open_input_stream(self.fs_path(location), compression=None) as stream:
                return stream.read()
        except OSError as error:
            raise self._wrap(error, f"read {location}") from None

    def read_text(self, location: str | Path) -> str:
        return self.read_bytes(location).decode()

    def files(self, location: str | Path) -> dict[str, int]:
        """Every file under `location` (relative path -> bytes); {} if there is none."""
        import pyarrow.fs as pafs

        base = self.fs_path(location)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as error:
            raise self._wrap(error, f"list {location}") from None
        return {
            info.path[len(base) + 1 :]: info.size
            for info in infos
            if info.type == pafs.FileType.File
        }

    def subdirs(self, location: str | Path) -> list[str]:
        """The names of the directories (prefixes) right under `location`."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.fs_path(location), allow_not_found=True)
        try:
            infos = self.fs.get_file_info(selector)
        except OSError as error:
            raise self._wrap(error, f"list {location}") from None
        return sorted(info.base_name for info in infos if info.type == pafs.FileType.Directory)

    def download(self, location: str, target: Path, names: list[str] | None = None) -> None:
        """Copy the files under `location` (or just `names`, relative) into `target`."""
        base = self.fs_path(location)
        for name in names if names is not None else sorted(self.files(location)):
            local = target / name
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                with (
                    self.fs.open_input_stream(f"{base}/{name}", compression=None) as stream,
                    local.open("wb") as out,
                ):
                    while chunk := stream.read(CHUNK):
                        out.write(chunk)
            except OSError as error:
                raise self._wrap(error, f"download {location}/{name}") from None

    # -- writing ---------------------------------------------------------------------
    def check_writable(self) -> None:
        """A missing bucket or a wrong endpoint as one clear line, before a step starts."""
        import pyarrow.fs as pafs

        if not self.remote:
            return
        bucket = urlparse(self.root).netloc
        try:
            info = self.fs.get_file_info(bucket)
        except OSError as error:
            raise self._wrap(error, f"reach the data root {self.root}") from None
        if info.type != pafs.FileType.Directory:
            where = self.s3.endpoint or "AWS S3"
            raise StorageError(
                f"the data root's bucket {bucket!r} does not exist at {where}: create it "
                "(e.g. `mc mb`, `aws s3 mb`) or fix ORCHARD_DATA_ROOT"
            )

    def upload_file(self, source: Path, location: str) -> None:
        try:
            with (
                source.open("rb") as data,
                self.fs.open_output_stream(self.fs_path(location), compression=None) as out,
            ):
                while chunk := data.read(CHUNK):
                    out.write(chunk)
        except OSError as error:
            raise self._wrap(error, f"upload {source} to {location}") from None

    def write_bytes(self, location: str, data: bytes) -> None:
        try:
            with self.fs.open_output_stream(self.fs_path(location), compression=None) as out:
                out.write(data)
        except OSError as error:
            raise self._wrap(error, f"write {location}") from None

    def delete_tree(self, location: str) -> None:
        """Remove everything under `location` (nothing there is fine)."""
        try:
            self.fs.delete_dir(self.fs_path(location))
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self._wrap(error, f"delete {location}") from None

    def delete(self, location: str) -> None:
        try:
            self.fs.delete_file(self.fs_path(location))
        except FileNotFoundError:
            pass
        except OSError as error:
            raise self._wrap(error, f"delete {location}") from None


def local_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """(relative name, path) of every file under `directory`, sorted, links followed."""
    for path in sorted(directory.rglob("*")):
        if path.is_dir():
            continue
        yield path.relative_to(directory).as_posix(), path


def publish_remote(
    store: Storage,
    staging: Path,
    final: str,
    manifest_name: str,
    render: Callable[[dict[str, int]], str],
) -> str:
    """Upload a finished staging directory to `final`: every data object first, the
    manifest last (its presence is the publish marker). Objects under `final` that this
    result does not have (left by an earlier failed or forced attempt) are deleted before
    the manifest goes up. `render(files)` gives the manifest's text from the published
    files (relative name -> bytes); it is returned."""
    published: dict[str, int] = {}
    for name, path in local_files(staging):
        if name == manifest_name:
            continue
        store.upload_file(path, join(final, name))
        published[name] = path.stat().st_size
    for name in store.files(final):
        if name not in published and name != manifest_name:
            store.delete(join(final, name))
    text = render(published)
    store.write_bytes(join(final, manifest_name), text.encode())
    return text


def cache_dir_for(store: Storage, location: str, manifest_text: str) -> Path:
    """The local copy of a published step directory, keyed by its manifest's content (a
    forced rebuild under the same key is a new manifest, so a new copy)."""
    digest = hashlib.sha256(manifest_text.encode()).hexdigest()[:16]
    parts = location.rstrip("/").rsplit("/", 2)
    return store.cache / "inputs" / parts[-2] / f"{parts[-1]}-{digest}"


def download_published(
    store: Storage, location: str, manifest_name: str, manifest_text: str, names: list[str]
) -> Path:
    """The local copy of a published step directory (downloaded once, then reused)."""
    target = cache_dir_for(store, location, manifest_text)
    if (target / manifest_name).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.parent / f".{target.name}.part-{uuid.uuid4().hex[:8]}"
    try:
        store.download(location, partial, names)
        (partial / manifest_name).write_text(manifest_text)
        try:
            os.replace(partial, target)
        except OSError:  # another process finished the same copy first
            if not (target / manifest_name).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def storage_for(location: str | Path, settings: Settings | None = None) -> Storage:
    """A `Storage` that can read `location` (a local path, or a URI under the configured
    S3 endpoint), for readers handed a manifest path rather than a data root."""
    if not is_uri(location):
        return Storage(Path(location).anchor or ".")
    if settings is None:
        from orchard.settings import load_settings

        settings = load_settings()
    bucket = urlparse(str(location)).netloc
    return Storage(
        f"s3://{bucket}", s3=S3Options.from_settings(settings), cache=settings.home / "cache"
    )
