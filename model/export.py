"""Megatron GPTModel weights -> a Hugging Face `LlamaForCausalLM` directory.

The export is the hand-over format: everything after pretraining (TRL, MLflow's
`transformers` flavor, serving) loads it with `AutoModelForCausalLM.from_pretrained`.
The mapping (Megatron-Bridge's Llama mapping, checked by a logits test; L = layer i):

    embedding.word_embeddings.weight            -> model.embed_tokens.weight
    L.input_layernorm.weight (local spec)
      or L.self_attention.linear_qkv.layer_norm_weight (TE spec)
                                                -> L.input_layernorm.weight
    L.self_attention.linear_qkv.weight          -> L.self_attn.{q,k,v}_proj.weight
      rows per query group: [heads/groups queries, k, v] × head_dim
    L.self_attention.linear_proj.weight         -> L.self_attn.o_proj.weight
    L.pre_mlp_layernorm.weight (local spec)
      or L.mlp.linear_fc1.layer_norm_weight (TE spec)
                                                -> L.post_attention_layernorm.weight
    L.mlp.linear_fc1.weight = [gate; up]        -> L.mlp.{gate,up}_proj.weight
    L.mlp.linear_fc2.weight                     -> L.mlp.down_proj.weight
    decoder.final_layernorm.weight              -> model.norm.weight
    output_layer.weight                         -> lm_head.weight (untied presets; a
                                                   tied one's lm_head is the embedding)

Megatron's default (non-interleaved) RoPE is Hugging Face's
rotate-half RoPE, so q/k rows need no permutation. The state dict is a full one
(TP = PP = 1) as a training checkpoint holds it: `module.` prefixes of DDP/Float16
wrappers and `_extra_state` entries are ignored.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from model.presets import ModelPreset
from orchard.errors import OrchardError

# Files of a model directory that a tokenizer directory must not overwrite.
_MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors.index.json"}


def llama_config(
    preset: ModelPreset,
    vocab_size: int,
    tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None,
) -> LlamaConfig:
    """The Hugging Face config of the same architecture as `build_gpt(preset, vocab_size)`.

    bos/eos come from the tokenizer's `<|endoftext|>` and pad from `<|pad|>` when it has
    them, else from its own bos/eos/pad tokens. `tokenizer` may be a tokenizer, its
    directory, or None (no special ids: benchmarks).
    """
    if isinstance(tokenizer, str | os.PathLike):
        tokenizer = _load_tokenizer(Path(tokenizer))
    ids = _special_ids(tokenizer) if tokenizer is not None else {}
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=preset.hidden_size,
        intermediate_size=preset.ffn_hidden_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_query_groups,
        head_dim=preset.head_dim,
        hidden_act="silu",
        max_position_embeddings=preset.seq_length,
        initializer_range=preset.init_method_std,
        rms_norm_eps=preset.norm_epsilon,
        rope_parameters={"rope_type": "default", "rope_theta": float(preset.rotary_base)},
        tie_word_embeddings=preset.tie_embeddings,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=ids.get("bos"),
        eos_token_id=ids.get("eos"),
        pad_token_id=ids.get("pad"),
    )


def export_hf(
    model_state_dict: Mapping[str, torch.Tensor],
    preset: ModelPreset,
    vocab_size: int,
    tokenizer_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    base_hf_dir: str | os.PathLike | None = None,
) -> Path:
    """Write `out_dir` (config, safetensors weights, tokenizer files, chat template).

    `model_state_dict` is the GPTModel state dict of a TP = PP = 1 run (for example
    `Training.state_dict()["model"]`). The directory appears whole or not at all: it is
    written beside `out_dir` and renamed into place (replacing an older export).

    `base_hf_dir` (continued pretraining: the imported base model's `hf/`) keeps the base's
    own config and generation config (its bos/eos/pad ids, context length), after checking
    that it describes the same architecture as `preset`.
    """
    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    tokenizer = _load_tokenizer(tokenizer_dir)
    if len(tokenizer) > vocab_size:
        raise OrchardError(
            f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens but the model's "
            f"vocabulary is {vocab_size}: export with the tokenizer the model was trained with"
        )
    weights = hf_state_dict(model_state_dict, preset, vocab_size)
    config = llama_config(preset, vocab_size, tokenizer)
    if base_hf_dir is not None:
        config = _base_config(Path(base_hf_dir), config)
    config.dtype = dtype
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    load_llama_weights(model, weights, dtype)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        model.save_pretrained(staging, safe_serialization=True)
        for item in tokenizer_dir.iterdir():
            if item.is_file() and item.name not in _MODEL_FILES:
                shutil.copy2(item, staging / item.name)
        if base_hf_dir is not None and (Path(base_hf_dir) / "generation_config.json").is_file():
            shutil.copy2(Path(base_hf_dir) / "generation_config.json", staging)
        _replace_dir(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# What must agree between a base model's config and the preset it was imported as.
_SHAPE_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "rms_norm_eps",
    "tie_word_embeddings",
    "max_position_embeddings",
)


def _base_config(base_hf_dir: Path, mine: LlamaConfig) -> LlamaConfig:
    """The base model's own config, checked to describe the model `mine` does."""
    try:
        base = LlamaConfig.from_pretrained(str(base_hf_dir))
    except (OSError, ValueError) as error:
        raise OrchardError(
            f"no Hugging Face config in {base_hf_dir} ({error}): pass the imported model's hf/"
        ) from None
    differ = [f for f in _SHAPE_FIELDS if getattr(base, f, None) != getattr(mine, f, None)]
    theta = (base.rope_parameters or {}).get("rope_theta")
    if theta != mine.rope_parameters["rope_theta"]:
        differ.append("rope_theta")
    if differ:
        raise OrchardError(
            f"the base model in {base_hf_dir} differs from the trained model in "
            + ", ".join(differ)
            + ": export with the preset of the import the training started from"
        )
    base.architectures = ["LlamaForCausalLM"]
    return base


def load_llama_weights(
    model: LlamaForCausalLM, weights: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> None:
    """Load `hf_state_dict`'s tensors into `model` (built on the meta device), strictly;
    a tied model gets its lm_head from the embedding."""
    tied = model.config.tie_word_embeddings
    missing, unexpected = model.load_state_dict(
        {k: v.to(dtype) for k, v in weights.items()}, strict=False, assign=True
    )
    if tied:
        model.tie_weights()
        missing = [k for k in missing if k != "lm_head.weight"]
    assert not missing and not unexpected, (missing, unexpected)


def hf_state_dict(
    model_state_dict: Mapping[str, torch.Tensor], preset: ModelPreset, vocab_size: int
) -> dict[str, torch.Tensor]:
    """The Hugging Face Llama tensors of a Megatron GPTModel state dict (see module doc)."""
    sd = _clean_keys(model_state_dict)
    h, heads, groups, d = (
        preset.hidden_size,
        preset.num_attention_heads,
        preset.num_query_groups,
        preset.head_dim,
    )
    take = _Taker(sd, preset, vocab_size)
    out = {
        "model.embed_tokens.weight": take("embedding.word_embeddings.weight", (vocab_size, h)),
        "model.norm.weight": take("decoder.final_layernorm.weight", (h,)),
    }
    if not preset.tie_embeddings:  # a tied model's lm_head is its embedding matrix
        out["lm_head.weight"] = take("output_layer.weight", (vocab_size, h))
    per_group = heads // groups
    for i in range(preset.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        qkv = take(src + "self_attention.linear_qkv.weight", ((heads + 2 * groups) * d, h))
        qkv = qkv.view(groups, per_group + 2, d, h)  # per group: its queries, then k, then v
        fc1 = take(src + "mlp.linear_fc1.weight", (2 * preset.ffn_hidden_size, h))
        gate, up = fc1.chunk(2, dim=0)
        out |= {
            dst + "input_layernorm.weight": take.norm(
                src + "input_layernorm.weight",
                src + "self_attention.linear_qkv.layer_norm_weight",
            ),
            dst + "self_attn.q_proj.weight": qkv[:, :per_group].reshape(heads * d, h),
            dst + "self_attn.k_proj.weight": qkv[:, per_group].reshape(groups * d, h),
            dst + "self_attn.v_proj.weight": qkv[:, per_group + 1].reshape(groups * d, h),
            dst + "self_attn.o_proj.weight": take(
                src + "self_attention.linear_proj.weight", (h, heads * d)
            ),
            dst + "post_attention_layernorm.weight": take.norm(
                src + "pre_mlp_layernorm.weight", src + "mlp.linear_fc1.layer_norm_weight"
            ),
            dst + "mlp.gate_proj.weight": gate,
            dst + "mlp.up_proj.weight": up,
            dst + "mlp.down_proj.weight": take(
                src + "mlp.linear_fc2.weight", (h, preset.ffn_hidden_size)
            ),
        }
    leftover = sorted(set(sd) - take.used)
    if leftover:
        raise OrchardError(
            f"checkpoint has weights preset {preset.name!r} does not ({', '.join(leftover[:4])}"
            f"{', ...' if len(leftover) > 4 else ''}): export with the preset it was trained with"
        )
    return {k: v.contiguous() for k, v in out.items()}


class _Taker:
    """Reads checkpoint tensors by name, checking shapes against the preset."""

    def __init__(self, sd: dict[str, torch.Tensor], preset: ModelPreset, vocab_size: int):
        self.sd, self.preset, self.vocab_size, self.used = sd, preset, vocab_size, set()

    def __call__(self, key: str, shape: tuple[int, ...]) -> torch.Tensor:
        if key not in self.sd:
            raise OrchardError(
                f"checkpoint has no {key!r}: is it a GPTModel state dict of preset "
                f"{self.preset.name!r} with TP = PP = 1?"
            )
        tensor = self.sd[key]
        if tuple(tensor.shape) != shape:
            what = "vocab size" if key.startswith(("embedding", "output_layer")) else "shape"
            raise OrchardError(
                f"checkpoint {key!r} has shape {list(tensor.shape)}, preset "
                f"{self.preset.name!r} with vocab size {self.vocab_size} expects {list(shape)}: "
                f"the {what} differs, export with the run's preset and vocab size"
            )
        self.used.add(key)
        return tensor.detach().cpu()

    def norm(self, local_key: str, te_key: str) -> torch.Tensor:
        """A layer norm kept separate (local spec) or fused into the next linear (TE spec)."""
        key = te_key if te_key in self.sd and local_key not in self.sd else local_key
        return self(key, (self.preset.hidden_size,))


def _clean_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    clean = {}
    for key, value in state_dict.items():
        while key.startswith("module."):
            key = key[len("module.") :]
        if key.endswith("_extra_state") or not isinstance(value, torch.Tensor):
            continue
        clean[key] = value
    return clean


def _load_tokenizer(tokenizer_dir: Path) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except (OSError, ValueError) as error:
        raise OrchardError(
            f"no Hugging Face tokenizer in {tokenizer_dir} ({error}): pass the directory "
            "the tokenizer step wrote"
        ) from None


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int | None]:
    vocab = tokenizer.get_vocab()
    eot = vocab.get("<|endoftext|>")
    pad = vocab.get("<|pad|>")
    return {
        "bos": eot if eot is not None else tokenizer.bos_token_id,
        "eos": eot if eot is not None else tokenizer.eos_token_id,
        "pad": pad if pad is not None else tokenizer.pad_token_id,
    }


def _replace_dir(new: Path, target: Path) -> None:
    """Rename `new` to `target`; an existing `target` is moved aside first, then deleted."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        target.rename(old)
    new.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
