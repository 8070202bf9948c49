"""Where a datatrove step keeps its files: a directory on this host, or a prefix in the
data root's bucket that every node of a Ray cluster reaches.

datatrove's Ray executor runs each task on whichever node has a free CPU, and every task
reads the previous stage's output, writes its own, and leaves completion markers and
stats in the logging directory: on several hosts all of that must be on storage they
share. datatrove reads and writes through fsspec, so the shared workspace hands it
`DataFolder`s on the pyarrow S3 filesystem the storage layer already uses (through
fsspec's `ArrowFSWrapper`: no s3fs, whose pins clash with ours), and the inputs as an
explicit list of objects (`ListedFiles`), since datatrove's `paths_file` must be a local
file.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.io import DataFolder, get_datafolder
from datatrove.pipeline.base import PipelineStep

from orchard.errors import OrchardError


class SharedFolder(DataFolder):
    """A datatrove folder on object storage. Its listings leave out the folder itself:
    pyarrow keeps a `dir/` marker object, which fsspec's `find(withdirs=True)` returns as
    an entry named "", and datatrove's exact dedup would then open `dups//00000...`."""

    def list_files(self, *args: Any, **kwargs: Any) -> list[str]:
        return [name for name in super().list_files(*args, **kwargs) if name.strip("/")]


class ListedFiles(DataFolder):
    """A datatrove folder whose files are exactly `files` (relative to `path`, in that
    order): datatrove shards a reader's files as `files[rank::world_size]`, as it does
    the lines of a `paths_file`. `files` is a constructor argument, so the folder pickles
    (fsspec rebuilds a filesystem from its arguments) into Ray tasks on any node."""

    def __init__(self, path: str, fs: Any = None, files: tuple[str, ...] = ()) -> None:
        super().__init__(path, fs=fs)
        self.files = list(files)

    def list_files(self, *args: Any, **kwargs: Any) -> list[str]:
        return list(self.files)


class WhereTasksRan(PipelineStep):
    """Records the host each task of a stage ran on (`<rank>.json` in `folder`, with the
    Ray node's address datatrove's Ray executor gives the task): which nodes a stage was
    spread over. It passes the documents through unchanged."""

    name = "📍 Where tasks ran"
    type = "📍 - RECORD"

    def __init__(self, folder: Any) -> None:
        super().__init__()
        self.folder = get_datafolder(folder)

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        record = {"rank": str(rank), "hostname": socket.gethostname()}
        nodes, index = os.environ.get("RAY_NODELIST"), os.environ.get("RAY_NODEID")
        if nodes and index is not None:  # set by datatrove's Ray executor
            record["address"] = nodes.split(",")[int(index)]
        with self.folder.open(f"{rank:05d}.json", "wt") as out:
            json.dump(record, out)
        if data:
            yield from data


@dataclass(frozen=True)
class Workspace:
    """The folders of a datatrove step. `local` is the step's work directory on this host;
    with `shared` (a `bucket/key` prefix on the pyarrow filesystem `filesystem`) the
    stages' folders are there instead, and `fetch` copies what the step publishes back
    into `local`."""

    local: Path
    shared: str | None = None
    filesystem: Any = None

    def _fs(self) -> Any:
        from fsspec.implementations.arrow import ArrowFSWrapper

        return ArrowFSWrapper(self.filesystem)

    def folder(self, *parts: str) -> Any:
        """A folder for datatrove: a local path, or a `DataFolder` in the shared prefix."""
        if self.shared is None:
            return str(self.local.joinpath(*parts))
        return SharedFolder("/".join([self.shared, *parts]), fs=self._fs())

    def inputs(self, files: list[tuple[str, Path]], name: str) -> dict[str, Any]:
        """A reader's input arguments for `files` ((published location, local copy)
        pairs, the location an `s3://` URI or a local path): a `paths_file` locally, a
        `ListedFiles` folder in the shared case. Sorted by location either way, so the
        tasks' shards are the same wherever they run."""
        ordered = sorted(files)
        if self.shared is None:
            listing = self.local / f"{name}.paths"
            listing.write_text("".join(f"{str(p).lstrip('/')}\n" for _, p in ordered))
            return {"data_folder": "/", "paths_file": str(listing)}
        keys = [location.removeprefix("s3://").split("/", 1) for location, _ in ordered]
        buckets = {bucket for bucket, _ in keys}
        if len(buckets) > 1:
            raise OrchardError(
                f"the inputs are in {len(buckets)} buckets ({', '.join(sorted(buckets))}): "
                "datatrove's Ray tasks read them from one, the data root's"
            )
        files = tuple(key for _, key in keys)
        return {"data_folder": ListedFiles(buckets.pop(), fs=self._fs(), files=files)}

    def read_json(self, *parts: str) -> Any:
        """A JSON file of the workspace, or None when there is none."""
        if self.shared is None:
            path = self.local.joinpath(*parts)
            return json.loads(path.read_text()) if path.exists() else None
        folder = self.folder(*parts[:-1])
        if not folder.isfile(parts[-1]):
            return None
        with folder.open(parts[-1], "rt") as handle:
            return json.load(handle)

    def fetch(self, *parts: str) -> Path:
        """`local/parts`, holding the files of the folder `parts` (copied from the shared
        prefix first, when there is one)."""
        target = self.local.joinpath(*parts)
        if self.shared is None:
            return target
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        folder = self.folder(*parts)
        for name in folder.list_files():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            with folder.open(name, "rb") as source, (target / name).open("wb") as out:
                shutil.copyfileobj(source, out)
        return target
