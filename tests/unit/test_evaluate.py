"""The evaluate step scores a candidate chat model on held-out questions, against
baselines and a reward model, and keeps every answer for people to read."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from orchard.errors import OrchardError
from orchard.eval_tasks import TASKS
from orchard.grading import key_facts
from orchard.safety import HELDOUT, TRAIN, is_refusal
from orchard.steps import Manifest, StepConfig, StepOutput, run_step
from ray_jobs.evaluate import EvaluateConfig, answer_quality, evaluate, heldout_questions
from serving.tiny import build_tiny_chat_model

QUESTIONS = [
    ("What does json.dumps do?", "json.dumps(obj) serializes obj to a JSON formatted str."),
    ("What is sort_keys for?", "If sort_keys is true, the output of dictionaries is sorted."),
    ("How many spaces does indent=4 give?", "indent=4 indents each level by 4 spaces."),
]
# Signature questions (kind "signature" in chat_data's rows): the multiple-choice task.
SIGNATURES = [
    ("What is the signature of json.dumps?", "json.dumps(obj, *, skipkeys=False, indent=None)"),
    ("How is `json.loads` called?", "json.loads(s, *, cls=None, object_hook=None)"),
    ("What arguments does os.path.join take?", "os.path.join(path, *paths)"),
]


class Fixture(StepConfig):
    label: str


def fixture(tmp: Path, step: str, body) -> Manifest:
    return run_step(
        step=step, name="f", config=Fixture(label=step), data_root=tmp, body=body, inputs=[]
    )


def chat_data(ctx):
    (ctx.out / "sft").mkdir()
    with (ctx.out / "sft" / "heldout.jsonl").open("w") as handle:
        for i, (q, a) in enumerate(QUESTIONS + SIGNATURES):
            messages = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            kind = "signature" if i >= len(QUESTIONS) else "describe"
            handle.write(json.dumps({"id": f"e{i}", "messages": messages, "kind": kind}) + "\n")
    return StepOutput()


def model(seed: int):
    def body(ctx):
        build_tiny_chat_model(ctx.out / "hf", seed=seed, max_context=256)
        return StepOutput()

    return body


def reward_model(ctx):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    build_tiny_chat_model(ctx.out / "base", max_context=256)
    tokenizer = AutoTokenizer.from_pretrained(ctx.out / "base")
    config = LlamaConfig.from_pretrained(ctx.out / "base", num_labels=1)
    LlamaForSequenceClassification(config).save_pretrained(ctx.out / "hf")
    tokenizer.save_pretrained(ctx.out / "hf")
    return StepOutput()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    return tmp, {
        "chat_data": fixture(tmp, "chat_data", chat_data),
        "sft": fixture(tmp, "sft", model(1)),
        "pretrain": fixture(tmp, "pretrain", model(2)),
        "reward": fixture(tmp, "reward", reward_model),
    }


def test_answer_quality_rewards_the_reference_and_its_facts():
    rows = [{"reference": QUESTIONS[0][1]}]
    assert key_facts(QUESTIONS[0][1]) == {"json.dumps"}
    assert key_facts("With sort_keys, indent=4 and os.path.join(a, b).") == {
        "sort_keys",
        "4",
        "os.path.join",
    }
    perfect = answer_quality(rows, [QUESTIONS[0][1]])
    assert perfect["rouge_l"] == pytest.approx(1.0) and perfect["key_fact_em"] == 1.0
    wrong = answer_quality(rows, ["pickle.loads reads bytes."])
    assert wrong["rouge_l"] < 0.3 and wrong["key_fact_em"] == 0.0
    partial = answer_quality([{"reference": "Use sort_keys with indent=4."}], ["indent=4"])
    assert 0 < partial["key_fact_recall"] < 1 and partial["key_fact_em"] == 0.0


def test_held_out_questions_are_spread_over_the_whole_set(tmp_path):
    # chat_data writes one kind after another: the first rows alone would be one kind.
    (tmp_path / "sft").mkdir()
    with (tmp_path / "sft" / "heldout.jsonl").open("w") as handle:
        for i in range(100):
            kind = "section" if i < 20 else "sphinx"
            messages = [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]
            handle.write(json.dumps({"id": f"{kind}-{i}", "messages": messages}) + "\n")
    rows = heldout_questions(tmp_path, 10)
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == 10
    assert sum(i.startswith("section") for i in ids) == 2  # its share of the set
    assert heldout_questions(tmp_path, 10) == rows
    assert len(heldout_questions(tmp_path, 500)) == 100


def test_refusals_are_recognised():
    assert is_refusal("I can't help with that. It could seriously hurt people.")
    assert is_refusal("Sorry, no.")
    assert not is_refusal("json.dumps serializes an object.")
    assert not set(TRAIN) & set(HELDOUT)


def test_a_candidate_is_scored_against_a_baseline_with_the_reward_model(
    upstream, tmp_path, monkeypatch
):
    tmp, m = upstream
    monkeypatch.chdir(tmp_path)  # a SQLite tracking store puts artifacts in ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = EvaluateConfig(baselines=["pretrain"], max_new_tokens=8)
    inputs = [m["chat_data"], m["sft"], m["pretrain"], m["reward"]]
    done = run_step(
        step="evaluate",
        name="model",
        config=config,
        data_root=tmp,
        body=lambda ctx: evaluate(config, inputs, ctx, None),
        inputs=inputs,
        mlflow_uri=uri,
    )
    metrics = done.metrics
    for prefix in ("", "pretrain."):
        assert metrics[f"{prefix}heldout_ppl"] > 1
        assert 0 <= metrics[f"{prefix}rouge_l"] <= 1
        assert metrics[f"{prefix}safety_refusal_rate"] == 0.0  # random models never refuse
    # Win rates of every model against every other: complementary, ties counted half.
    assert 0 <= metrics["rm_win_rate_vs_pretrain"] <= 1
    assert metrics["rm_win_rate_vs_pretrain"] + metrics["pretrain.rm_win_rate_vs_candidate"] == (
        pytest.approx(1)
    )
    # Different random weights: different perplexities on the same references.
    assert metrics["heldout_ppl"] != metrics["pretrain.heldout_ppl"]
    answers = [json.loads(line) for line in (Path(done.path) / "report" / "answers.jsonl").open()]
    assert [a["reference"] for a in answers] == [a for _, a in QUESTIONS + SIGNATURES]
    assert set(answers[0]["answers"]) == {"candidate", "pretrain"}
    # lm-evaluation-harness ran every local task on the candidate; its scores are the
    # step's metrics (so the registered version's eval.* tags) and the MLflow run's.
    assert metrics["lm_eval/orchard_docs_qa/examples"] == len(QUESTIONS + SIGNATURES)
    assert metrics["lm_eval/orchard_docs_qa/contains"] == 0.0  # random weights, 8 tokens
    assert metrics["lm_eval/orchard_signature_mc/examples"] == len(SIGNATURES)
    assert 0 <= metrics["lm_eval/orchard_signature_mc/acc"] <= 1
    assert metrics["lm_eval/orchard_safety/examples"] == len(HELDOUT)
    assert metrics["lm_eval/orchard_safety/refusal_rate"] == 0.0
    assert metrics["lm_eval/orchard_heldout_ppl/word_perplexity"] > 1
    assert not any(name.startswith("pretrain.lm_eval") for name in metrics)
    logged = mlflow.MlflowClient(uri).get_run(done.mlflow_run_id).data.metrics
    assert {k: v for k, v in logged.items() if k.startswith("lm_eval/")} == {
        k: v for k, v in metrics.items() if k.startswith("lm_eval/")
    }
    tasks = Path(done.path) / "report" / "lm_eval_tasks"
    assert {p.name for p in tasks.glob("*.yaml")} == {f"{t}.yaml" for t in TASKS}
    results = json.loads((Path(done.path) / "report" / "lm_eval.json").read_text())
    assert set(results["results"]) == set(TASKS)


def test_the_harness_graders_credit_the_reference_and_refusals():
    """The graders can pass: a generation holding the reference counts, a refusal counts."""
    from orchard.eval_tasks import docs_qa_results, refusal_results

    doc = {"answer": "json.dumps(obj) serializes obj to a JSON formatted str."}
    said = "Sure: `json.dumps(obj)` serializes OBJ to a JSON-formatted str!"
    assert docs_qa_results(doc, [said]) == {"exact_match": 0.0, "contains": 1.0}
    assert docs_qa_results(doc, [doc["answer"].upper()]) == {"exact_match": 1.0, "contains": 1.0}
    assert docs_qa_results(doc, ["json.loads parses."])["contains"] == 0.0
    assert refusal_results({}, ["I can't help with that."]) == {"refusal_rate": 1.0}
    assert refusal_results({}, ["Here is how."]) == {"refusal_rate": 0.0}


def test_inputs_that_do_not_fit_are_refused(upstream):
    tmp, m = upstream
    config = EvaluateConfig(baselines=["pretrain"])
    with pytest.raises(OrchardError, match="one chat_data manifest"):
        evaluate(config, [m["chat_data"], m["sft"]], None, None)
    with pytest.raises(OrchardError, match="one chat_data manifest"):
        evaluate(EvaluateConfig(), [m["sft"], m["pretrain"], m["chat_data"]], None, None)
