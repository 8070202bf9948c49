"""A champion for the feedback loop on a stack that has none: a tiny random chat model
(`serving.tiny`) registered by the real register step, with the lineage a run from
feedback starts from (tag `orchard.model_step`, the model's and its chat data's
manifests). For the loop's stack test and `bench/loop.py --tiny-champion`.

The chat data is small and made here: held-out rows (what evaluation asks, and what the
feedback is decontaminated against) and the original preference pairs the feedback is
mixed with. The model is random: it answers with random words up to `max_tokens`, which
is all the loop's wiring needs.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, run_step

HELDOUT = (
    ("What does json.loads return for a JSON object?", "A dict."),
    ("Which argument of json.dumps pretty-prints?", "indent."),
)


class LoopFixture(StepConfig):
    label: str


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def chat_data(root: Path, heldout: tuple[tuple[str, str], ...] = HELDOUT) -> Manifest:
    """A `chat_data` output: `heldout` (question, answer) rows in `sft/heldout.jsonl` and
    six original preference pairs in `preference/train.jsonl`."""

    def body(ctx: StepContext) -> StepOutput:
        held = [
            {
                "id": f"h{i}",
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ],
            }
            for i, (question, answer) in enumerate(heldout)
        ]
        pairs = [
            {
                "id": f"p{i}",
                "prompt": [{"role": "user", "content": f"What is option {i}?"}],
                "chosen": [{"role": "assistant", "content": f"Option {i} sorts."}],
                "rejected": [{"role": "assistant", "content": "I do not know."}],
            }
            for i in range(6)
        ]
        _jsonl(ctx.out / "sft" / "heldout.jsonl", held)
        _jsonl(ctx.out / "preference" / "train.jsonl", pairs)
        return StepOutput(counts={"heldout": len(held), "pairs": len(pairs)})

    label = json.dumps(heldout)
    return run_step(
        step="chat_data", name="loop", config=LoopFixture(label=label), data_root=root, body=body
    )


def register_tiny_champion(
    settings: Settings, heldout: tuple[tuple[str, str], ...] = HELDOUT, seed: int = 7
) -> str:
    """Register a tiny chat model (an `sft` output on `chat_data`) as `champion` of
    `settings.model_name`; returns its version."""
    from ray_jobs import register
    from serving.tiny import build_tiny_chat_model

    root = Path(settings.data_dir) / "loop-champion"
    chat = chat_data(root, heldout)

    def body(ctx: StepContext) -> StepOutput:
        build_tiny_chat_model(ctx.out / "hf", seed=seed, max_context=256)
        return StepOutput()

    sft = run_step(
        step="sft",
        name="loop",
        config=LoopFixture(label=f"tiny-{seed}"),
        data_root=root,
        body=body,
        inputs=[chat],
    )
    config = register.RegisterConfig(model_name=settings.model_name, alias="champion")
    return str(register.run(config, [sft], settings).counts["version"])
