"""Model size presets: Llama-style shapes with their tensor/pipeline parallel sizes.

Every preset is a decoder-only Llama: RMSNorm, SwiGLU MLP, RoPE, grouped-query attention,
no biases, untied input/output embeddings (an imported model's shape may tie them:
`model/hf_import.py`). `nano` and `micro` train on a laptop CPU
(`nano-tp2`, `nano-pp2`, `micro-tp2`, `micro-pp2`: the same models split over two
processes, for tests of the parallel layouts);
`small`, `medium` and `large` are ~6B, ~13.5B and ~70B shapes (Llama-2-7B with 8 KV
groups, a 48-layer Llama-2-13B with 8 KV groups, Llama-3-70B), split the way those sizes
are usually split over 8-GPU nodes: TP within a node (NVLink), PP across nodes, and data
parallelism (DP = GPUs / (TP × PP)) over the rest. On H100 80 GB nodes `orchard plan`
(`model/plan.py`) shows the fit: at 128 GPUs `small` is TP 2 × DP 64 without recompute,
`medium` TP 4 × PP 2 × DP 16 without recompute, `large` TP 8 × PP 4 × DP 4 with
selective recompute.

A variant is a copy: `dataclasses.replace(get_preset("nano"), seq_length=512, name="nano-512")`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from orchard.errors import OrchardError


@dataclass(frozen=True, kw_only=True)
class ModelPreset:
    """One model shape and how it is split over devices."""

    name: str
    """Readable name, recorded in manifests and MLflow params."""
    num_layers: int
    """Transformer blocks."""
    hidden_size: int
    """Width of the residual stream."""
    ffn_hidden_size: int
    """Width of the SwiGLU MLP (each of gate and up projections)."""
    num_attention_heads: int
    """Query heads; head dimension is hidden_size / num_attention_heads."""
    num_query_groups: int
    """Key/value heads (GQA): every num_attention_heads / num_query_groups queries share one."""
    seq_length: int
    """Training context length (tokens per sample); also the exported max_position_embeddings."""
    tensor_parallel: int = 1
    """Tensor-parallel size: heads, groups and the MLP width are split over this many devices."""
    pipeline_parallel: int = 1
    """Pipeline-parallel size: layers are split into this many consecutive stages."""
    rotary_base: float = 10000
    """RoPE theta."""
    norm_epsilon: float = 1e-5
    """RMSNorm epsilon."""
    init_method_std: float = 0.02
    """Standard deviation of the normal weight initialisation."""
    tie_embeddings: bool = False
    """One matrix for the input embedding and the output layer (imported models such as
    SmolLM2); Orchard's own presets keep them untied."""

    def __post_init__(self) -> None:
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.num_attention_heads % self.num_query_groups:
            problems.append(
                f"num_attention_heads {self.num_attention_heads} is not divisible by "
                f"num_query_groups {self.num_query_groups}"
            )
        tp = self.tensor_parallel
        for field in ("num_attention_heads", "num_query_groups", "ffn_hidden_size"):
            if getattr(self, field) % tp:
                problems.append(f"{field} {getattr(self, field)} is not divisible by TP {tp}")
        if self.num_layers % self.pipeline_parallel:
            problems.append(
                f"num_layers {self.num_layers} is not divisible by PP {self.pipeline_parallel}"
            )
        if min(tp, self.pipeline_parallel, self.seq_length, self.num_layers) < 1:
            problems.append("sizes must be positive")
        if problems:
            raise OrchardError(f"model preset {self.name!r}: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def model_parallel_size(self) -> int:
        """Devices one model replica spans (TP × PP); the world size must be a multiple."""
        return self.tensor_parallel * self.pipeline_parallel

    def parameters(self, vocab_size: int) -> int:
        """Exact parameter count of the model (untied embeddings counted twice)."""
        h, kv = self.hidden_size, self.num_query_groups * self.head_dim
        attention = h * h + 2 * h * kv + h * h  # q, k, v, o
        mlp = 3 * h * self.ffn_hidden_size  # gate, up, down
        layer = attention + mlp + 2 * h  # two RMSNorm weights
        embeddings = (1 if self.tie_embeddings else 2) * vocab_size * h  # embed, lm_head
        return self.num_layers * layer + h + embeddings  # + final norm

    def flops_per_token(self, seq_length: int, vocab_size: int) -> float:
        """Training FLOPs per token (forward + backward) for MFU estimates.

        6 × (parameters that multiply: every linear layer and the output layer, not the
        embedding lookup or norms) + 12 × layers × hidden × seq_length for the attention
        scores and their weighted sum (the PaLM paper's convention, causal mask not halved).
        """
        h = self.hidden_size
        lookup = 0 if self.tie_embeddings else vocab_size * h  # a tied matrix multiplies too
        matmul = self.parameters(vocab_size) - lookup - (2 * self.num_layers + 1) * h
        return 6.0 * matmul + 12.0 * self.num_layers * h * seq_length


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in (
        # ~3M params besides embeddings: a few thousand tokens/s on 2 CPU cores.
        ModelPreset(
            name="nano",
            num_layers=4,
            hidden_size=256,
            ffn_hidden_size=704,
            num_attention_heads=4,
            num_query_groups=2,
            seq_length=256,
        ),
        # ~10M params besides embeddings: a longer CPU demo.
        ModelPreset(
            name="micro",
            num_layers=6,
            hidden_size=384,
            ffn_hidden_size=1024,
            num_attention_heads=6,
            num_query_groups=2,
            seq_length=512,
        ),
        # Llama-2-7B shape with 8 KV groups: ~5.9B params at a 32k vocabulary.
        ModelPreset(
            name="small",
            num_layers=32,
            hidden_size=4096,
            ffn_hidden_size=11008,
            num_attention_heads=32,
            num_query_groups=8,
            seq_length=4096,
            tensor_parallel=2,
        ),
        # Llama-2-13B width, 48 layers, 8 KV groups (Qwen2.5-14B-like): ~13.5B at 32k.
        ModelPreset(
            name="medium",
            num_layers=48,
            hidden_size=5120,
            ffn_hidden_size=13824,
            num_attention_heads=40,
            num_query_groups=8,
            seq_length=4096,
            tensor_parallel=4,
            pipeline_parallel=2,
        ),
        # Llama-3-70B shape: ~69B params at a 32k vocabulary, 70.6B at 128k.
        ModelPreset(
            name="large",
            num_layers=80,
            hidden_size=8192,
            ffn_hidden_size=28672,
            num_attention_heads=64,
            num_query_groups=8,
            seq_length=8192,
            tensor_parallel=8,
            pipeline_parallel=4,
            rotary_base=500_000,
        ),
    )
}


# Test layouts of the CPU presets: the same model split over two processes (two hosts
# of the test cluster), by tensor (`nano-tp2`) or by pipeline stages (`nano-pp2`). They
# train the model `nano` trains, from the same seed and data (tests/cluster).
PRESETS |= {
    variant.name: variant
    for base in ("nano", "micro")
    for variant in (
        replace(PRESETS[base], name=f"{base}-tp2", tensor_parallel=2),
        replace(PRESETS[base], name=f"{base}-pp2", pipeline_parallel=2),
    )
}


def get_preset(name: str) -> ModelPreset:
    """The preset called `name`; an OrchardError naming the known presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise OrchardError(
            f"unknown model preset {name!r}: choose one of {', '.join(PRESETS)}"
        ) from None
