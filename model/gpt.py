"""Orchard's language model: a Llama-style Megatron-Core `GPTModel`.

    preset ──> transformer_config() ──┐
    use_cuda ──> layer_spec() ────────┴──> build_gpt() ──> GPTModel (this pipeline stage)

RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases, untied embeddings (tied
when the preset says so: an imported model). On a GPU
the layers come from Transformer Engine when it imports, otherwise from Megatron's local
spec; without TE (and always on CPU) core attention is `SDPAttention`, a thin wrapper of
`torch.nn.functional.scaled_dot_product_attention` (flash attention on CUDA, a fused CPU
kernel on CPU) swapped into the local spec through its `ModuleSpec`. Megatron's own
local attention allocates from a CUDA buffer and builds a CUDA mask.

`parallel_state` must be initialised first (`model.distributed`).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_config import TransformerConfig

from model import cpu_compat
from model.presets import ModelPreset
from model.shards import skip_earlier_stages
from orchard.errors import OrchardError


def transformer_config(
    preset: ModelPreset, *, bf16: bool = False, recompute: bool = False
) -> TransformerConfig:
    """Megatron's TransformerConfig for `preset`: Llama-style, TP/PP sizes from the preset.

    `bf16` makes parameters and activations bfloat16 (the optimizer keeps fp32 master
    weights); `recompute` re-runs every layer's forward in the backward pass (full,
    uniform activation recomputation) to trade compute for memory.
    """
    cuda = torch.cuda.is_available()
    dtype = torch.bfloat16 if bf16 else torch.float32
    tp = preset.tensor_parallel
    return TransformerConfig(
        num_layers=preset.num_layers,
        hidden_size=preset.hidden_size,
        ffn_hidden_size=preset.ffn_hidden_size,
        num_attention_heads=preset.num_attention_heads,
        num_query_groups=preset.num_query_groups,
        kv_channels=preset.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=preset.norm_epsilon,
        gated_linear_unit=True,  # SwiGLU: fc1 = [gate; up], silu(gate) * up
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=preset.init_method_std,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=preset.pipeline_parallel,
        sequence_parallel=tp > 1 and cuda,
        pipeline_dtype=dtype,
        params_dtype=dtype,
        bf16=bf16,
        use_cpu_initialization=not cuda,
        # Fused kernels are CUDA (or Apex/TE) only; torch's SDPA and RMSNorm stand in.
        masked_softmax_fusion=False,
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        gradient_accumulation_fusion=False,
        # Pipeline sends sync the CUDA device after batched isend/irecv (a stream race);
        # on CPU there is no device to sync.
        batch_p2p_sync=cuda,
        # The loss is a masked mean over the global batch's tokens: gradients are divided by
        # the token count across micro-batches and data-parallel ranks (model.training).
        calculate_per_token_loss=True,
        recompute_granularity="full" if recompute else None,
        recompute_method="uniform" if recompute else None,
        recompute_num_layers=1 if recompute else None,
    )


class SDPAttention(MegatronModule):
    """Core attention on `F.scaled_dot_product_attention` for the local layer spec.

    Takes Megatron's `[s, b, heads, head_dim]` query and `[s, b, groups, head_dim]`
    key/value (RoPE already applied) and returns `[s, b, heads × head_dim]`. Causal
    unless Megatron hands an explicit mask (True = masked out, Megatron's convention).
    """

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise OrchardError("context parallelism needs Transformer Engine's attention")
        self.softmax_scale = softmax_scale
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: AttnMaskType | None = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params=None,
    ) -> torch.Tensor:
        assert attention_bias is None and packed_seq_params is None
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # -> [b, h, s, d]
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if attention_mask is None else ~attention_mask,
            is_causal=attention_mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            scale=self.softmax_scale,
            enable_gqa=k.size(1) != q.size(1),
        )
        s, b = query.size(0), query.size(1)
        return out.permute(2, 0, 1, 3).reshape(s, b, -1)


def have_transformer_engine() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except ImportError:
        return False
    return True


def layer_spec(use_cuda: bool) -> ModuleSpec:
    """Transformer-layer spec: TE on a GPU that has it, else the local spec with SDPA.

    The TE spec fuses each RMSNorm into the following linear layer
    (`linear_qkv.layer_norm_weight`, `linear_fc1.layer_norm_weight`); the local spec keeps
    `input_layernorm` / `pre_mlp_layernorm` separate. The exporter reads both.
    """
    if use_cuda and have_transformer_engine():
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )

        return get_gpt_layer_with_transformer_engine_spec()
    spec = copy.deepcopy(get_gpt_layer_local_spec(normalization="RMSNorm"))
    spec.submodules.self_attention.submodules.core_attention = ModuleSpec(module=SDPAttention)
    return spec


def check_parallel_state(preset: ModelPreset) -> None:
    """OrchardError unless Megatron's parallel state is initialised with the preset's TP/PP."""
    if not parallel_state.model_parallel_is_initialized():
        raise OrchardError(
            "Megatron's parallel state is not initialised: call "
            "model.distributed.init_single_process() or init_model_parallel(preset) first"
        )
    have = (
        parallel_state.get_tensor_model_parallel_world_size(),
        parallel_state.get_pipeline_model_parallel_world_size(),
    )
    if have != (preset.tensor_parallel, preset.pipeline_parallel):
        raise OrchardError(
            f"parallel state is TP {have[0]} × PP {have[1]} but preset {preset.name!r} wants "
            f"TP {preset.tensor_parallel} × PP {preset.pipeline_parallel}: "
            "initialise with init_model_parallel(preset)"
        )


def build_gpt(
    preset: ModelPreset, vocab_size: int, *, bf16: bool = False, recompute: bool = False
) -> GPTModel:
    """This rank's pipeline stage of the model, on the GPU if there is one, else the CPU.

    `parallel_state` must be initialised (`init_single_process` or `init_model_parallel`)
    with the preset's TP/PP sizes. Weights are drawn from the current torch RNG state
    (`model.distributed.seed_all`); on CPU the initial weights do not depend on the TP/PP
    layout (`model.shards.skip_earlier_stages`). `recompute` needs CUDA.
    """
    check_parallel_state(preset)
    if vocab_size % preset.tensor_parallel:
        raise OrchardError(
            f"vocab size {vocab_size} is not divisible by TP {preset.tensor_parallel}: "
            "pad the vocabulary to a multiple of it"
        )
    use_cuda = torch.cuda.is_available()
    if not use_cuda:
        if recompute:
            raise OrchardError(
                "recompute (activation checkpointing) needs CUDA: Megatron's checkpoint "
                "saves the CUDA RNG state. Train without recompute on CPU"
            )
        cpu_compat.apply()

    def stage() -> GPTModel:
        return GPTModel(
            config=transformer_config(preset, bf16=bf16, recompute=recompute),
            transformer_layer_spec=layer_spec(use_cuda),
            vocab_size=vocab_size,
            max_sequence_length=preset.seq_length,
            pre_process=parallel_state.is_pipeline_first_stage(),
            post_process=parallel_state.is_pipeline_last_stage(),
            share_embeddings_and_output_weights=preset.tie_embeddings,
            position_embedding_type="rope",
            rotary_base=preset.rotary_base,
        )

    if not use_cuda and not parallel_state.is_pipeline_first_stage():
        # The same initial model as in one process, whatever the layout (model.shards).
        rng = torch.get_rng_state()
        throwaway = stage()
        torch.set_rng_state(rng)
        skip_earlier_stages(throwaway, preset, vocab_size)
        del throwaway
    model = stage()
    return model.cuda() if use_cuda else model
