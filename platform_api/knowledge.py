"""Knowledge bases: storing uploads, ingesting them in the background, searching them.

`Knowledge` (one per app, `app.state.knowledge`) owns the vector store, the embedder
(loaded on first use) and one ingestion thread. An upload is stored as the original
bytes under `<home>/knowledge/files/<user id>/<file id>` (under `<data root>/knowledge/
files/` instead when the data root is on S3, through `orchard.storage`) and a
`KnowledgeFile` row in state `queued`; the thread then parses it (`parsing`), embeds its
chunks (`embedding`) and adds them to the store in one batch (`ready`); chunks whose text
reads like instructions to the model are recorded as `KnowledgeFlag`s for administrators. A file
that fails is `failed` with the reason and has no chunk in the store: whatever was added
is deleted again, also when the file was deleted while it was being indexed. Files still
queued or half-done when the server stopped are queued again at start-up.

Ownership: a knowledge base and its files are found by id *and* owner (another user's is
404, like one that does not exist), and every store call names the owner, so neither an
id nor a search can reach another user's chunks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi import UploadFile
from sqlalchemy import Engine
from sqlmodel import Session, select

from orchard.knowledge.chunking import chunk_sections
from orchard.knowledge.embeddings import Embedder, EmbeddingModelError, load_embedder
from orchard.knowledge.files import (
    MEDIA_TYPES,
    FileLimits,
    FileRejected,
    parse_file,
    safe_filename,
    sniff,
)
from orchard.knowledge.injection import detect_injection
from orchard.knowledge.vectors import (
    Chunk,
    EmbeddingMismatch,
    Hit,
    VectorStore,
    VectorStoreError,
    open_store,
)
from orchard.settings import Settings
from orchard.storage import Storage, StorageError, is_uri
from platform_api.errors import ApiError, not_found
from platform_api.models import (
    KnowledgeBase,
    KnowledgeFile,
    KnowledgeFlag,
    User,
    new_id,
    utcnow,
)
from platform_api.request_limits import upload_too_large

log = logging.getLogger("orchard.knowledge")

UNFINISHED = ("queued", "parsing", "embedding")
# What a user meets on a base of the previous embedding model (platform_api/reembedding.py).
REEMBED_HINT = (
    " (in the platform: the base is re-embedded by the job an administrator starts at "
    "POST /api/v1/admin/knowledge/re-embed, or at the next start; try again when it is done)"
)


def collection_name(base_id: str) -> str:
    """A base's first collection (until re-embedding switches it: `collection_of`)."""
    return f"kb_{base_id}"


def collection_of(base: KnowledgeBase) -> str:
    """The collection `base`'s chunks are in now."""
    return base.collection or collection_name(base.id)


def owned_base(session: Session, user: User, base_id: str) -> KnowledgeBase:
    base = session.exec(
        select(KnowledgeBase).where(KnowledgeBase.id == base_id, KnowledgeBase.user_id == user.id)
    ).first()
    if base is None:
        raise not_found("knowledge base")
    return base


def owned_file(session: Session, user: User, base: KnowledgeBase, file_id: str) -> KnowledgeFile:
    file = session.exec(
        select(KnowledgeFile).where(
            KnowledgeFile.id == file_id,
            KnowledgeFile.knowledge_base_id == base.id,
            KnowledgeFile.user_id == user.id,
        )
    ).first()
    if file is None:
        raise not_found("file")
    return file


class Knowledge:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.limits = FileLimits.from_settings(settings)
        self.files_dir = settings.home / "knowledge" / "files"
        # Originals on S3 when the data root is there (the data steps' Storage layer),
        # else under files_dir.
        remote = settings.data_root is not None and is_uri(settings.data_root)
        self.originals: Storage | None = Storage.from_settings(settings) if remote else None
        self._store: VectorStore | None = None
        self._lock = threading.Lock()
        # One thread ingests files and runs re-embedding jobs (reembedding.py), so a file is
        # never added to a base while its vectors are rebuilt.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orchard-ingest")
        self.stopping = threading.Event()  # set at shutdown: a running job stops

    # -- resources, opened on first use ---------------------------------------------------
    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.settings)
            return self._store

    @property
    def embedder(self) -> Embedder:
        return load_embedder(self.settings.embedding_model)

    def original(self, file: KnowledgeFile) -> Path:
        return self.files_dir / file.user_id / file.id

    def _remote_original(self, user_id: str, file_id: str = "") -> str:
        assert self.originals is not None
        return self.originals.join("knowledge", "files", user_id, *([file_id] if file_id else []))

    def read_original(self, file: KnowledgeFile) -> bytes:
        if self.originals is not None:
            return self.originals.read_bytes(self._remote_original(file.user_id, file.id))
        return self.original(file).read_bytes()

    def delete_original(self, file: KnowledgeFile) -> None:
        if self.originals is not None:
            self.originals.delete(self._remote_original(file.user_id, file.id))
        else:
            self.original(file).unlink(missing_ok=True)

    def collection(self, base_id: str) -> str:
        """The collection base `base_id` reads now (read from the database each time: a
        re-embedding job switches it)."""
        with Session(self.engine) as session:
            base = session.get(KnowledgeBase, base_id)
            return collection_of(base) if base is not None else collection_name(base_id)

    # -- uploads ------------------------------------------------------------------------
    def store_original(self, user_id: str, file_id: str, data: bytes) -> str:
        """Write the upload (atomically: renamed into place, or one S3 PUT) and return its
        SHA-256."""
        if self.originals is not None:
            self.originals.write_bytes(self._remote_original(user_id, file_id), data)
            return hashlib.sha256(data).hexdigest()
        path = self.files_dir / user_id / file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{file_id}.part")
        staging.write_bytes(data)
        os.replace(staging, path)
        return hashlib.sha256(data).hexdigest()

    def submit(self, file_id: str) -> None:
        self._executor.submit(self._ingest_logged, file_id)

    def submit_job(self, work: Callable[[], None]) -> None:
        """Run `work` (a re-embedding job) on the ingestion thread, after the files queued
        before it and before those queued after it."""
        self._executor.submit(work)

    def resume(self) -> None:
        """Queue again what a stopped server left unfinished."""
        with Session(self.engine) as session:
            files = session.exec(
                select(KnowledgeFile).where(KnowledgeFile.status.in_(UNFINISHED))
            ).all()
            for file in files:
                file.status, file.updated_at = "queued", utcnow()
                session.add(file)
            session.commit()
            ids = [file.id for file in files]
        for file_id in ids:
            self.submit(file_id)

    def _ingest_logged(self, file_id: str) -> None:
        try:
            self.ingest(file_id)
        except Exception:  # the thread must go on with the next file
            log.exception("ingesting knowledge file %s failed", file_id)

    def ingest(self, file_id: str) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            file = session.get(KnowledgeFile, file_id)
            if file is None or file.status != "queued":
                return
            self._set(session, file, status="parsing")
        collection = self.collection(file.knowledge_base_id)
        try:
            parsed = parse_file(self.read_original(file), file.filename, self.limits)
            pieces = chunk_sections(parsed.sections)
            with Session(self.engine, expire_on_commit=False) as session:
                file = session.get(KnowledgeFile, file_id)
                if file is None:
                    return
                self._set(session, file, status="embedding", pages=parsed.pages,
                          media_type=parsed.media_type)  # fmt: skip
            embedder = self.embedder
            vectors = embedder.embed([piece.embedding_text for piece in pieces])
            chunks = [
                Chunk(
                    id=new_id(),
                    owner=file.user_id,
                    file_id=file.id,
                    seq=i,
                    text=piece.text,
                    source=file.filename,
                    page=piece.page,
                    heading=piece.heading,
                )  # fmt: skip
                for i, piece in enumerate(pieces)
            ]
            flags = [(chunk, detect_injection(chunk.text)) for chunk in chunks]
            self.store.create_collection(collection, embedder.model)
            self.store.add(collection, chunks, vectors, embedder.model)
        except FileRejected as error:
            self._fail(file, collection, str(error))
            return
        except EmbeddingMismatch as error:
            self._fail(file, collection, f"indexing failed: {error}{REEMBED_HINT}")
            return
        except (VectorStoreError, EmbeddingModelError, StorageError, OSError) as error:
            self._fail(file, collection, f"indexing failed: {error}")
            return
        except Exception as error:
            log.exception("indexing %s failed", file_id)
            self._fail(file, collection, f"indexing failed ({type(error).__name__}): retry later")
            return
        with Session(self.engine) as session:
            current = session.get(KnowledgeFile, file_id)
            if current is None:  # deleted while it was indexed
                self.store.delete(collection, owner=file.user_id, file_id=file.id)
                return
            base = session.get(KnowledgeBase, file.knowledge_base_id)
            base.embedding_model = embedder.model.name
            base.embedding_dimension = embedder.model.dimension
            session.add(base)
            session.add_all(
                KnowledgeFlag(
                    user_id=file.user_id,
                    knowledge_base_id=file.knowledge_base_id,
                    file_id=file.id,
                    chunk_id=chunk.id,
                    page=chunk.page,
                    rule=flag.rule,
                    excerpt=flag.excerpt,
                )  # fmt: skip
                for chunk, flag in flags
                if flag is not None
            )
            self._set(session, current, status="ready", chunks=len(chunks))

    def _fail(self, file: KnowledgeFile, collection: str, reason: str) -> None:
        try:
            self.store.delete(collection, owner=file.user_id, file_id=file.id)
        except VectorStoreError:
            pass  # no collection yet: nothing was added
        with Session(self.engine) as session:
            current = session.get(KnowledgeFile, file.id)
            if current is not None:
                self._set(session, current, status="failed", error=reason[:2000], chunks=0)

    @staticmethod
    def _set(session: Session, file: KnowledgeFile, **fields) -> None:
        for name, value in fields.items():
            setattr(file, name, value)
        file.updated_at = utcnow()
        session.add(file)
        session.commit()

    # -- reads ---------------------------------------------------------------------------
    def search(
        self, user: User, base: KnowledgeBase, query: str, k: int, file_ids: list[str] | None
    ) -> list[Hit]:
        """The user's best chunks of `base` for `query` (hybrid search)."""
        if self.store.collection_model(collection_of(base)) is None:
            return []  # nothing indexed yet
        embedder = self.embedder
        try:
            return self.store.search(
                collection_of(base),
                owner=user.id,
                text=query,
                vector=embedder.embed([query])[0],
                model=embedder.model,
                k=k,
                file_ids=file_ids,
            )
        except EmbeddingMismatch as error:
            raise ApiError(409, "embedding_model_changed", f"{error}{REEMBED_HINT}") from None

    def chunks(self, user: User, base: KnowledgeBase, file_id: str | None = None) -> list[Chunk]:
        return self.store.chunks(collection_of(base), owner=user.id, file_id=file_id)

    def vectors(self, user: User, base: KnowledgeBase) -> dict[str, list[float]]:
        return self.store.vectors(collection_of(base), owner=user.id)

    # -- deletes -------------------------------------------------------------------------
    def delete_file(self, file: KnowledgeFile) -> None:
        """The file's chunks and original (the caller deletes the row)."""
        self.store.delete(self.collection(file.knowledge_base_id), owner=file.user_id,
                          file_id=file.id)  # fmt: skip
        self.delete_original(file)

    def delete_base(self, base: KnowledgeBase, files: list[KnowledgeFile]) -> None:
        self.store.drop_collection(collection_of(base))
        for file in files:
            self.delete_original(file)

    def erase_user(self, session: Session, user_id: str) -> None:
        """Everything of the user's: collections, originals (the caller deletes the rows)."""
        bases = session.exec(select(KnowledgeBase).where(KnowledgeBase.user_id == user_id))
        for base in bases:
            self.store.drop_collection(collection_of(base))
        if self.originals is not None:
            self.originals.delete_tree(self._remote_original(user_id))
        shutil.rmtree(self.files_dir / user_id, ignore_errors=True)

    def close(self) -> None:
        self.stopping.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def accept_upload(
    session: Session, knowledge: Knowledge, user: User, base: KnowledgeBase, file: UploadFile
) -> KnowledgeFile:
    """Check an upload's size and kind, store the original and queue it for indexing."""
    limit = knowledge.limits.max_bytes
    data = file.file.read(limit + 1)
    if len(data) > limit:
        raise upload_too_large(limit)
    filename = safe_filename(file.filename or "")
    try:
        kind = sniff(data, filename)
    except FileRejected as error:
        raise ApiError(415, "unsupported_file", str(error)) from None
    row = KnowledgeFile(
        id=new_id(),
        knowledge_base_id=base.id,
        user_id=user.id,
        filename=filename,
        media_type=MEDIA_TYPES[kind],
        size_bytes=len(data),
        sha256="",
    )
    try:
        row.sha256 = knowledge.store_original(user.id, row.id, data)
    except StorageError as error:
        raise ApiError(503, "storage_unavailable", f"the upload was not stored: {error}") from None
    session.add(row)
    base.updated_at = utcnow()
    session.add(base)
    session.commit()
    knowledge.submit(row.id)
    return row
