"""Held-out documentation questions answered by two (or more) chat models, side by side.

    .venv/bin/python bench/heldout_answers.py --chat <chat_data output> \\
        --model champion --model challenger [--count 5]

A model is a registry alias of `orchard-chat` (`champion`, `challenger`; loaded from
MLflow at `ORCHARD_MLFLOW_URI`, as evaluate loads the champion) or a Hugging Face
directory (a step's `hf/`), optionally labelled `label=path`. The questions are the
chat data's held-out split (entries no model trained on), `--count` of them spread over
it as evaluate spreads its sample; only documentation questions (no refusals). Each model
answers greedily with evaluate's own decoding (`ray_jobs.evaluate.Judged`, max 96 new
tokens). Prints Markdown: the question, the reference answer, each model's answer.
"""

from __future__ import annotations

import os
import sys

# Orchard's packages, when run as `python bench/<name>.py` from anywhere.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402


def load(spec: str, config):
    """(label, Judged) of `label=path`, a path, or a registry alias."""
    from ray_jobs.evaluate import Judged

    label, _, where = spec.rpartition("=")
    if Path(where).is_dir():
        return label or Path(where).parent.name, Judged.from_dir(label, Path(where), config)
    import mlflow

    from orchard.settings import load_settings

    settings = load_settings()
    mlflow.set_tracking_uri(settings.mlflow_uri)
    uri = f"models:/{settings.model_name}@{where}"
    parts = mlflow.transformers.load_model(uri, return_type="components")
    version = mlflow.MlflowClient().get_model_version_by_alias(settings.model_name, where)
    name = f"{label or where} (version {version.version}, {version.tags.get('orchard.model_step')}"
    base = version.tags.get("orchard.base.display_name")
    name += f", adapted from {base})" if base else ", from scratch)"
    return name, Judged(where, parts["model"], parts["tokenizer"], config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chat", type=Path, required=True, help="A chat_data output dir.")
    parser.add_argument("--model", action="append", required=True, help="Alias or hf/ dir.")
    parser.add_argument("--count", type=int, default=5)
    args = parser.parse_args()

    from model.posttrain import spread
    from ray_jobs.evaluate import EvaluateConfig, heldout_questions

    config = EvaluateConfig()
    rows = [r for r in heldout_questions(args.chat, 10**6) if r["kind"] != "refusal"]
    rows = spread(rows, args.count)
    models = [load(spec, config) for spec in args.model]
    answers = {name: judged.answer([row["prompt"] for row in rows]) for name, judged in models}
    for i, row in enumerate(rows, 1):
        print(f"### {i}. {row['prompt'][-1]['content']}\n")
        print(f"*Reference:* {row['reference']}\n")
        for name, texts in answers.items():
            print(f"*{name}:* {texts[i - 1]}\n")


if __name__ == "__main__":
    main()
