"""The only place Orchard bends Megatron-Core to run on a host without CUDA.

Megatron-Core 0.16 is written for GPUs and names the CUDA device in a few places that
are reached on CPU as well:
- `torch.cuda.current_device()` for buffers it allocates itself (RoPE's `inv_freq` is
  moved there on the first forward; DDP's gradient buffers are created there);
- `device='cuda'` literals in the optimizer (found-inf flags, the gradient-norm
  all-reduce in `clip_grads`, loss-scale tensors) and the forward/backward schedule
  (its token counter);
- type checks such as `assert grad.type() == 'torch.cuda.FloatTensor'` before clipping.

`apply()` makes `torch.cuda.current_device()` answer the CPU device, process-wide, and
only when CUDA is unavailable: there the original raises unconditionally, so no working
code can depend on it. `cuda_to_cpu()` is a `TorchFunctionMode` that maps explicit
`device='cuda'` arguments to the CPU and names CPU tensor types as their CUDA
counterparts (`Tensor.type()`); Orchard holds it only around the optimizer calls
(build, step, state loading) and Megatron's forward/backward schedule, never around
user code. The attention module that replaces Megatron's CUDA-only local attention is
not a shim: it is `model.gpt.SDPAttention`, swapped in through a `ModuleSpec`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.overrides import TorchFunctionMode

_CPU = torch.device("cpu")


def apply() -> None:
    """Route Megatron's `torch.cuda.current_device()` to the CPU when CUDA is absent."""
    if torch.cuda.is_available():
        return
    torch.cuda.current_device = lambda: _CPU


class _CudaToCpu(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            kwargs["device"] = _CPU
        result = func(*args, **kwargs)
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            return result.replace("torch.", "torch.cuda.", 1)  # 'torch.FloatTensor' etc.
        return result


@contextlib.contextmanager
def cuda_to_cpu() -> Iterator[None]:
    """While held (and only without CUDA), `device='cuda'` arguments mean the CPU."""
    if torch.cuda.is_available():
        yield
        return
    with _CudaToCpu():
        yield
