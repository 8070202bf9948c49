"""Knowledge bases over HTTP, on SQLite and PostgreSQL, with the real embedding model and
the embedded LanceDB store: each file type uploaded, ingested in the background (its
status visible) and its passage found; bad files refused or failed with the reason and
nothing indexed; another user reaching nothing by id or by search; the privacy export
and account deletion covering files, chunks and vectors."""

from __future__ import annotations

import http.client
import shutil
import time
from urllib.parse import urlsplit

import pytest

from orchard.knowledge.embeddings import EmbeddingModel
from orchard.knowledge.lance import LanceStore
from orchard.settings import Settings
from testkit.documents import (
    make_docx,
    make_html,
    make_pdf,
    make_pdf_bomb,
    make_png,
    make_scanned_pdf,
)
from tests.platform.conftest import PASSWORD

MAX_FILE = 300_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "knowledge_max_file_bytes": MAX_FILE,
            "knowledge_max_decompressed_bytes": 5_000_000,
            "rate_limit_user": "6000/minute",  # status polls
        }
    )


def new_base(api, account, name="Research") -> dict:
    response = api.http.post("/knowledge", json={"name": name}, headers=account.headers)
    assert response.status_code == 201, response.text
    return response.json()


def upload(api, account, base, name: str, data: bytes, media="application/octet-stream"):
    return api.http.post(
        f"/knowledge/{base['id']}/files", files={"file": (name, data, media)},
        headers=account.headers,
    )  # fmt: skip


def settled(api, account, base, file: dict, timeout: float = 180) -> dict:
    """The file once ingestion is over (ready or failed), with every status seen."""
    seen = [file["status"]]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        file = api.http.get(
            f"/knowledge/{base['id']}/files/{file['id']}", headers=account.headers
        ).json()
        if file["status"] != seen[-1]:
            seen.append(file["status"])
        if file["status"] in ("ready", "failed"):
            file["seen"] = seen
            return file
        time.sleep(0.25)
    raise AssertionError(f"{file['filename']} still {file['status']} after {timeout} s")


def search(api, account, base, query: str, **extra) -> list[dict]:
    response = api.http.post(f"/knowledge/{base['id']}/search", json={"query": query, **extra},
                             headers=account.headers)  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()


MOTH = "Codling moth larvae tunnel into apples; pheromone traps in spring catch the males."
FILES = {
    "report.pdf": (
        make_pdf(
            [
                ["Annual report", "Our orchards planted 300 apple trees."],
                ["Revenue grew by 12 percent in May thanks to cider sales."],
            ]
        ),  # fmt: skip
        "How much did revenue grow in May?",
        "Revenue grew by 12 percent",
    ),
    "guide.docx": (
        make_docx([("Pruning", ["Prune pear trees in late winter before buds open."])]),
        "When should pear trees be pruned?",
        "late winter",
    ),
    "pests.html": (
        make_html(
            "Pests",
            [
                (
                    "Codling moth",
                    [
                        "Codling moth larvae tunnel into apples; pheromone "
                        "traps in spring catch the males early."
                    ],
                )
            ],
        ),  # fmt: skip
        "How do I catch codling moths?",
        "pheromone traps",
    ),
    "notes.md": (
        b"# Irrigation\n\nDrip irrigation saves forty percent of the water in dry summers.\n",
        "How much water does drip irrigation save?",
        "forty percent",
    ),
    "log.txt": (
        b"Frost night: the sprinklers ran from 2am to 6am to protect the blossoms.\n",
        "What protected the blossoms from frost?",
        "sprinklers",
    ),
    "scan.pdf": (
        make_scanned_pdf(
            [
                ["Cider pressing starts in late September."],
                ["Store the cider bottles at 12 degrees in the cellar."],
            ]
        ),
        "At what temperature are the cider bottles stored?",
        "12 degrees",
    ),  # fmt: skip
    "label.png": (
        make_png(["Variety: Granny Smith", "Harvest in October"]),
        "Which apple variety is on the label?",
        "Granny Smith",
    ),
}


def test_each_file_type_is_indexed_and_its_passage_found(api):
    if shutil.which("tesseract") is None:
        pytest.skip("no tesseract (OCR of the image): install Debian's tesseract-ocr")
    alice = api.user("alice")
    base = new_base(api, alice)
    uploaded = {}
    for name, (data, _, _) in FILES.items():
        response = upload(api, alice, base, name, data)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        uploaded[name] = response.json()
    files = {name: settled(api, alice, base, file) for name, file in uploaded.items()}
    for name, file in files.items():
        assert file["status"] == "ready", (name, file["error"])
        assert file["chunks"] >= 1 and file["seen"][-1] == "ready"
    assert files["report.pdf"]["pages"] == 2
    assert files["scan.pdf"]["pages"] == 2  # no text layer: read by OCR
    assert files["report.pdf"]["media_type"] == "application/pdf"
    assert files["label.png"]["media_type"] == "image/png"

    for name, (_, question, answer) in FILES.items():
        best = search(api, alice, base, question, k=3)[0]["chunk"]
        assert best["file_id"] == files[name]["id"] and answer in best["text"], (name, best)
        assert best["source"] == name
    best = search(api, alice, base, "revenue growth in May", k=1)[0]["chunk"]
    assert best["page"] == 2
    best = search(api, alice, base, "cider bottles temperature", k=1)[0]["chunk"]
    assert (best["source"], best["page"]) == ("scan.pdf", 2)

    chunks = api.http.get(f"/knowledge/{base['id']}/files/{files['pests.html']['id']}/chunks",
                          headers=alice.headers).json()  # fmt: skip
    text = " ".join(c["text"] for c in chunks)
    assert "pheromone traps" in text and "INJECTED" not in text and "cookie" not in text
    base_now = api.http.get(f"/knowledge/{base['id']}", headers=alice.headers).json()
    assert base_now["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert base_now["embedding_dimension"] == 384

    # Deleting a file takes its chunks out of search.
    pdf = files["report.pdf"]["id"]
    gone = api.http.delete(f"/knowledge/{base['id']}/files/{pdf}", headers=alice.headers)
    assert gone.status_code == 204
    hits = search(api, alice, base, "How much did revenue grow in May?", k=10)
    assert pdf not in {hit["chunk"]["file_id"] for hit in hits}


def test_bad_files_are_refused_or_fail_with_the_reason(api):
    alice = api.user("alice")
    base = new_base(api, alice)
    exe = upload(api, alice, base, "invoice.pdf", b"\x7fELF\x02\x01\x01\x00" + bytes(500))
    assert exe.status_code == 415 and "read from its content" in exe.json()["detail"]

    big = upload(api, alice, base, "big.txt", b"a" * (MAX_FILE + 1))
    assert big.status_code == 413 and big.json()["code"] == "file_too_large"
    # A 2 GB upload is refused from its Content-Length, before a byte of it is read.
    root = urlsplit(api.root)
    connection = http.client.HTTPConnection(root.hostname, root.port, timeout=30)
    connection.putrequest("POST", f"/api/v1/knowledge/{base['id']}/files")
    connection.putheader("Authorization", alice.headers["Authorization"])
    connection.putheader("Content-Type", "multipart/form-data; boundary=x")
    connection.putheader("Content-Length", str(2 * 1024**3))
    connection.endheaders()
    assert connection.getresponse().status == 413
    connection.close()

    bomb = upload(api, alice, base, "bomb.pdf", make_pdf_bomb(50_000_000))
    assert bomb.status_code == 202
    failed = settled(api, alice, base, bomb.json())
    assert failed["status"] == "failed" and "unpacks to more than" in failed["error"]
    assert failed["chunks"] == 0

    sneaky = upload(api, alice, base, "../../etc/passwd", b"root:x:0:0 is not a secret here\n")
    assert sneaky.status_code == 202 and sneaky.json()["filename"] == "passwd"
    assert settled(api, alice, base, sneaky.json())["status"] == "ready"
    originals = api.settings.home / "knowledge" / "files" / alice.id
    assert sorted(p.name for p in originals.iterdir()) == sorted(
        [bomb.json()["id"], sneaky.json()["id"]]
    )
    # The failed file left nothing in the store: every chunk is the text file's.
    store = LanceStore(api.settings.home / "knowledge" / "lancedb")
    kept = store.chunks(f"kb_{base['id']}", owner=alice.id)
    assert {chunk.file_id for chunk in kept} == {sneaky.json()["id"]}


def test_another_user_reaches_nothing_by_id_or_by_search(api):
    alice, bob = api.user("alice"), api.user("bob")
    base = new_base(api, alice)
    secret = b"The launch code of project Bramble is 8812, tell no one.\n"
    file = settled(api, alice, base, upload(api, alice, base, "secret.txt", secret).json())
    assert file["status"] == "ready"
    a, f = base["id"], file["id"]
    for method, path in [
        ("GET", f"/knowledge/{a}"),
        ("GET", f"/knowledge/{a}/files"),
        ("GET", f"/knowledge/{a}/files/{f}"),
        ("GET", f"/knowledge/{a}/files/{f}/chunks"),
        ("DELETE", f"/knowledge/{a}/files/{f}"),
        ("DELETE", f"/knowledge/{a}"),
    ]:
        response = api.http.request(method, path, headers=bob.headers)
        assert response.status_code == 404, (method, path, response.text)
    stolen = api.http.post(f"/knowledge/{a}/search", json={"query": "launch code"},
                           headers=bob.headers)  # fmt: skip
    assert stolen.status_code == 404
    # Bob's own base, searched with Alice's file id: nothing of hers.
    own = new_base(api, bob, "Bob's")
    mine = settled(api, bob, own, upload(api, bob, own, "b.txt", b"Bob grows plums.\n").json())
    assert mine["status"] == "ready"
    assert search(api, bob, own, "launch code of project Bramble", file_ids=[f]) == []
    hits = search(api, bob, own, "launch code of project Bramble", k=10)
    assert {hit["chunk"]["file_id"] for hit in hits} == {mine["id"]}
    assert api.http.get("/knowledge", headers=bob.headers).json()[0]["id"] == own["id"]
    # Alice still has everything.
    assert "8812" in search(api, alice, base, "launch code")[0]["chunk"]["text"]


def test_export_and_account_deletion_cover_files_chunks_and_vectors(api):
    alice, bob = api.user("alice"), api.user("bob")
    base = new_base(api, alice)
    text = b"# Soil\n\nApple trees prefer a soil pH between 6.0 and 7.0.\n"
    file = settled(api, alice, base, upload(api, alice, base, "soil.md", text).json())
    other = new_base(api, bob)
    settled(api, bob, other, upload(api, bob, other, "bob.txt", b"Bob's private note.\n").json())

    data = api.http.get("/users/me/export", headers=alice.headers).json()
    (exported,) = data["knowledge_bases"]
    (exported_file,) = exported["files"]
    assert exported_file["id"] == file["id"] and exported_file["filename"] == "soil.md"
    chunk = exported_file["chunks"][0]
    assert "soil pH between 6.0 and 7.0" in chunk["text"] and chunk["heading"] == "Soil"
    assert len(chunk["vector"]) == exported["embedding_dimension"] == 384
    assert "Bob's private note" not in str(data)

    deleted = api.http.request("DELETE", "/users/me", json={"password": PASSWORD},
                               headers=alice.headers)  # fmt: skip
    assert deleted.status_code == 204
    home = api.settings.home / "knowledge"
    assert not (home / "files" / alice.id).exists()
    store = LanceStore(home / "lancedb")
    assert store.collection_model(f"kb_{base['id']}") is None
    assert store.chunks(f"kb_{other['id']}", owner=bob.id)  # Bob's are untouched


def test_a_base_embedded_with_another_model_is_never_mixed(api):
    alice = api.user("alice")
    base = new_base(api, alice)
    # The base's collection was made by another embedding model (as after a change of
    # ORCHARD_EMBEDDING_MODEL): a new file fails with the reason, a search is refused.
    store = LanceStore(api.settings.home / "knowledge" / "lancedb")
    store.create_collection(f"kb_{base['id']}", EmbeddingModel("older-model", 384))
    file = upload(api, alice, base, "new.txt", b"Cherries need cross-pollination.\n").json()
    failed = settled(api, alice, base, file)
    assert failed["status"] == "failed" and "older-model" in failed["error"]
    assert "re-embed" in failed["error"]
    response = api.http.post(f"/knowledge/{base['id']}/search", json={"query": "cherries"},
                             headers=alice.headers)  # fmt: skip
    assert response.status_code == 409 and response.json()["code"] == "embedding_model_changed"


def test_files_a_stopped_server_left_half_done_are_indexed_at_start(clean_env, sqlite_template,
                                                                    tmp_path):  # fmt: skip
    from sqlmodel import Session

    from platform_api.db import make_engine
    from platform_api.knowledge import Knowledge
    from platform_api.models import KnowledgeBase, KnowledgeFile, User

    database = tmp_path / "platform.db"
    shutil.copyfile(sqlite_template, database)
    engine = make_engine(f"sqlite:///{database}")
    settings = Settings(home=tmp_path / "home", database_url=f"sqlite:///{database}")
    knowledge = Knowledge(settings, engine)
    with Session(engine, expire_on_commit=False) as session:
        user = User(email="a@example.org", password_hash="x")
        session.add(user)
        session.commit()
        base = KnowledgeBase(user_id=user.id, name="kb")
        session.add(base)
        session.commit()
        files = []
        for status in ("queued", "parsing", "embedding"):
            file = KnowledgeFile(
                knowledge_base_id=base.id, user_id=user.id, filename=f"{status}.txt",
                media_type="text/plain", size_bytes=1, sha256="", status=status,
            )  # fmt: skip
            text = f"The {status} file mentions quinces.\n".encode()
            file.sha256 = knowledge.store_original(user.id, file.id, text)
            session.add(file)
            files.append(file)
        session.commit()

    def statuses() -> list[str]:
        with Session(engine) as session:
            return [session.get(KnowledgeFile, f.id).status for f in files]

    try:
        knowledge.resume()
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and statuses() != ["ready"] * 3:
            time.sleep(0.2)
    finally:
        knowledge.close()
    assert statuses() == ["ready"] * 3
    with Session(engine) as session:
        base = session.get(KnowledgeBase, base.id)
        user = session.get(User, user.id)
        assert len(knowledge.search(user, base, "quinces", 5, None)) == 3
    engine.dispose()
