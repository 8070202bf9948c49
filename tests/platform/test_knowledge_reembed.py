"""Re-embedding knowledge bases after ORCHARD_EMBEDDING_MODEL changes, with two real
models: the packaged all-MiniLM-L6-v2 (384 dimensions) and a second one made from it with
a fixed projection to 128 dimensions (`testkit.embedding_models`). A platform started on
the new model re-embeds every stale base in the background; the job's status is visible
to administrators; each base switches whole to a collection built beside the old one, so
a failed or interrupted job leaves no base with vectors of two models, and a retry
finishes the work."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from orchard.knowledge.lance import LanceStore
from orchard.knowledge.vectors import Chunk
from orchard.settings import Settings
from testkit.embedding_models import projected_model
from tests.platform.conftest import serve_api
from tests.platform.test_knowledge import MOTH, new_base, search, settled, upload

NEW_MODEL = "minilm-128"


@pytest.fixture(scope="session")
def second_model(tmp_path_factory) -> Path:
    return projected_model(tmp_path_factory.mktemp("embedding-models") / NEW_MODEL)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"rate_limit_user": "6000/minute"})  # status polls


def finished_job(api, admin, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = api.http.get("/admin/knowledge/re-embed", headers=admin.headers).json()
        job = status["job"]
        if job and job["status"] != "running":
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def test_a_new_embedding_model_re_embeds_every_stale_base_when_the_platform_starts(
    api, settings, database_url, second_model
):
    alice, bob, root = api.user("alice"), api.user("bob"), api.admin()
    orchard = new_base(api, alice, "Orchard")
    notes = new_base(api, bob, "Notes")
    files = [
        (alice, orchard, "moths.txt", MOTH.encode()),
        (alice, orchard, "pears.md", b"# Pears\n\nPears ripen off the tree, in a cool room.\n"),
        (bob, notes, "bees.txt", b"Bees visit apple blossom when it is warm and dry.\n"),
    ]
    for account, base, name, data in files:
        file = upload(api, account, base, name, data).json()
        assert settled(api, account, base, file)["status"] == "ready"
    bees = f"/knowledge/{notes['id']}/files/{file['id']}/chunks"  # the last file, Bob's
    before = {chunk["id"] for chunk in api.http.get(bees, headers=bob.headers).json()}
    status = api.http.get("/admin/knowledge/re-embed", headers=root.headers).json()
    assert status["stale"] == [] and status["embedding_model"].endswith("all-MiniLM-L6-v2")

    changed = settings.model_copy(update={"embedding_model": second_model})
    with serve_api(changed, database_url) as new:
        status = finished_job(new, root)
        job = status["job"]
        assert (job["status"], job["error"], job["embedding_model"]) == ("done", "", NEW_MODEL)
        assert (job["bases_total"], job["bases_done"]) == (2, 2)
        assert (job["files_total"], job["files_done"]) == (3, 3)
        assert job["chunks_done"] == 3 and job["started_by"] is None  # started at start-up
        assert status["stale"] == [] and status["embedding_model"] == NEW_MODEL

        hits = search(new, alice, orchard, "Which insect's caterpillars bore into the fruit?")
        assert hits[0]["chunk"]["source"] == "moths.txt"
        got = new.http.get(f"/knowledge/{orchard['id']}", headers=alice.headers).json()
        assert (got["embedding_model"], got["embedding_dimension"]) == (NEW_MODEL, 128)
        # The same chunks (ids kept), each owner's own, and the old collection is gone.
        assert {chunk["id"] for chunk in new.http.get(bees, headers=bob.headers).json()} == before
        assert search(new, bob, notes, "apple blossom")[0]["chunk"]["source"] == "bees.txt"
        assert search(new, alice, orchard, "apple blossom")[0]["chunk"]["source"] != "bees.txt"
        store = LanceStore(settings.home / "knowledge" / "lancedb")
        assert store.collection_model(f"kb_{orchard['id']}") is None
        exported = new.http.get("/users/me/export", headers=alice.headers).json()
        (base,) = exported["knowledge_bases"]
        assert {len(c["vector"]) for f in base["files"] for c in f["chunks"]} == {128}

        # Nothing is stale any more: a job started by hand finds no work; users may not.
        assert new.http.post("/admin/knowledge/re-embed", headers=alice.headers).status_code == 403
        started = new.http.post("/admin/knowledge/re-embed", headers=root.headers)
        assert started.status_code == 202 and started.json()["started_by"] == root.id
        job = finished_job(new, root)["job"]
        assert (job["id"], job["status"], job["bases_total"]) == (started.json()["id"], "done", 0)


def test_a_failed_or_interrupted_job_leaves_each_base_whole_and_a_retry_finishes(
    clean_env, sqlite_template, tmp_path, second_model
):
    from platform_api import reembedding
    from platform_api.chat_knowledge import KnowledgeScope, retrieve
    from platform_api.db import make_engine
    from platform_api.knowledge import Knowledge, collection_name
    from platform_api.models import KnowledgeBase, KnowledgeFile, KnowledgeReEmbedJob, User

    database = tmp_path / "platform.db"
    shutil.copyfile(sqlite_template, database)
    engine = make_engine(f"sqlite:///{database}")
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{database}")

    def platform(model: Path | None) -> Knowledge:
        return Knowledge(settings.model_copy(update={"embedding_model": model}), engine)

    first = platform(None)
    with Session(engine, expire_on_commit=False) as session:
        user = User(email="a@example.org", password_hash="x")
        session.add(user)
        session.commit()
        base = KnowledgeBase(user_id=user.id, name="kb")
        file = KnowledgeFile(knowledge_base_id=base.id, user_id=user.id, filename="m.txt",
                             media_type="text/plain", size_bytes=1, sha256="")  # fmt: skip
        first.store_original(user.id, file.id, MOTH.encode())
        session.add_all([base, file])
        session.commit()
    first.ingest(file.id)
    first.close()
    store = LanceStore(settings.home / "knowledge" / "lancedb")
    old = collection_name(base.id)
    (chunk,) = store.all_chunks(old)

    def jobs() -> list[tuple[str, str]]:
        with Session(engine) as session:
            query = select(KnowledgeReEmbedJob).order_by(KnowledgeReEmbedJob.started_at)
            return [(job.status, job.error) for job in session.exec(query)]

    def run_job(knowledge: Knowledge) -> None:
        """Start the platform on `knowledge`'s model, wait for its job, stop it."""
        reembedding.start_if_stale(knowledge)
        deadline = time.monotonic() + 120
        while ("running", "") in jobs():
            assert time.monotonic() < deadline, jobs()
            time.sleep(0.1)
        knowledge.close()

    def collection() -> str | None:
        with Session(engine) as session:
            return session.get(KnowledgeBase, base.id).collection

    # A model directory that cannot load: the job fails with the reason, the base is as it was.
    broken = tmp_path / "broken"
    broken.mkdir()
    run_job(platform(broken))
    ((status, error),) = jobs()
    assert status == "failed" and "ORCHARD_EMBEDDING_MODEL" in error
    assert collection() is None and store.all_chunks(old) == [chunk]

    # A run interrupted half-way: its job still says running and a partial collection of
    # the new model lies beside the old one, with a chunk that is no longer in the base.
    knowledge = platform(second_model)
    model = knowledge.embedder.model
    aside = reembedding.aside_collection(base.id, model)
    store.create_collection(aside, model)
    stray = Chunk(id="stray", owner=user.id, file_id="gone", seq=0, text="x", source="x")
    store.add(aside, [stray], knowledge.embedder.embed(["x"]), model)
    with Session(engine) as session:
        session.add(KnowledgeReEmbedJob(embedding_model=model.name))
        session.commit()
    # Until it is re-embedded, a chat turn skips the base instead of failing.
    scope = KnowledgeScope(owner=user.id, base_ids=(base.id,))
    assert retrieve(knowledge, scope, "insects in apples") == []
    run_job(knowledge)  # the next start
    assert [status for status, _ in jobs()] == ["failed", "failed", "done"]
    assert "interrupted" in jobs()[1][1]
    assert collection() == aside and store.collection_model(old) is None
    assert [c.id for c in store.all_chunks(aside)] == [chunk.id]  # once, and nothing else
    assert store.collection_model(aside) == model
    restarted = platform(second_model)
    ((base_id, hit),) = retrieve(restarted, scope, "insects in apples")
    assert (base_id, hit.chunk.id) == (base.id, chunk.id)
    restarted.close()
    engine.dispose()
