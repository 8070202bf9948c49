"""Re-embedding knowledge bases when the platform's embedding model changes.

A base's vectors are of the model named on its row (`KnowledgeBase.embedding_model`); when
`ORCHARD_EMBEDDING_MODEL` names another, the base is *stale*: searching it is 409
`embedding_model_changed` and a new file fails, because vectors of two models never mix.
A re-embedding job (`KnowledgeReEmbedJob`, one at a time) rebuilds every stale base:

1. its chunks are read from the collection the base uses now and embedded again with the
   new model into a new collection beside it, `kb_<base id>_<model tag>` (a collection of
   that name left by an interrupted run is dropped first);
2. when every chunk is in, one UPDATE switches the base's row to the new collection,
   model and dimension (a base deleted meanwhile: the new collection is dropped);
3. chunks of files deleted while the base was rebuilt are deleted from the new collection,
   and the old collection is dropped.

So a base always reads one complete collection of one model: before the switch the old
one, after it the new one, whether the job finishes, fails or is interrupted, and running
it again only redoes the bases still stale. The job runs on the knowledge ingestion
thread (`Knowledge.submit_job`), so no file is ingested into a base while it is rebuilt;
uploads wait behind it. It stops between batches at shutdown (failed, "interrupted").

Started by an administrator (`POST /admin/knowledge/re-embed`) or at start-up when a
base is stale (`start_if_stale`: one query by model name, no model loaded). Shared
knowledge bases (the crawled site) are rebuilt by running `orchard_index` again.
"""

from __future__ import annotations

import hashlib
import logging

from sqlalchemy import Engine, func, or_, update
from sqlmodel import Session, select

from orchard.knowledge.embeddings import EmbeddingModel, model_name
from orchard.knowledge.vectors import embed_into
from platform_api.knowledge import Knowledge, collection_of
from platform_api.models import KnowledgeBase, KnowledgeFile, KnowledgeReEmbedJob, utcnow

log = logging.getLogger("orchard.knowledge.reembed")


class Interrupted(Exception):
    """The platform is stopping: the job ends between two batches."""


def model_tag(model: EmbeddingModel) -> str:
    """A short, stable tag of a model for collection names (they allow [a-z0-9_] only)."""
    return hashlib.sha256(f"{model.name}\n{model.dimension}".encode()).hexdigest()[:10]


def aside_collection(base_id: str, model: EmbeddingModel) -> str:
    return f"kb_{base_id}_{model_tag(model)}"


def stale_bases(session: Session, name: str, dimension: int | None = None) -> list[KnowledgeBase]:
    """Bases holding vectors of a model other than `name` (and `dimension`, when known)."""
    other = KnowledgeBase.embedding_model != name
    if dimension is not None:
        other = or_(other, KnowledgeBase.embedding_dimension != dimension)
    query = select(KnowledgeBase).where(KnowledgeBase.embedding_model.is_not(None), other)
    return list(session.exec(query.order_by(KnowledgeBase.created_at, KnowledgeBase.id)))


def _ready_files(session: Session, base_ids: list[str]) -> int:
    if not base_ids:
        return 0
    query = select(func.count()).where(
        KnowledgeFile.knowledge_base_id.in_(base_ids), KnowledgeFile.status == "ready"
    )
    return session.exec(query).one()


def latest_job(session: Session) -> KnowledgeReEmbedJob | None:
    query = select(KnowledgeReEmbedJob).order_by(
        KnowledgeReEmbedJob.started_at.desc(), KnowledgeReEmbedJob.id.desc()
    )
    return session.exec(query.limit(1)).first()


def start(knowledge: Knowledge, started_by: str | None = None) -> tuple[KnowledgeReEmbedJob, bool]:
    """The running job, or a new one queued on the ingestion thread; (job, started)."""
    name = model_name(knowledge.settings.embedding_model)
    with Session(knowledge.engine, expire_on_commit=False) as session:
        running = session.exec(
            select(KnowledgeReEmbedJob).where(KnowledgeReEmbedJob.status == "running")
        ).first()
        if running is not None:
            return running, False
        bases = stale_bases(session, name)
        job = KnowledgeReEmbedJob(
            embedding_model=name,
            bases_total=len(bases),
            files_total=_ready_files(session, [base.id for base in bases]),
            started_by=started_by,
        )
        session.add(job)
        session.commit()
    knowledge.submit_job(lambda: run(knowledge, job.id))
    return job, True


def start_if_stale(knowledge: Knowledge) -> KnowledgeReEmbedJob | None:
    """At start-up: a job left `running` by a stopped platform is marked failed, and a job
    is started when a base is stale (one query by model name; no model is loaded)."""
    with Session(knowledge.engine) as session:
        session.execute(
            update(KnowledgeReEmbedJob)
            .where(KnowledgeReEmbedJob.status == "running")
            .values(
                status="failed",
                error="interrupted: the platform stopped; it resumed at the next start",
                finished_at=utcnow(),
            )
        )
        session.commit()
        if not stale_bases(session, model_name(knowledge.settings.embedding_model)):
            return None
    return start(knowledge)[0]


def run(knowledge: Knowledge, job_id: str) -> None:
    """The job's work, on the ingestion thread: every stale base, one after the other."""
    try:
        with Session(knowledge.engine) as session:
            indexed = select(KnowledgeBase.id).where(KnowledgeBase.embedding_model.is_not(None))
            if session.exec(indexed.limit(1)).first() is None:
                _finish(knowledge.engine, job_id, "done", "")  # no vectors: no model to load
                return
        embedder = knowledge.embedder
        model = embedder.model
        with Session(knowledge.engine, expire_on_commit=False) as session:
            bases = stale_bases(session, model.name, model.dimension)
            files = _ready_files(session, [base.id for base in bases])
        _record(knowledge.engine, job_id, embedding_dimension=model.dimension,
                bases_total=len(bases), files_total=files)  # fmt: skip
        for base in bases:
            if knowledge.stopping.is_set():
                raise Interrupted
            _record(knowledge.engine, job_id, current_base_id=base.id)
            files = rebuild(knowledge, base, embedder, job_id)
            _count(knowledge.engine, job_id, bases_done=1, files_done=files)
    except Interrupted:
        _finish(knowledge.engine, job_id, "failed",
                "interrupted: the platform stopped; it resumes at the next start")  # fmt: skip
    except Exception as error:
        log.exception("re-embedding job %s failed", job_id)
        _finish(knowledge.engine, job_id, "failed", f"{type(error).__name__}: {error}")
    else:
        _finish(knowledge.engine, job_id, "done", "")


def rebuild(knowledge: Knowledge, base: KnowledgeBase, embedder, job_id: str) -> int:
    """Re-embed one base beside its collection and switch to the new one; returns its
    ready files' count."""
    store, model = knowledge.store, embedder.model
    old = collection_of(base)
    with Session(knowledge.engine) as session:
        files = _ready_files(session, [base.id])
    if store.collection_model(old) == model:  # re-embedded already; the row lagged
        new = old
    else:
        new = aside_collection(base.id, model)

        def progress(chunks: int) -> None:
            _count(knowledge.engine, job_id, chunks_done=chunks)
            if knowledge.stopping.is_set():
                raise Interrupted

        try:
            embed_into(store, old, new, embedder, progress=progress)
        except BaseException:
            store.drop_collection(new)  # the base still reads `old`, whole
            raise
    with Session(knowledge.engine) as session:
        switched = session.execute(
            update(KnowledgeBase)
            .where(KnowledgeBase.id == base.id)
            .values(
                collection=new,
                embedding_model=model.name,
                embedding_dimension=model.dimension,
                updated_at=utcnow(),
            )  # fmt: skip
        ).rowcount
        session.commit()
        kept = set(
            session.exec(select(KnowledgeFile.id).where(KnowledgeFile.knowledge_base_id == base.id))
        )
    if not switched:  # the base was deleted meanwhile
        store.drop_collection(new)
        return 0
    # Files deleted while the base was rebuilt: their chunks were copied before.
    for chunk in store.all_chunks(new):
        if chunk.file_id not in kept:
            store.delete(new, owner=chunk.owner, file_id=chunk.file_id)
            kept.add(chunk.file_id)
    if new != old:
        store.drop_collection(old)
    return files


def _record(engine: Engine, job_id: str, **values) -> None:
    with Session(engine) as session:
        session.execute(
            update(KnowledgeReEmbedJob).where(KnowledgeReEmbedJob.id == job_id).values(**values)
        )
        session.commit()


def _count(engine: Engine, job_id: str, **increments: int) -> None:
    columns = KnowledgeReEmbedJob.__table__.c
    _record(engine, job_id, **{name: columns[name] + n for name, n in increments.items()})


def _finish(engine: Engine, job_id: str, status: str, error: str) -> None:
    _record(engine, job_id, status=status, error=error[:2000], current_base_id=None,
            finished_at=utcnow())  # fmt: skip
