"""A model split over tensor- and pipeline-parallel ranks, and put back together.

With TP × PP > 1 each Megatron rank holds one pipeline stage (a run of consecutive
layers, numbered from 0 on every stage; the embedding on the first stage, the final norm
and the output layer on the last) and, within it, its tensor-parallel slice of each
matrix. The exporter, MLflow's checkpoints and a run on another layout want the whole
model: `merge_shards` joins the ranks' state dicts into the state dict of the same model
built with TP = PP = 1, and `shard_of` cuts such a state dict into one rank's.

How each weight is split (ColumnParallelLinear splits output rows, RowParallelLinear
input columns; Megatron-LM's checkpoint converter splits them the same way):

    embedding.word_embeddings.weight     rows (vocabulary)                first stage
    self_attention.linear_qkv.weight     rows: whole query groups, each [queries, k, v]
    self_attention.linear_proj.weight    columns
    mlp.linear_fc1.weight                rows, by halves: a rank holds [its gate; its up]
    mlp.linear_fc2.weight                columns
    norms (and TE's fused norm weights)  whole, on every rank of the stage
    output_layer.weight                  rows (vocabulary)                last stage

`skip_earlier_stages` makes a pipeline stage's random initialisation the single-process
model's (see its doc), so a run's layout does not change the model it trains.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from model.presets import ModelPreset

_LAYER = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
# suffix -> (split dim, halves): the fc1 rows are [gate; up] on every rank.
_SPLIT = {
    "embedding.word_embeddings.weight": (0, 1),
    "self_attention.linear_qkv.weight": (0, 1),
    "self_attention.linear_proj.weight": (1, 1),
    "mlp.linear_fc1.weight": (0, 2),
    "mlp.linear_fc2.weight": (1, 1),
    "output_layer.weight": (0, 1),
}


def _split_of(key: str) -> tuple[int, int] | None:
    for suffix, split in _SPLIT.items():
        if key.endswith(suffix):
            return split
    return None


def _global_key(key: str, stage: int, layers_per_stage: int) -> str:
    match = _LAYER.match(key)
    if not match:
        return key
    return f"decoder.layers.{stage * layers_per_stage + int(match[1])}.{match[2]}"


def merge_shards(
    shards: Mapping[tuple[int, int], Mapping[str, torch.Tensor]], preset: ModelPreset
) -> dict[str, torch.Tensor]:
    """The TP = PP = 1 state dict of the model whose ranks' state dicts are `shards`,
    keyed by (tensor-parallel rank, pipeline-parallel rank); `_extra_state` is dropped."""
    tp, pp = preset.tensor_parallel, preset.pipeline_parallel
    assert set(shards) == {(t, p) for t in range(tp) for p in range(pp)}, sorted(shards)
    per_stage = preset.num_layers // pp
    merged: dict[str, torch.Tensor] = {}
    for stage in range(pp):
        for key, value in shards[(0, stage)].items():
            if key.endswith("_extra_state") or not isinstance(value, torch.Tensor):
                continue
            split = _split_of(key)
            if split is None or tp == 1:
                whole = value
            else:
                dim, halves = split
                parts = [shards[(t, stage)][key].chunk(halves, dim) for t in range(tp)]
                halves_joined = [torch.cat([p[h] for p in parts], dim) for h in range(halves)]
                whole = torch.cat(halves_joined, dim)
            merged[_global_key(key, stage, per_stage)] = whole
    return merged


def shard_of(
    full: Mapping[str, torch.Tensor],
    preset: ModelPreset,
    tp_rank: int,
    pp_rank: int,
    like: Mapping[str, object],
) -> dict[str, object]:
    """Rank (`tp_rank`, `pp_rank`)'s part of the TP = PP = 1 state dict `full`, with the
    keys of `like` (that rank's own state dict; its `_extra_state` entries are kept)."""
    tp, per_stage = preset.tensor_parallel, preset.num_layers // preset.pipeline_parallel
    out: dict[str, object] = {}
    for key, mine in like.items():
        if key.endswith("_extra_state"):
            out[key] = mine
            continue
        value = full[_global_key(key, pp_rank, per_stage)]
        split = _split_of(key)
        if split is not None and tp > 1:
            dim, halves = split
            value = torch.cat([h.chunk(tp, dim)[tp_rank] for h in value.chunk(halves, dim)], dim)
        out[key] = value.clone()
    return out


def skip_earlier_stages(stage_model: torch.nn.Module, preset: ModelPreset, vocab_size: int) -> None:
    """Advance torch's RNG past the draws of the pipeline stages before this one.

    On CPU Megatron draws every weight whole (`use_cpu_initialization`) from torch's
    generator, in the order the modules are built, then keeps this rank's slice: so TP
    does not change the initial model, but a later pipeline stage would start drawing
    where the first one did. A single process draws the embedding, then the layers in
    order; this draws (and drops) the same shapes for the embedding and the layers of
    the stages before `stage_model`'s, so that its own layers and output layer then get
    the single-process model's values. `stage_model` is a throwaway build of this stage
    (its layer shapes are every layer's); build the real one right after this.
    """
    from megatron.core import parallel_state

    stage = parallel_state.get_pipeline_model_parallel_rank()
    if stage == 0:
        return
    tp = preset.tensor_parallel
    layer = stage_model.decoder.layers[0]

    def whole(param: torch.nn.Parameter) -> list[int]:
        shape = list(param.shape)
        shape[param.partition_dim] *= tp
        return shape

    # Every randomly initialised weight is a tensor-parallel one (norms start at 1).
    shapes = [whole(p) for p in layer.parameters() if getattr(p, "tensor_model_parallel", False)]
    draws = [[vocab_size, preset.hidden_size]] + shapes * (stage * len(stage_model.decoder.layers))
    for shape in draws:
        torch.empty(shape, dtype=torch.float).normal_()
