"""INT8 weights for vLLM: a W8A8 compressed-tensors checkpoint written from a version's export.

vLLM runs dense INT8 on CPU (`CPUInt8ScaledMMLinearKernel`: oneDNN, or AMX where the shape
allows) only from a pre-quantized compressed-tensors checkpoint; its online INT8 covers MoE
layers alone. `int8_checkpoint` writes that checkpoint itself, the scheme llm-compressor's
`W8A8` recipe produces without calibration data:
- weights of every decoder Linear (attention q/k/v/o, MLP gate/up/down): int8, symmetric,
  one scale per output channel (`absmax / 127`, round to nearest);
- activations: int8, symmetric, one scale per token, computed by vLLM at run time
  (`dynamic`), so no calibration set is needed;
- embeddings, norms and the LM head keep the export's precision.
The tokenizer files and the generation config are copied beside the weights.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

# Decoder Linear weights of the Llama family (Llama, Mistral, Qwen2/3) in HF's naming.
QUANTIZED = re.compile(
    r"^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$"
)
INT8_SCHEME = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "quantization_status": "compressed",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "channel",
                "dynamic": False,
            },
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
        }
    },
    "ignore": ["lm_head"],
}


def quantize_rows(weight):
    """(int8 weight, float32 scale [rows, 1]): symmetric, per output channel."""
    import torch

    rows = weight.detach().to(torch.float32)
    scale = rows.abs().amax(dim=1, keepdim=True).clamp(min=1e-8) / 127.0
    return torch.round(rows / scale).clamp(-127, 127).to(torch.int8), scale


def int8_checkpoint(model_dir: Path, target: Path | None = None) -> Path:
    """The W8A8 INT8 checkpoint of `model_dir` (written once to `target`, by default
    `<model_dir>-int8` beside it; an existing one is reused)."""
    from safetensors.torch import load_file, save_file

    model_dir = Path(model_dir)
    target = Path(target) if target else model_dir.with_name(model_dir.name + "-int8")
    if (target / "config.json").exists():
        return target
    weights = sorted(model_dir.glob("*.safetensors"))
    if not weights:
        raise ValueError(
            f"{model_dir} has no *.safetensors weights: INT8 serving needs the export "
            "saved with save_pretrained (safetensors)"
        )
    config = json.loads((model_dir / "config.json").read_text())
    if config.get("quantization_config"):
        raise ValueError(f"{model_dir} is quantized already: serve it as it is")
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        quantized = 0
        for path in weights:
            tensors = {}
            for name, tensor in load_file(path).items():
                if QUANTIZED.match(name):
                    tensors[name], tensors[name + "_scale"] = quantize_rows(tensor)
                    quantized += 1
                else:
                    tensors[name] = tensor.contiguous()
            save_file(tensors, staging / path.name, metadata={"format": "pt"})
        if not quantized:
            raise ValueError(
                f"{model_dir}: no decoder Linear weight matched {QUANTIZED.pattern}: "
                "INT8 serving knows the Llama family's layer names only"
            )
        for path in model_dir.iterdir():  # tokenizer, generation config, shard index
            if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json":
                shutil.copy2(path, staging / path.name)
        config["quantization_config"] = INT8_SCHEME
        (staging / "config.json").write_text(json.dumps(config, indent=2))
        os.replace(staging, target)  # readers never see a half-written checkpoint
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
