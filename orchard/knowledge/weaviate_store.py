"""The production vector store: a Weaviate server (weaviate-client v4).

One Weaviate collection per Orchard collection (`kb_ab12` → `Kb_ab12`: Weaviate class
names start upper-case), vectors provided by Orchard (no Weaviate vectorizer), BM25 on
`text` and hybrid queries fused by relative score. The owner is a filtered property on
every read and delete. The embedding model is stored as JSON in the collection's
description. Objects are imported in fixed-size batches; a batch with failed objects
is deleted again and raises, so a file is never half-indexed.

No Weaviate server runs on Orchard's build machine: the contract tests
(tests/unit/test_vector_stores.py) run against one when ORCHARD_WEAVIATE_URL is set.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from urllib.parse import urlsplit

import numpy as np

from orchard.knowledge.embeddings import EmbeddingModel
from orchard.knowledge.vectors import (
    Chunk,
    Hit,
    SearchMode,
    VectorStoreError,
    check_collection,
    check_id,
    check_model,
    check_vectors,
    search_mode,
)

BATCH_SIZE = 100


def _class_name(name: str) -> str:
    name = check_collection(name)
    return name[0].upper() + name[1:]


class WeaviateStore:
    def __init__(self, client) -> None:
        self.client = client

    @classmethod
    def connect(cls, url: str, *, grpc_port: int = 50051, api_key: str | None = None):
        import weaviate
        from weaviate.auth import Auth

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VectorStoreError(
                f"ORCHARD_WEAVIATE_URL={url!r} is not a URL: use http://host:8080"
            )
        secure = parts.scheme == "https"
        try:
            client = weaviate.connect_to_custom(
                http_host=parts.hostname,
                http_port=parts.port or (443 if secure else 80),
                http_secure=secure,
                grpc_host=parts.hostname,
                grpc_port=grpc_port,
                grpc_secure=secure,
                auth_credentials=Auth.api_key(api_key) if api_key else None,
            )
        except Exception as error:  # the client raises its own connection errors
            raise VectorStoreError(
                f"cannot reach Weaviate at {url} (gRPC port {grpc_port}): {error}: start it "
                "or fix ORCHARD_WEAVIATE_URL / ORCHARD_WEAVIATE_GRPC_PORT"
            ) from None
        return cls(client)

    # -- collections ----------------------------------------------------------------
    def collection_model(self, name: str) -> EmbeddingModel | None:
        cname = _class_name(name)
        if not self.client.collections.exists(cname):
            return None
        config = self.client.collections.use(cname).config.get()
        data = json.loads(config.description or "{}")
        if "embedding_model" not in data:
            raise VectorStoreError(f"Weaviate collection {cname} was not made by Orchard")
        return EmbeddingModel(data["embedding_model"], int(data["dimension"]))

    def create_collection(self, name: str, model: EmbeddingModel) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization

        stored = self.collection_model(name)
        if stored is not None:
            check_model(name, stored, model)
            return
        keyword = Tokenization.FIELD
        self.client.collections.create(
            _class_name(name),
            description=json.dumps({"embedding_model": model.name, "dimension": model.dimension}),
            vector_config=Configure.Vectors.self_provided(),
            properties=[
                Property(name="owner", data_type=DataType.TEXT, tokenization=keyword),
                Property(name="file_id", data_type=DataType.TEXT, tokenization=keyword),
                Property(name="seq", data_type=DataType.INT),
                Property(name="text", data_type=DataType.TEXT),
                Property(name="source", data_type=DataType.TEXT, skip_vectorization=True),
                Property(name="page", data_type=DataType.INT),
                Property(name="heading", data_type=DataType.TEXT),
                Property(name="chunk_id", data_type=DataType.TEXT, tokenization=keyword),
            ],
        )

    def drop_collection(self, name: str) -> None:
        cname = _class_name(name)
        if self.client.collections.exists(cname):
            self.client.collections.delete(cname)

    def _collection(self, name: str, model: EmbeddingModel | None = None):
        stored = self.collection_model(name)
        if model is not None:
            check_model(name, stored, model)
        elif stored is None:
            return None
        return self.client.collections.use(_class_name(name))

    # -- writes -----------------------------------------------------------------------
    def add(
        self, name: str, chunks: Sequence[Chunk], vectors: np.ndarray, model: EmbeddingModel
    ) -> None:
        check_vectors(chunks, vectors, model)
        collection = self._collection(name, model)
        with collection.batch.fixed_size(batch_size=BATCH_SIZE) as batch:
            for chunk, vector in zip(chunks, vectors.tolist(), strict=True):
                check_id(chunk.owner, "owner")
                check_id(chunk.file_id, "file id")
                batch.add_object(properties=_properties(chunk), uuid=_uuid(chunk.id), vector=vector)
        failed = collection.batch.failed_objects
        if failed:
            from weaviate.classes.query import Filter

            ids = [_uuid(chunk.id) for chunk in chunks]
            collection.data.delete_many(where=Filter.by_id().contains_any(ids))
            raise VectorStoreError(
                f"Weaviate refused {len(failed)} of {len(chunks)} chunks (first: "
                f"{failed[0].message}); none were kept"
            )

    def delete(self, name: str, *, owner: str, file_id: str | None = None) -> None:
        collection = self._collection(name)
        if collection is not None:
            collection.data.delete_many(where=_filter(owner, [file_id] if file_id else None))

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
        from weaviate.classes.query import HybridFusion, MetadataQuery

        collection = self._collection(name, model)
        where = _filter(owner, file_ids)
        mode = search_mode(text, mode, file_ids)
        if mode is None:
            return []
        query = np.asarray(vector, dtype=np.float32).tolist()
        metadata = MetadataQuery(score=True, distance=True)
        if mode == "vector":
            result = collection.query.near_vector(
                near_vector=query, limit=k, filters=where, return_metadata=metadata
            )
            return [Hit(_chunk(o), 1.0 - (o.metadata.distance or 0.0)) for o in result.objects]
        if mode == "keyword":
            result = collection.query.bm25(
                query=text, query_properties=["text"], limit=k, filters=where,
                return_metadata=metadata,
            )  # fmt: skip
        else:
            result = collection.query.hybrid(
                query=text, vector=query, alpha=0.5, query_properties=["text"],
                fusion_type=HybridFusion.RELATIVE_SCORE, limit=k, filters=where,
                return_metadata=metadata,
            )  # fmt: skip
        return [Hit(_chunk(o), float(o.metadata.score or 0.0)) for o in result.objects]

    def _objects(self, name: str, where, *, vectors: bool = False) -> list:
        collection = self._collection(name)
        if collection is None:
            return []
        found, offset = [], 0
        while True:  # pages of filtered objects (the cursor API takes no filter)
            page = collection.query.fetch_objects(
                filters=where, limit=BATCH_SIZE, offset=offset, include_vector=vectors
            ).objects
            found += page
            offset += len(page)
            if len(page) < BATCH_SIZE:
                return found

    def chunks(self, name: str, *, owner: str, file_id: str | None = None) -> list[Chunk]:
        objects = self._objects(name, _filter(owner, [file_id] if file_id else None))
        return sorted((_chunk(o) for o in objects), key=lambda c: (c.file_id, c.seq))

    def vectors(self, name: str, *, owner: str) -> dict[str, list[float]]:
        objects = self._objects(name, _filter(owner, None), vectors=True)
        return {o.properties["chunk_id"]: list(o.vector["default"]) for o in objects}

    def all_chunks(self, name: str) -> list[Chunk]:
        collection = self._collection(name)
        if collection is None:
            return []
        chunks = [_chunk(o) for o in collection.iterator()]
        return sorted(chunks, key=lambda c: (c.file_id, c.seq))

    def close(self) -> None:
        self.client.close()


def _uuid(chunk_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"orchard-chunk:{chunk_id}"))


def _properties(chunk: Chunk) -> dict:
    return {
        "owner": chunk.owner,
        "file_id": chunk.file_id,
        "seq": chunk.seq,
        "text": chunk.text,
        "source": chunk.source,
        "page": chunk.page,
        "heading": chunk.heading,
        "chunk_id": chunk.id,
    }


def _chunk(obj) -> Chunk:
    p = obj.properties
    return Chunk(
        id=p["chunk_id"],
        owner=p["owner"],
        file_id=p["file_id"],
        seq=int(p["seq"]),
        text=p["text"],
        source=p["source"],
        page=None if p.get("page") is None else int(p["page"]),
        heading=p.get("heading") or "",
    )


def _filter(owner: str, file_ids: Sequence[str] | None):
    from weaviate.classes.query import Filter

    where = Filter.by_property("owner").equal(check_id(owner, "owner"))
    if file_ids:
        ids = [check_id(f, "file id") for f in file_ids]
        where = where & Filter.by_property("file_id").contains_any(ids)
    return where
