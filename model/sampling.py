"""A Hugging Face chat model's own answers: what the chat_data step uses as hard negatives
(`base_sample`) in its preference pairs."""

from __future__ import annotations

from pathlib import Path

from orchard.errors import OrchardError


def greedy_answers(
    hf_dir: Path, prompts: list[list[dict]], max_new_tokens: int, batch_size: int
) -> list[str]:
    """The model's own greedy answers, generated in batches with left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    if not tokenizer.chat_template:
        raise OrchardError(f"{hf_dir} has no chat template: its tokenizer cannot ask questions")
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    context = getattr(model.config, "max_position_embeddings", 2048)
    limit = max(8, context - max_new_tokens)
    texts = [
        tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    order = sorted(range(len(texts)), key=lambda i: (len(texts[i]), i))  # less padding
    answers: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        encoded = tokenizer(
            [texts[i] for i in batch],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=limit,
            add_special_tokens=False,
        )
        with torch.inference_mode():
            out = model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        decoded = tokenizer.batch_decode(
            out[:, encoded["input_ids"].shape[1] :], skip_special_tokens=True
        )
        answers |= {i: text.strip() for i, text in zip(batch, decoded, strict=True)}
    return [answers[i] for i in range(len(texts))]
