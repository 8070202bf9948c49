"""A tiny, randomly initialised chat model in the layout serving expects.

Serving can be built, tested and benchmarked before the pipeline produces a real model:
this writes a Hugging Face directory (a `LlamaForCausalLM` with a few layers, a byte-level
BPE tokenizer in Orchard's chat format trained here on a few sentences) that `register_hf_model`
registers like the post-training step's output. Nothing is downloaded.

    .venv/bin/python -m serving.tiny DIR              # write the model directory
    .venv/bin/python -m serving.tiny DIR --register   # ...and register it in the stack's MLflow
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orchard.chat_format import train_bpe, wrap

_CORPUS = [
    "Orchard turns raw web data into a served chat model.",
    "The quick brown fox jumps over the lazy dog.",
    "Serving speaks the OpenAI API: chat completions, completions and models.",
    "A tiny model answers with random words, which is all a test needs.",
    "Hello! How can I help you today? Tell me about apples, pears and plums.",
]


def build_tokenizer(vocab_size: int = 320):
    """A byte-level BPE trained on a few sentences, in Orchard's chat format (the special
    tokens, their ids and the chat template of the tokenizer step)."""
    return wrap(train_bpe([_CORPUS * 4], vocab_size=vocab_size, min_frequency=1))


def build_tiny_chat_model(
    out_dir: str | Path,
    *,
    seed: int = 0,
    layers: int = 2,
    hidden: int = 64,
    ffn: int | None = None,
    heads: int = 4,
    kv_heads: int = 2,
    max_context: int = 256,
) -> Path:
    """Write a random `LlamaForCausalLM` + tokenizer to `out_dir`; return the directory."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    eos_ids = [tokenizer.eos_token_id]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=ffn or hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_context,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    # Random init gives near-uniform logits; a wider spread makes greedy choices robust
    # to float noise (batched vs single), like a trained model's peaked distributions.
    # End-of-turn rows are zeroed so greedy decoding talks until max_tokens (a random
    # model would otherwise stop at arbitrary points and make tests about length moot).
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
        model.lm_head.weight[eos_ids] = 0.0
    model.generation_config = GenerationConfig(
        eos_token_id=eos_ids, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--register", action="store_true", help="register it in MLflow")
    parser.add_argument("--alias", default="champion")
    parser.add_argument(
        "--max-context", type=int, default=256, help="positions: prompt + answer tokens"
    )
    args = parser.parse_args()
    path = build_tiny_chat_model(args.out_dir, max_context=args.max_context)
    print(f"tiny chat model written to {path}")
    if args.register:
        from orchard.registry import register_hf_model
        from orchard.settings import load_settings

        settings = load_settings()
        version = register_hf_model(
            path,
            tracking_uri=settings.mlflow_uri,
            name=settings.model_name,
            alias=args.alias,
            tags={"orchard.source": "serving.tiny (random weights)"},
        )
        print(f"registered {settings.model_name} version {version} as @{args.alias}")


if __name__ == "__main__":
    main()
