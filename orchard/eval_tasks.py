"""Orchard's evaluation tasks, as EleutherAI lm-evaluation-harness (`lm-eval`) task files.

Built from the held-out split of `chat_data` (`sft/heldout.jsonl`) and `orchard.safety`:
- `orchard_docs_qa` (generate_until): the held-out questions, greedy answers graded
  `exact_match` (the whole reference, normalised) and `contains` (the normalised
  reference occurs in the normalised answer);
- `orchard_signature_mc` (multiple_choice): "What is the signature of X?" with the true
  signature among up to three other held-out entries' signatures; `acc`, `acc_norm`;
- `orchard_safety` (generate_until): the held-out harmful requests; `refusal_rate`;
- `orchard_heldout_ppl` (loglikelihood_rolling): the held-out reference answers as plain
  text; `word_perplexity`, `byte_perplexity`, `bits_per_byte`.

Every task reads a local JSONL file (`dataset_path: json`, `data_files`) written beside
its YAML: nothing is downloaded. The same task rows feed decontamination (`eval_texts`),
so training sets are checked against exactly what is evaluated. Normalisation of the
graded answers: lower-case, runs of non-alphanumerics to one space, stripped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchard.errors import OrchardError

log = logging.getLogger("orchard.eval_tasks")

DOCS_QA = "orchard_docs_qa"
SIGNATURE_MC = "orchard_signature_mc"
SAFETY = "orchard_safety"
HELDOUT_PPL = "orchard_heldout_ppl"
TASKS = (DOCS_QA, SIGNATURE_MC, SAFETY, HELDOUT_PPL)
CHOICES = 4
_NON_WORD = re.compile(r"[^\w]+|_+")


def normalise(text: str) -> str:
    return _NON_WORD.sub(" ", text.casefold()).strip()


def _hash(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:8])


def _question(messages: list[dict]) -> str:
    return next(m["content"] for m in reversed(messages[:-1]) if m["role"] == "user")


def task_docs(heldout: Sequence[dict]) -> dict[str, list[dict[str, Any]]]:
    """The rows of every task from held-out SFT rows (`{"id", "messages", "kind"?}`, the
    last turn the reference answer). Signature questions are the rows of kind `signature`."""
    from orchard.safety import HELDOUT

    rows = [
        row
        for row in heldout
        if len(row["messages"]) >= 2
        and row["messages"][-1]["role"] == "assistant"
        and any(m["role"] == "user" for m in row["messages"][:-1])
    ]
    qa = [
        {"id": str(row["id"]), "question": _question(row["messages"]), "answer": a}
        for row in rows
        if (a := row["messages"][-1]["content"].strip())
    ]
    signatures = [doc for doc, row in zip(qa, rows, strict=True) if row.get("kind") == "signature"]
    mc = []
    for doc in signatures:
        others = sorted(
            {o["answer"] for o in signatures if normalise(o["answer"]) != normalise(doc["answer"])},
            key=lambda text: (_hash(doc["id"], "mc", text), text),
        )[: CHOICES - 1]
        if not others:
            continue
        choices = sorted([doc["answer"], *others], key=lambda text: _hash(doc["id"], text))
        mc.append(
            {
                "id": doc["id"],
                "question": doc["question"],
                "choices": choices,
                "label": choices.index(doc["answer"]),
            }
        )
    texts = list(dict.fromkeys(doc["answer"] for doc in qa))
    return {
        DOCS_QA: qa,
        SIGNATURE_MC: mc,
        SAFETY: [{"id": f"safety-{i}", "prompt": p} for i, p in enumerate(HELDOUT)],
        HELDOUT_PPL: [{"id": f"text-{i}", "text": t} for i, t in enumerate(texts)],
    }


def eval_texts(tasks: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every prompt and answer of the tasks: what a training row must not contain."""
    texts: list[str] = []
    for doc in tasks.get(DOCS_QA, []):
        texts += [doc["question"], doc["answer"]]
    for doc in tasks.get(SIGNATURE_MC, []):
        texts += [doc["question"], *doc["choices"]]
    texts += [doc["prompt"] for doc in tasks.get(SAFETY, [])]
    texts += [doc["text"] for doc in tasks.get(HELDOUT_PPL, [])]
    return texts


def read_heldout(chat_data: Path) -> list[dict]:
    """The held-out SFT rows of a chat_data output directory."""
    path = chat_data / "sft" / "heldout.jsonl"
    if not path.is_file():
        raise OrchardError(f"{path} is missing: pass a finished chat_data manifest")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# -- metrics, called by lm-eval through the task directory's utils.py ----------------------


def docs_qa_results(doc: dict, results: list[str]) -> dict[str, float]:
    answer, reference = normalise(results[0]), normalise(doc["answer"])
    return {
        "exact_match": float(answer == reference),
        "contains": float(bool(reference) and reference in answer),
    }


def refusal_results(doc: dict, results: list[str]) -> dict[str, float]:
    from orchard.safety import is_refusal

    return {"refusal_rate": float(is_refusal(results[0]))}


# -- task files --------------------------------------------------------------------------

_UTILS = '''"""Metrics of Orchard's local lm-eval tasks (written by orchard.eval_tasks)."""

from orchard.eval_tasks import docs_qa_results, refusal_results  # noqa: F401
'''


def _mean(*metrics: str) -> list[dict[str, Any]]:
    return [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in metrics]


def task_configs(max_gen_toks: int) -> dict[str, dict[str, Any]]:
    """The YAML of each task (without `task`, `dataset_path` and `dataset_kwargs`)."""
    generate = {"until": [], "do_sample": False, "max_gen_toks": max_gen_toks}
    return {
        DOCS_QA: {
            "output_type": "generate_until",
            "doc_to_text": "{{question}}",
            "doc_to_target": "{{answer}}",
            "process_results": "!function utils.docs_qa_results",
            "generation_kwargs": generate,
            "metric_list": _mean("exact_match", "contains"),
        },
        SIGNATURE_MC: {
            "output_type": "multiple_choice",
            "doc_to_text": "{{question}}\nAnswer:",
            "doc_to_choice": "choices",
            "doc_to_target": "label",
            "metric_list": _mean("acc", "acc_norm"),
        },
        SAFETY: {
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "",
            "process_results": "!function utils.refusal_results",
            "generation_kwargs": generate | {"max_gen_toks": min(max_gen_toks, 32)},
            "metric_list": _mean("refusal_rate"),
        },
        HELDOUT_PPL: {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{text}}",
            "metric_list": [
                {"metric": m, "aggregation": a, "higher_is_better": False}
                for m, a in (
                    ("word_perplexity", "weighted_perplexity"),
                    ("byte_perplexity", "weighted_perplexity"),
                    ("bits_per_byte", "bits_per_byte"),
                )
            ],
        },
    }


def write_task_dir(
    directory: Path,
    tasks: dict[str, list[dict]],
    max_gen_toks: int,
    cache_dir: Path | None = None,
) -> list[str]:
    """One `<task>.yaml` + `<task>.jsonl` per non-empty task, and `utils.py`; returns the
    names of the tasks written. `lm_eval --include_path <directory> --tasks <name>` runs
    one by hand. `cache_dir`: where `datasets` caches the JSON it reads (default: its own)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "utils.py").write_text(_UTILS)
    written = []
    for name, config in task_configs(max_gen_toks).items():
        docs = tasks.get(name, [])
        if not docs:
            log.info("task %s has no rows: not written", name)
            continue
        data = directory / f"{name}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for doc in docs:
                handle.write(json.dumps(doc, ensure_ascii=False) + "\n")
        dataset = {"data_files": {"test": str(data.resolve())}}
        if cache_dir is not None:
            dataset["cache_dir"] = str(cache_dir.resolve())
        lines = [
            f"task: {name}",
            "dataset_path: json",
            f"dataset_kwargs: {json.dumps(dataset)}",
            "test_split: test",
        ]
        for key, value in config.items():
            if isinstance(value, str) and value.startswith("!function"):
                lines.append(f"{key}: {value}")
            else:
                lines.append(f"{key}: {json.dumps(value)}")
        lines.append("metadata: {version: 1.0}")
        (directory / f"{name}.yaml").write_text("\n".join(lines) + "\n")
        written.append(name)
    return written


# -- running -----------------------------------------------------------------------------


def flatten(results: dict[str, dict[str, Any]]) -> dict[str, float]:
    """lm-eval's `results` as `lm_eval/<task>/<metric>` (no stderr, no filter suffix;
    lm-eval's `sample_len` as `examples`)."""
    metrics: dict[str, float] = {}
    for task, values in results.items():
        for key, value in values.items():
            metric, _, _ = key.partition(",")
            metric = "examples" if metric == "sample_len" else metric
            if metric.endswith("_stderr") or metric == "alias":
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                metrics[f"lm_eval/{task}/{metric}"] = float(value)
    return metrics


def run_harness(
    model: Any,
    tokenizer: Any,
    task_dir: Path,
    tasks: list[str],
    *,
    batch_size: int,
    max_length: int,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Run `tasks` of `task_dir` on an already-loaded HF causal LM with lm-eval's
    `simple_evaluate` (chat template applied, offline); returns the flattened metrics and
    lm-eval's own results table (for the report)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(
        pretrained=model,
        tokenizer=tokenizer,
        batch_size=batch_size,
        max_length=max_length,
        device=str(model.device),
    )
    return harness_results(
        lm, task_dir, tasks, chat_template=bool(getattr(tokenizer, "chat_template", None))
    )


def harness_results(
    lm: Any, task_dir: Path, tasks: list[str], *, chat_template: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    """`tasks` of `task_dir` on any lm-eval model (`run_harness`'s HFLM, or the vLLM backend
    of bench/quantized_eval.py): the flattened metrics and lm-eval's results table."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=manager,
        apply_chat_template=chat_template,
        log_samples=False,
        bootstrap_iters=0,
        random_seed=0,
        numpy_random_seed=0,
        torch_random_seed=0,
    )
    if not out or "results" not in out:
        raise OrchardError(f"lm-eval returned no results for {tasks} in {task_dir}")
    return flatten(out["results"]), {
        "results": out["results"],
        "versions": out.get("versions"),
        "n-samples": out.get("n-samples"),
        "lm_eval_version": out.get("config", {}).get("lm_eval_version"),
    }
