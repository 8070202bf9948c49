"""The embedded vector store: LanceDB in a directory, one table per collection.

LanceDB (Apache Arrow tables on disk, no server) answers vector, full-text (its own BM25
index over `text`) and hybrid queries, the two fused by reciprocal rank; rows added after
the full-text index was built are searched too. Each table has a sidecar
`<name>.model.json` naming the embedding model of its vectors. Filters are SQL strings:
every value put into one is checked by `check_id` first.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import lancedb
import numpy as np
import pyarrow as pa

from orchard.knowledge.embeddings import EmbeddingModel
from orchard.knowledge.vectors import (
    Chunk,
    EmbeddingMismatch,
    Hit,
    SearchMode,
    VectorStoreError,
    check_collection,
    check_id,
    check_model,
    check_vectors,
    search_mode,
)

FIELDS = ("id", "owner", "file_id", "seq", "text", "source", "page", "heading")


def _schema(dimension: int) -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("owner", pa.string(), nullable=False),
            pa.field("file_id", pa.string(), nullable=False),
            pa.field("seq", pa.int32(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("page", pa.int32(), nullable=True),
            pa.field("heading", pa.string(), nullable=False),
            pa.field("vector", pa.list_(pa.float32(), dimension), nullable=False),
        ]
    )


def _chunk(row: dict) -> Chunk:
    return Chunk(**{name: row[name] for name in FIELDS})


class LanceStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = lancedb.connect(str(self.root))
        self._lock = threading.Lock()  # create/drop and index builds, within this process

    # -- collections ----------------------------------------------------------------
    def _model_file(self, name: str) -> Path:
        return self.root / f"{check_collection(name)}.model.json"

    def collection_model(self, name: str) -> EmbeddingModel | None:
        try:
            data = json.loads(self._model_file(name).read_text())
        except FileNotFoundError:
            return None
        return EmbeddingModel(name=data["name"], dimension=int(data["dimension"]))

    def create_collection(self, name: str, model: EmbeddingModel) -> None:
        with self._lock:
            stored = self.collection_model(name)
            if stored is not None:
                check_model(name, stored, model)
                return
            self.db.create_table(name, schema=_schema(model.dimension), exist_ok=True)
            staging = self._model_file(name).with_suffix(".tmp")
            staging.write_text(json.dumps({"name": model.name, "dimension": model.dimension}))
            os.replace(staging, self._model_file(name))  # the collection exists from here

    def drop_collection(self, name: str) -> None:
        with self._lock:
            self._model_file(name).unlink(missing_ok=True)
            try:
                self.db.drop_table(name)
            except (FileNotFoundError, ValueError):
                shutil.rmtree(self.root / f"{name}.lance", ignore_errors=True)

    def _table(self, name: str, model: EmbeddingModel | None = None):
        stored = self.collection_model(name)
        if model is not None:
            check_model(name, stored, model)
        elif stored is None:
            return None
        return self.db.open_table(name)

    # -- writes -----------------------------------------------------------------------
    def add(
        self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray, model: EmbeddingModel
    ) -> None:
        check_vectors(chunks, vectors, model)
        if not chunks:
            return
        for chunk in chunks:
            check_id(chunk.owner, "owner")
            check_id(chunk.file_id, "file id")
        table = self._table(name, model)
        rows = [
            {**{field: getattr(c, field) for field in FIELDS}, "vector": v}
            for c, v in zip(chunks, vectors.astype(np.float32).tolist(), strict=True)
        ]
        table.add(pa.Table.from_pylist(rows, schema=_schema(model.dimension)))
        with self._lock:
            if not any(index.index_type == "FTS" for index in table.list_indices()):
                table.create_fts_index("text", replace=True)

    def delete(self, name: str, *, owner: str, file_id: str | None = None) -> None:
        table = self._table(name)
        if table is not None:
            table.delete(_where(owner, [file_id] if file_id else None))

    # -- reads ------------------------------------------------------------------------
    def search(
        self,
        name: str,
        *,
        owner: str,
        text: str,
        vector: np.ndarray,
        model: EmbeddingModel,
        k: int = 5,
        mode: SearchMode = "hybrid",
        file_ids: Sequence[str] | None = None,
    ) -> list[Hit]:
        table = self._table(name, model)
        where = _where(owner, file_ids)
        mode = search_mode(text, mode, file_ids)
        if mode is None or table.count_rows() == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).tolist()
        if mode == "vector":
            rows = table.search(query).where(where, prefilter=True).limit(k).to_list()
            return [Hit(_chunk(r), 1.0 - float(r["_distance"]) / 2) for r in rows]
        if mode == "keyword":
            builder = table.search(text, query_type="fts", fts_columns="text")
            rows = builder.where(where, prefilter=True).limit(k).to_list()
            return [Hit(_chunk(r), float(r["_score"])) for r in rows]
        builder = table.search(query_type="hybrid", fts_columns="text").vector(query).text(text)
        rows = builder.where(where, prefilter=True).limit(k).to_list()
        return [Hit(_chunk(r), float(r["_relevance_score"])) for r in rows]

    def chunks(self, name: str, *, owner: str, file_id: str | None = None) -> list[Chunk]:
        rows = self._rows(name, _where(owner, [file_id] if file_id else None))
        return sorted((_chunk(r) for r in rows), key=lambda c: (c.file_id, c.seq))

    def vectors(self, name: str, *, owner: str) -> dict[str, list[float]]:
        return {r["id"]: list(r["vector"]) for r in self._rows(name, _where(owner, None))}

    def all_chunks(self, name: str) -> list[Chunk]:
        return sorted((_chunk(r) for r in self._rows(name, None)), key=lambda c: (c.file_id, c.seq))

    def _rows(self, name: str, where: str | None) -> list[dict]:
        table = self._table(name)
        if table is None:
            return []
        query = table.search()
        if where:
            query = query.where(where)
        return query.limit(None).to_list() if table.count_rows() else []

    def close(self) -> None:
        pass


def _where(owner: str, file_ids: Sequence[str] | None) -> str:
    clause = f"owner = '{check_id(owner, 'owner')}'"
    if file_ids:
        ids = ", ".join(f"'{check_id(f, 'file id')}'" for f in file_ids)
        clause += f" AND file_id IN ({ids})"
    return clause


__all__ = ["LanceStore", "EmbeddingMismatch", "VectorStoreError"]
