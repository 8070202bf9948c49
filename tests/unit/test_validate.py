"""The validate step: a clean corpus passes with its report published; each planted defect
fails the step by name and keeps the report; curate's PII placeholders pass."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import mlflow
import pytest
from datatrove.pipeline.formatters import PIIFormatter

from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, locate, run_step
from ray_jobs import validate
from ray_jobs.validate import CorpusValidationError, ValidateConfig

pytestmark = pytest.mark.slow


class Curated(StepConfig):
    """Stands in for the curate step's config: one label per planted corpus."""

    label: str


def clean_docs(n: int = 12) -> list[dict]:
    return [
        {
            "text": f"Article {i}: the {i}th river carries the boat to the harbor and back "
            "again, version 3.11.4 of 2024-01-15, page 12 of 200.",
            "id": f"doc-{i}",
            "metadata": {
                "url": f"https://site.test/{i}.html" if i % 4 else None,  # some without URL
                "language": "en",
                "language_score": 0.93,
                "source": "crawl" if i % 4 else "books",
            },
        }
        for i in range(n)
    ]


def curate(data_root: Path, docs: list[dict], label: str = "c") -> Manifest:
    """A finished curate step holding `docs` as datatrove shards, plus a decoy shard of
    dropped documents outside documents/ that validation must not read."""

    def body(ctx: StepContext) -> StepOutput:
        for folder, batch in (("documents", docs), ("dropped", [{"text": ""}])):
            (ctx.out / folder).mkdir()
            with gzip.open(ctx.out / folder / "00000.jsonl.gz", "wt") as handle:
                handle.writelines(json.dumps(doc) + "\n" for doc in batch)
        return StepOutput(counts={"documents": len(docs)})

    return run_step(
        step="curate", name="corpus", config=Curated(label=label), data_root=data_root, body=body
    )


def settings(data_root: Path, mlflow_uri: str | None = None) -> Settings:
    return Settings(
        home=data_root / "home", data_root=str(data_root), mlflow_tracking_uri=mlflow_uri
    )


@pytest.fixture
def no_mlflow(monkeypatch):
    """run_step logs to MLflow whenever it has a URI; these tests are about the suite."""
    monkeypatch.setattr(Settings, "mlflow_uri", property(lambda self: None))


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> Path:
    """One MLflow database for the module: creating one takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


def uri(tracking: Path) -> str:
    return f"sqlite:///{tracking / 'mlflow.db'}"


def test_a_clean_corpus_passes_and_publishes_its_report_to_mlflow(tmp_path, tracking, monkeypatch):
    monkeypatch.chdir(tracking)  # MLflow's local artifact store lands in tmp
    config = ValidateConfig()
    curated = curate(tmp_path, clean_docs())
    done = validate.run(config, curated, settings(tmp_path, uri(tracking)))
    out = Path(done.path)
    assert out == locate(tmp_path, "validate", "corpus", config, [curated])
    assert (out / "data_docs" / "index.html").is_file()
    summary = json.loads((out / "validation.json").read_text())
    assert summary["success"] and summary["documents"] == 12 and summary["duplicate_rate"] == 0
    rules = {rule["rule"] for rule in summary["rules"]}
    assert {"no_email", "no_phone", "url_unique", "duplicate_rate"} <= rules
    assert not list(tmp_path.glob("validate/failed-*"))

    client = mlflow.MlflowClient(uri(tracking))
    run = client.get_run(done.mlflow_run_id)
    assert run.data.metrics["duplicate_rate"] == 0
    assert run.data.metrics["rule.no_email"] == 1 and run.data.metrics["rule.id_unique"] == 1
    assert run.data.tags["orchard.key"] == done.key
    logged = {a.path for a in client.list_artifacts(done.mlflow_run_id, "data_docs")}
    assert "data_docs/index.html" in logged


def plant_duplicates(docs: list[dict]) -> None:
    # Same text up to case and whitespace: 1 of 12 documents repeats another (8% > 1%).
    docs[5]["text"] = "  " + docs[6]["text"].upper().replace(" ", "\n ")


DEFECTS = {
    "empty text": (lambda d: d[0].update(text=""), "text_length", "doc-0"),
    "missing text": (lambda d: d[0].pop("text"), "text_present", "doc-0"),
    "duplicate id": (lambda d: d[1].update(id="doc-2"), "id_unique", "doc-2"),
    "duplicate url": (
        lambda d: d[2]["metadata"].update(url="https://site.test/1.html"),
        "url_unique",
        "https://site.test/1.html",
    ),
    "e-mail": (
        lambda d: d[3].update(text=d[3]["text"] + " Mail jane.doe@corp.com."),
        "no_email",
        "jane.doe@corp.com",
    ),
    "phone": (
        lambda d: d[5].update(text=d[5]["text"] + " Call +1 415-555-0132."),
        "no_phone",
        "+1 415-555-0132",
    ),
    "phone with dots": (
        lambda d: d[5].update(text="Ring 415.555.0132. " + d[5]["text"]),
        "no_phone",
        "415.555.0132",
    ),
    "language": (lambda d: d[6]["metadata"].update(language="fr"), "language_targeted", "'fr'"),
    "no language": (lambda d: d[6]["metadata"].pop("language"), "language_present", "doc-6"),
    "duplicates": (plant_duplicates, "duplicate_rate", "duplicate rate 0.08333 > 0.01"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_rule_fails_the_step_on_its_own_defect(tmp_path, no_mlflow, defect):
    plant, rule, shown = DEFECTS[defect]
    docs = clean_docs()
    plant(docs)
    curated = curate(tmp_path, docs)
    with pytest.raises(CorpusValidationError) as caught:
        validate.run(ValidateConfig(), curated, settings(tmp_path))
    message = str(caught.value)
    failed = [r["rule"] for r in caught.value.summary["rules"] if not r["success"]]
    # Exactly the planted rule fails (missing text is also a too-short text).
    assert failed == (["text_present", "text_length"] if defect == "missing text" else [rule])
    assert f"{rule} (expect_" in message and shown in message and "\n" not in message
    # Nothing is published; the report is kept where the message and the DAG say.
    assert not list(tmp_path.glob("validate/corpus-*"))
    report = locate(tmp_path, "validate", "failed", ValidateConfig(), [curated])  # the DAG's
    assert caught.value.report == report
    assert str(report / "data_docs" / "index.html") in message
    assert (report / "data_docs" / "index.html").is_file()
    kept = json.loads((report / "validation.json").read_text())
    assert kept["success"] is False
    assert [r["rule"] for r in kept["rules"] if not r["success"]] == failed


def test_the_pii_placeholders_curate_writes_pass(tmp_path, no_mlflow):
    docs = clean_docs()
    formatter = PIIFormatter()
    for i, doc in enumerate(docs[:8]):
        # Each placeholder datatrove cycles through: two e-mails, six IP addresses.
        doc["text"] += formatter.format(
            f" Write to someone{i}@corp.com from 8.8.{i}.9{i} or mailto:x{i}@mail.org;"
            " phone: <PHONE>."
        )
    assert "email@example.com" in docs[0]["text"] and "@corp" not in docs[0]["text"]
    assert "firstname.lastname@example.org" in docs[1]["text"]
    assert "22.214.171.124" in docs[0]["text"]
    done = validate.run(ValidateConfig(), curate(tmp_path, docs), settings(tmp_path))
    assert json.loads((Path(done.path) / "validation.json").read_text())["success"]


def test_a_duplicate_rate_within_the_bound_passes(tmp_path, no_mlflow):
    docs = clean_docs()
    plant_duplicates(docs)
    done = validate.run(
        ValidateConfig(max_duplicate_rate=0.1), curate(tmp_path, docs), settings(tmp_path)
    )
    assert done.metrics["duplicate_rate"] == pytest.approx(1 / 12)


def test_a_new_failure_replaces_the_kept_report_and_a_pass_is_not_redone(
    tmp_path, no_mlflow, monkeypatch
):
    config = ValidateConfig(min_chars=1_000)  # every clean text is shorter
    curated = curate(tmp_path, clean_docs())
    with pytest.raises(CorpusValidationError) as first:
        validate.run(config, curated, settings(tmp_path))
    (first.value.report / "validation.json").write_text("stale")
    with pytest.raises(CorpusValidationError) as again:
        validate.run(config, curated, settings(tmp_path))
    assert again.value.report == first.value.report
    assert json.loads((again.value.report / "validation.json").read_text())["success"] is False
    assert len(list(tmp_path.glob("validate/[!.]*"))) == 1  # no temp copies left

    passed = validate.run(ValidateConfig(), curated, settings(tmp_path))
    calls = []
    monkeypatch.setattr(validate, "validate_corpus", lambda *args: calls.append(args))
    assert validate.run(ValidateConfig(), curated, settings(tmp_path)) == passed
    assert calls == []


def test_a_failed_validation_is_an_mlflow_run_marked_failed(tmp_path, tracking, monkeypatch):
    monkeypatch.chdir(tracking)
    docs = clean_docs()
    docs[4]["text"] += " jane.doe@corp.com"
    with pytest.raises(CorpusValidationError) as caught:
        validate.run(ValidateConfig(), curate(tmp_path, docs), settings(tmp_path, uri(tracking)))
    key = caught.value.report.name.removeprefix("failed-")
    client = mlflow.MlflowClient(uri(tracking))
    experiment = client.get_experiment_by_name("orchard-validate")
    query = f"tags.`orchard.key` = '{key}' and tags.`orchard.outcome` = 'failed'"
    (run,) = client.search_runs([experiment.experiment_id], query)
    assert run.info.status == "FAILED"
    assert run.data.metrics["rule.no_email"] == 0 and run.data.metrics["rule.id_unique"] == 1
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "data_docs")}
    assert "data_docs/index.html" in logged


def test_the_ray_job_command_line(tmp_path, tracking, monkeypatch, capsys):
    monkeypatch.chdir(tracking)
    monkeypatch.setenv("ORCHARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ORCHARD_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("ORCHARD_MLFLOW_TRACKING_URI", uri(tracking))
    docs = clean_docs()
    clean = Path(curate(tmp_path, docs, label="clean").path) / "manifest.json"
    docs[7]["metadata"]["language"] = "de"
    german = Path(curate(tmp_path, docs, label="german").path) / "manifest.json"

    # How the DAG submits it: step_main's --input.
    assert validate.main(["--config", '{"languages": ["en"]}', "--input", str(clean)]) == 0
    assert capsys.readouterr().out.startswith(f"manifest: {tmp_path / 'validate' / 'corpus-'}")

    assert validate.main(["--config", "{}", "--curate-manifest", str(german)]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: the corpus failed 1 of ") and "language_targeted" in line
    assert f"'de' in doc-7. Report: {tmp_path / 'validate' / 'failed-'}" in line

    assert validate.main(["--config", '{"min_chars": 0}', "--curate-manifest", str(german)]) == 2
    assert capsys.readouterr().err.startswith("error: bad min_chars in --config")
    assert validate.main(["--config", "{}"]) == 2
    assert "--curate-manifest" in capsys.readouterr().err
    crawl = run_step(
        step="crawl",
        name="web",
        config=Curated(label="x"),
        data_root=tmp_path,
        body=lambda ctx: StepOutput(),
    )
    assert validate.main(["--curate-manifest", crawl.path]) == 2
    assert "is a crawl manifest" in capsys.readouterr().err
