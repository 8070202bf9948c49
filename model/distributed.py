"""Process groups and Megatron's parallel state, for one process or a Ray Train worker group.

Megatron-Core keeps its tensor/pipeline/data-parallel groups in the module-level
`parallel_state`, built on top of an initialised `torch.distributed`. Under Ray Train,
`TorchTrainer` initialises `torch.distributed` (gloo on CPU, NCCL on GPU) and
`init_model_parallel` adds Megatron's groups; tests, export and benchmarks use
`init_single_process`. A process can initialise `torch.distributed` only once, so both
are idempotent.
"""

from __future__ import annotations

import os
import random
from typing import Any

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel

from model.presets import ModelPreset
from orchard.errors import OrchardError


def init_single_process(*, seed: int = 1234) -> None:
    """A world of one: gloo (NCCL for CUDA tensors) + `initialize_model_parallel(1, 1)`.

    The rendezvous store is an in-memory `HashStore`, so no port or file is needed. Does
    nothing to groups that already exist; seeds the RNGs the first time it initialises
    Megatron's parallel state.
    """
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "cpu:gloo,cuda:nccl"
        else:
            backend = "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    if not parallel_state.model_parallel_is_initialized():
        _initialize(tensor_parallel=1, pipeline_parallel=1)
        seed_all(seed)


def init_model_parallel(preset: ModelPreset, *, seed: int = 1234) -> None:
    """Megatron's parallel state with the preset's TP/PP sizes on the running world, seeded.

    `torch.distributed` must already be initialised (Ray Train's TorchTrainer does it in
    every worker). The data-parallel size is world size / (TP × PP). Idempotent when the
    sizes already match.
    """
    if not dist.is_initialized():
        raise OrchardError(
            "torch.distributed is not initialised: run inside a Ray Train worker "
            "(TorchTrainer) or call model.distributed.init_single_process() first"
        )
    world = dist.get_world_size()
    tp, pp = preset.tensor_parallel, preset.pipeline_parallel
    if world % (tp * pp):
        raise OrchardError(
            f"world size {world} is not divisible by TP {tp} × PP {pp} of preset "
            f"{preset.name!r}: use a multiple of {tp * pp} workers"
        )
    if parallel_state.model_parallel_is_initialized():
        have = (
            parallel_state.get_tensor_model_parallel_world_size(),
            parallel_state.get_pipeline_model_parallel_world_size(),
        )
        if have != (tp, pp):
            raise OrchardError(
                f"Megatron's parallel state is already initialised with TP {have[0]} × PP "
                f"{have[1]}, not the TP {tp} × PP {pp} of preset {preset.name!r}: "
                "use one parallel layout per process"
            )
    else:
        _initialize(tensor_parallel=tp, pipeline_parallel=pp)
    seed_all(seed)


def seed_all(seed: int) -> None:
    """Seed Python, torch and (on GPU) Megatron's per-TP-rank CUDA RNG tracker.

    Megatron's `model_parallel_cuda_manual_seed` needs CUDA; on CPU the model is
    initialised on the CPU (`use_cpu_initialization`) from torch's own generator.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        tensor_parallel.model_parallel_cuda_manual_seed(seed)


def _initialize(*, tensor_parallel: int, pipeline_parallel: int) -> None:
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_parallel,
        pipeline_model_parallel_size=pipeline_parallel,
    )


def gather_model_parallel(obj: Any) -> dict[tuple[int, int], Any] | None:
    """`obj` of every rank of this model replica (its TP × PP ranks), keyed by (tensor-,
    pipeline-parallel rank), on the replica's first rank (global rank 0 for the first
    data-parallel replica); None on the other ranks. Pickled over the process group."""
    key = (
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_pipeline_model_parallel_rank(),
    )
    if (
        parallel_state.get_tensor_model_parallel_world_size()
        * parallel_state.get_pipeline_model_parallel_world_size()
        == 1
    ):
        return {key: obj}
    group = parallel_state.get_model_parallel_group()
    first = dist.get_process_group_ranks(group)[0]
    gathered: list[Any] | None = None
    if dist.get_rank() == first:
        gathered = [None] * dist.get_world_size(group)
    dist.gather_object((key, obj), gathered, dst=first, group=group)
    return dict(gathered) if gathered is not None else None
