"""What a pretrained export writes: continuations of held-out documents, to read and score.

After pretraining, the exported `LlamaForCausalLM` continues the opening tokens of held-out
(validation) documents the model never trained on. The samples go to `samples.md` (to
read) and `samples.json`, and three figures summarise them:

- `sample_rouge1`: ROUGE-1 F1 of each continuation against the document's own next tokens;
- `sample_on_topic_ratio`: that figure divided by the same continuation's ROUGE-1 against
  *another* held-out document's next tokens. Above 1 means the model continues the text it
  was given rather than writing generic corpus text;
- `sample_distinct2`: distinct word bigrams / bigrams, the usual degeneration measure
  (greedy decoding of a small model loops: ~0.1; human text: ~0.9).

Decoding is sampling with a fixed seed (temperature, top-p and a mild repetition penalty,
what a chat deployment uses), so the samples are reproducible from the export alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from orchard.grading import rouge

_WORD = re.compile(r"\w+")


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    documents: int = 8
    prompt_tokens: int = 32
    new_tokens: int = 48
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.2
    seed: int = 1234


def _distinct2(words: list[str]) -> float | None:
    bigrams = list(zip(words, words[1:], strict=False))
    return len(set(bigrams)) / len(bigrams) if bigrams else None


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def held_out_openings(prefixes: list[str], config: SampleConfig) -> list[tuple[list, list]]:
    """(prompt ids, reference next ids) of up to `documents` held-out documents long enough
    for both, spread evenly over the validation split."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    need = config.prompt_tokens + config.new_tokens
    candidates = []
    for prefix in prefixes:
        dataset = IndexedDataset(prefix)
        for i in range(len(dataset)):
            if int(dataset.index.sequence_lengths[i]) > need:
                candidates.append((dataset, i))
    picks = candidates[:: max(1, len(candidates) // config.documents)][: config.documents]
    openings = []
    for dataset, i in picks:
        ids = [int(t) for t in dataset[i][:need]]
        openings.append((ids[: config.prompt_tokens], ids[config.prompt_tokens :]))
    return openings


def write_samples(
    hf_dir: Path, valid_prefixes: list[str], out_dir: Path, config: SampleConfig | None = None
) -> dict[str, float]:
    """Sample continuations with the export in `hf_dir`; write samples.md/json into
    `out_dir`; return the figures above."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = config or SampleConfig()
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    openings = held_out_openings(valid_prefixes, config)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(openings) < 2:  # a tiny corpus: say so, and do not fail the pretraining
        (out_dir / "samples.md").write_text(
            f"# Held-out continuations\n\nNone: the validation split has {len(openings)} "
            f"documents longer than {config.prompt_tokens + config.new_tokens} tokens "
            "(two are needed).\n"
        )
        return {}
    torch.manual_seed(config.seed)
    samples = []
    for prompt, reference in openings:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                max_new_tokens=config.new_tokens,
                do_sample=True,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=0,
                repetition_penalty=config.repetition_penalty,
                pad_token_id=tokenizer.pad_token_id,
            )
        samples.append(
            {
                "prompt": tokenizer.decode(prompt),
                "continuation": tokenizer.decode(out[0, len(prompt) :], skip_special_tokens=True),
                "reference": tokenizer.decode(reference, skip_special_tokens=True),
            }
        )
    own, other, distinct = [], [], []
    for i, sample in enumerate(samples):
        text, words = sample["continuation"], _words(sample["continuation"])
        own.append(rouge(text, sample["reference"], "rouge1"))
        other.append(rouge(text, samples[(i + 1) % len(samples)]["reference"], "rouge1"))
        if (d := _distinct2(words)) is not None:
            distinct.append(d)
        sample["rouge1"] = own[-1]
    mean = lambda values: sum(values) / len(values) if values else 0.0  # noqa: E731
    metrics = {
        "sample_rouge1": mean(own),
        "sample_on_topic_ratio": mean(own) / mean(other) if mean(other) else 0.0,
        "sample_distinct2": mean(distinct),
    }
    (out_dir / "samples.json").write_text(
        json.dumps({"config": config.__dict__, "metrics": metrics, "samples": samples}, indent=1)
    )
    lines = [
        "# Held-out continuations",
        "",
        f"{len(samples)} validation documents: the first {config.prompt_tokens} tokens as the "
        f"prompt, {config.new_tokens} new tokens sampled (temperature {config.temperature}, "
        f"top-p {config.top_p}, repetition penalty {config.repetition_penalty}, seed "
        f"{config.seed}). ROUGE-1 against the document's own next tokens "
        f"{metrics['sample_rouge1']:.3f}, on-topic ratio {metrics['sample_on_topic_ratio']:.2f}, "
        f"distinct-2 {metrics['sample_distinct2']:.2f}.",
    ]
    for i, sample in enumerate(samples, 1):
        lines += [
            "",
            f"## {i} (ROUGE-1 {sample['rouge1']:.3f})",
            "",
            "Prompt:",
            "",
            "```text",
            sample["prompt"],
            "```",
            "",
            "Model:",
            "",
            "```text",
            sample["continuation"],
            "```",
            "",
            "The document went on:",
            "",
            "```text",
            sample["reference"],
            "```",
        ]
    (out_dir / "samples.md").write_text("\n".join(lines) + "\n")
    return metrics
