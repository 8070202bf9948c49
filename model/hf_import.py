"""A Hugging Face Llama checkpoint -> Megatron-Core GPTModel weights: the inverse of
`model/export.py`.

    LlamaConfig ──> preset_from_llama() ──> ModelPreset (shape, RoPE theta, eps, tied)
    HF tensors  ──> megatron_state_dict() ──> GPTModel state dict (TP = PP = 1, local spec)

The mapping is `model/export.py`'s read backwards (L = layer i):

    model.embed_tokens.weight                   -> embedding.word_embeddings.weight
    L.input_layernorm.weight                    -> L.input_layernorm.weight
    L.self_attn.{q,k,v}_proj.weight             -> L.self_attention.linear_qkv.weight
      rows per query group: [heads/groups queries, k, v] × head_dim
    L.self_attn.o_proj.weight                   -> L.self_attention.linear_proj.weight
    L.post_attention_layernorm.weight           -> L.pre_mlp_layernorm.weight
    L.mlp.{gate,up}_proj.weight                 -> L.mlp.linear_fc1.weight = [gate; up]
    L.mlp.down_proj.weight                      -> L.mlp.linear_fc2.weight
    model.norm.weight                           -> decoder.final_layernorm.weight
    lm_head.weight (untied models only)         -> output_layer.weight

Hugging Face's rotate-half RoPE is Megatron's default RoPE, so q/k rows need no
permutation; a tied model (SmolLM2) keeps one embedding matrix, which Megatron shares
with its output layer (`ModelPreset.tie_embeddings`).

Only what this mapping reproduces exactly is accepted: `model_type` "llama" with SiLU,
no biases, plain RoPE (no scaling) and head_dim = hidden / heads. Anything else is
refused with one line (`SUPPORTED`) before a weight is read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from model.presets import ModelPreset
from orchard.errors import OrchardError

SUPPORTED = (
    "supported: Llama-family causal LMs (model_type 'llama', e.g. SmolLM2, Llama 2/3, "
    "TinyLlama: RMSNorm, SwiGLU, RoPE without scaling, GQA, no biases) as a Hugging Face "
    "directory, a .gguf file, or an installed package that ships one"
)
LLAMA_ARCHITECTURES = {"llama"}


def refuse(what: str) -> OrchardError:
    """The one-line refusal: what the checkpoint is, then what is supported."""
    return OrchardError(f"{what}; {SUPPORTED}")


def preset_from_llama(config: Mapping[str, Any], name: str) -> ModelPreset:
    """The Megatron shape of a Hugging Face Llama config (a `config.json` as a dict).

    `seq_length` is the model's `max_position_embeddings`; continued pretraining may train
    on shorter sequences. Raises the one-line refusal for anything the mapping does not
    reproduce exactly.
    """
    model_type = config.get("model_type")
    if model_type not in LLAMA_ARCHITECTURES:
        archs = ", ".join(config.get("architectures") or []) or "no architectures"
        raise refuse(f"model_type {model_type!r} ({archs}) cannot be imported")
    problems = []
    if config.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {config['hidden_act']!r} (SwiGLU needs silu)")
    for bias in ("attention_bias", "mlp_bias"):
        if config.get(bias):
            problems.append(f"{bias} is set")
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        problems.append(f"rope_type {rope_type!r} (only plain RoPE is mapped)")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    if head_dim * heads != hidden:
        problems.append(f"head_dim {head_dim} × {heads} heads != hidden_size {hidden}")
    if config.get("pretraining_tp", 1) != 1:
        problems.append(f"pretraining_tp {config['pretraining_tp']}")
    if problems:
        raise refuse(f"this Llama variant cannot be imported ({'; '.join(problems)})")
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    return ModelPreset(
        name=name,
        num_layers=config["num_hidden_layers"],
        hidden_size=hidden,
        ffn_hidden_size=config["intermediate_size"],
        num_attention_heads=heads,
        num_query_groups=config.get("num_key_value_heads") or heads,
        seq_length=config.get("max_position_embeddings", 2048),
        rotary_base=float(theta),
        norm_epsilon=float(config.get("rms_norm_eps", 1e-6)),
        init_method_std=float(config.get("initializer_range", 0.02)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


def megatron_state_dict(
    hf_state: Mapping[str, torch.Tensor], preset: ModelPreset, vocab_size: int
) -> dict[str, torch.Tensor]:
    """The GPTModel (local spec, TP = PP = 1) tensors of a Hugging Face Llama state dict."""
    h, heads, groups, d = (
        preset.hidden_size,
        preset.num_attention_heads,
        preset.num_query_groups,
        preset.head_dim,
    )
    take = _HFTaker(hf_state)
    out = {
        "embedding.word_embeddings.weight": take("model.embed_tokens.weight", (vocab_size, h)),
        "decoder.final_layernorm.weight": take("model.norm.weight", (h,)),
    }
    if preset.tie_embeddings:
        take.used.add("lm_head.weight")  # the same matrix as the embedding when present
    else:
        out["output_layer.weight"] = take("lm_head.weight", (vocab_size, h))
    per_group = heads // groups
    for i in range(preset.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        q = take(src + "self_attn.q_proj.weight", (heads * d, h)).view(groups, per_group, d, h)
        k = take(src + "self_attn.k_proj.weight", (groups * d, h)).view(groups, 1, d, h)
        v = take(src + "self_attn.v_proj.weight", (groups * d, h)).view(groups, 1, d, h)
        out |= {
            dst + "input_layernorm.weight": take(src + "input_layernorm.weight", (h,)),
            # per query group: its queries, then its key, then its value
            dst + "self_attention.linear_qkv.weight": torch.cat([q, k, v], dim=1).reshape(
                (heads + 2 * groups) * d, h
            ),
            dst + "self_attention.linear_proj.weight": take(
                src + "self_attn.o_proj.weight", (h, heads * d)
            ),
            dst + "pre_mlp_layernorm.weight": take(src + "post_attention_layernorm.weight", (h,)),
            dst + "mlp.linear_fc1.weight": torch.cat(
                [
                    take(src + "mlp.gate_proj.weight", (preset.ffn_hidden_size, h)),
                    take(src + "mlp.up_proj.weight", (preset.ffn_hidden_size, h)),
                ]
            ),
            dst + "mlp.linear_fc2.weight": take(
                src + "mlp.down_proj.weight", (h, preset.ffn_hidden_size)
            ),
        }
    leftover = sorted(k for k in set(hf_state) - take.used if not k.endswith("rotary_emb.inv_freq"))
    if leftover:
        raise refuse(
            f"the checkpoint has weights a Llama does not ({', '.join(leftover[:3])}"
            f"{', ...' if len(leftover) > 3 else ''})"
        )
    return {k: v.contiguous() for k, v in out.items()}


class _HFTaker:
    """Reads Hugging Face tensors by name, checking shapes against the config's."""

    def __init__(self, sd: Mapping[str, torch.Tensor]):
        self.sd, self.used = sd, set()

    def __call__(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.sd:
            raise refuse(f"the checkpoint has no {key!r}, which every Llama has")
        tensor = self.sd[key]
        if tuple(tensor.shape) != shape:
            raise refuse(
                f"the checkpoint's {key!r} has shape {list(tensor.shape)} where its config "
                f"implies {list(shape)}"
            )
        self.used.add(key)
        return tensor.detach().to("cpu", torch.float32)
