"""model/: presets, Megatron training core (loss falls, resume is exact), HF export.

All on CPU with a tiny Llama (2 layers, hidden 64) in one gloo process group of world
size 1: torch.distributed initialises once per process, so every test shares the
module-scoped `megatron` fixture.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from model.distributed import init_single_process
from model.presets import PRESETS, ModelPreset, get_preset
from orchard.errors import OrchardError

TINY = ModelPreset(
    name="tiny",
    num_layers=2,
    hidden_size=64,
    ffn_hidden_size=176,
    num_attention_heads=4,
    num_query_groups=2,
    seq_length=32,
)
TEXT = (
    "An orchard is a planting of trees grown for food. Apples, pears and plums grow in "
    "orchards; the trees are pruned in winter and picked in autumn. "
) * 20
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|endoftext|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def megatron() -> None:
    torch.set_num_threads(2)
    init_single_process()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A byte-level BPE of ~300 tokens, trained here (nothing is downloaded)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|user|>", "<|assistant|>", "<|pad|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([TEXT], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", pad_token="<|pad|>"
    )
    wrapped.chat_template = CHAT_TEMPLATE
    directory = tmp_path_factory.mktemp("tokenizer")
    wrapped.save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def vocab_size(tokenizer_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))


def text_batch(tokenizer_dir: Path, batch: int = 4, seq: int = 32) -> dict[str, torch.Tensor]:
    """GPTDataset-shaped [b, s] samples cut from TEXT."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(str(tokenizer_dir))(TEXT)["input_ids"]
    rows = torch.tensor([ids[i * seq : i * seq + seq + 1] for i in range(batch)])
    loss_mask = torch.ones(batch, seq)
    loss_mask[:, :2] = 0  # a mask that matters: the loss is a masked mean
    return {
        "tokens": rows[:, :-1],
        "labels": rows[:, 1:],
        "loss_mask": loss_mask,
        "position_ids": torch.arange(seq).expand(batch, seq),
    }


def test_presets_are_consistent_and_sized() -> None:
    assert {"nano", "micro", "small", "medium", "large"} <= set(PRESETS)
    billions = {name: PRESETS[name].parameters(32_000) / 1e9 for name in PRESETS}
    assert billions["nano"] < billions["micro"] < 0.1
    assert 2 <= billions["small"] <= 7.5
    assert 12.5 <= billions["medium"] <= 30
    assert billions["large"] >= 68
    assert (PRESETS["small"].tensor_parallel, PRESETS["small"].pipeline_parallel) == (2, 1)
    assert (PRESETS["medium"].tensor_parallel, PRESETS["medium"].pipeline_parallel) == (4, 2)
    assert (PRESETS["large"].tensor_parallel, PRESETS["large"].pipeline_parallel) == (8, 4)
    # 6N plus attention: more than 6 × (parameters - embeddings), less than 6 × 1.5 of all.
    nano = PRESETS["nano"]
    flops = nano.flops_per_token(256, 8192)
    assert 6 * (nano.parameters(8192) - 8192 * 256) < flops < 9 * nano.parameters(8192)


def test_unknown_or_inconsistent_preset_says_what_to_do() -> None:
    with pytest.raises(OrchardError, match="nano, micro, small, medium, large"):
        get_preset("gigantic")
    with pytest.raises(OrchardError, match="num_query_groups"):
        dataclasses.replace(TINY, num_query_groups=3)


def test_megatron_config_of_every_preset(megatron: None) -> None:
    from model.gpt import transformer_config

    for preset in PRESETS.values():
        config = transformer_config(preset)
        assert config.tensor_model_parallel_size == preset.tensor_parallel
        assert config.pipeline_model_parallel_size == preset.pipeline_parallel
        assert config.num_query_groups == preset.num_query_groups
        assert config.gated_linear_unit and not config.add_bias_linear
    if not torch.cuda.is_available():
        from model.gpt import build_gpt

        with pytest.raises(OrchardError, match="recompute"):
            build_gpt(TINY, 256, recompute=True)


@pytest.mark.parametrize("name", ["nano", "micro"])
def test_cpu_presets_build_with_the_counted_parameters(megatron: None, name: str) -> None:
    from model.gpt import SDPAttention, build_gpt

    preset = get_preset(name)
    gpt = build_gpt(preset, 512)
    assert sum(p.numel() for p in gpt.parameters()) == preset.parameters(512)
    attention = gpt.decoder.layers[0].self_attention.core_attention
    assert isinstance(attention, SDPAttention)
    tokens = torch.randint(0, 512, (2, 16))
    logits = gpt(tokens, torch.arange(16).expand(2, 16), None)
    assert logits.shape == (2, 16, 512) and torch.isfinite(logits).all()


def test_sdpa_attention_is_causal(megatron: None, vocab_size: int) -> None:
    from model.gpt import build_gpt

    gpt = build_gpt(TINY, vocab_size).eval()
    tokens = torch.randint(0, vocab_size, (1, 12))
    changed = tokens.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % vocab_size
    positions = torch.arange(12).expand(1, 12)
    with torch.no_grad():
        a, b = gpt(tokens, positions, None), gpt(changed, positions, None)
    assert torch.equal(a[0, :8], b[0, :8])  # the future does not leak into the past
    assert not torch.allclose(a[0, 8:], b[0, 8:])
    # GPTDataset's explicit mask (True = masked out) means the same as no mask ...
    future = torch.ones(12, 12, dtype=torch.bool).triu(1)[None, None]
    with torch.no_grad():
        assert torch.allclose(gpt(tokens, positions, future), a, atol=1e-5)
        # ... and a per-document mask (reset_attention_mask) cuts attention at the border.
        documents = future.clone()
        documents[..., 6:, :6] = True
        split = gpt(tokens, positions, documents)
    assert torch.allclose(split[0, :6], a[0, :6], atol=1e-5)
    assert not torch.allclose(split[0, 6:], a[0, 6:], atol=1e-3)


def test_training_steps_reduce_the_loss(megatron: None, tokenizer_dir: Path, vocab_size) -> None:
    from model.training import TrainConfig, build_training

    config = TrainConfig(lr=3e-3, min_lr=3e-4, warmup_steps=2, total_steps=12, micro_batch_size=2)
    training = build_training(TINY, vocab_size, config)
    batch = text_batch(tokenizer_dir)
    before = training.eval_loss([batch])
    steps = [training.train_step(batch) for _ in range(12)]
    assert steps[0]["loss"] == pytest.approx(before, abs=1e-5)  # loss is measured before update
    assert training.eval_loss([batch]) < 0.8 * before  # 5.7 -> ~3.8 nats
    assert [s["lr"] for s in steps[:2]] == pytest.approx([1.5e-3, 3e-3])  # linear warmup
    assert steps[1]["lr"] > steps[2]["lr"] > steps[-1]["lr"]
    assert steps[-1]["lr"] == pytest.approx(3e-4)  # cosine decay ends at min_lr
    assert all(s["tokens"] == 4 * 32 and s["grad_norm"] > 0 for s in steps)
    with pytest.raises(OrchardError, match="micro_batch_size"):
        training.train_step({k: v[:3] for k, v in batch.items()})
    with pytest.raises(OrchardError, match="vocabulary"):
        training.train_step(batch | {"tokens": batch["tokens"] + vocab_size})


def test_micro_batches_accumulate_to_the_full_batch_gradient(
    megatron: None, tokenizer_dir: Path, vocab_size: int
) -> None:
    """Two micro-batches of 2 give the same step as one of 4: masked mean over the batch."""
    from model.training import TrainConfig, build_training

    batch = text_batch(tokenizer_dir)
    batch["loss_mask"][0, 5:] = 0  # uneven token counts per micro-batch
    runs = []
    for micro in (2, 4):
        config = TrainConfig(lr=1e-3, warmup_steps=0, total_steps=10, micro_batch_size=micro)
        training = build_training(TINY, vocab_size, config)
        runs.append([training.train_step(batch)["loss"] for _ in range(3)])
    assert runs[0] == pytest.approx(runs[1], abs=1e-5)


def test_resume_continues_identically(megatron: None, tokenizer_dir: Path, vocab_size) -> None:
    from model.training import TrainConfig, build_training

    config = TrainConfig(lr=2e-3, min_lr=2e-4, warmup_steps=2, total_steps=6, micro_batch_size=2)
    batches = [text_batch(tokenizer_dir, seq=16)] * 2 + [text_batch(tokenizer_dir, seq=32)] * 4
    straight = build_training(TINY, vocab_size, config)
    expected = [straight.train_step(b)["loss"] for b in batches]

    first = build_training(TINY, vocab_size, config)
    for b in batches[:3]:
        first.train_step(b)
    state = first.state_dict()
    first.train_step(batches[3])  # the saved state is a copy, not a view of live tensors

    resumed = build_training(TINY, vocab_size, config.model_copy(update={"seed": 99}))
    resumed.load_state_dict(state)
    assert resumed.step == 3
    got = [resumed.train_step(b)["loss"] for b in batches[3:]]
    assert got == pytest.approx(expected[3:], abs=1e-5)

    other = build_training(dataclasses.replace(TINY, ffn_hidden_size=128), vocab_size, config)
    with pytest.raises(OrchardError, match="ffn_hidden_size 176 vs 128"):
        other.load_state_dict(state)


def _tensor_parallel_worker(rank: int, port: int, batch: dict, vocab_size: int, queue) -> None:
    """One of two ranks of a TP = 2 run (a fresh process: its own torch.distributed)."""
    import os

    import torch.distributed as dist

    from model.distributed import init_model_parallel
    from model.training import TrainConfig, build_training

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        preset = dataclasses.replace(TINY, tensor_parallel=2)
        init_model_parallel(preset)
        config = TrainConfig(lr=3e-3, warmup_steps=0, total_steps=10, micro_batch_size=2)
        training = build_training(preset, vocab_size, config)
        queue.put((rank, [training.train_step(batch)["loss"] for _ in range(3)]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_tensor_parallel_run_matches_one_process(
    megatron: None, tokenizer_dir: Path, vocab_size: int
) -> None:
    """TP = 2 over gloo (two processes) trains exactly like TP = 1: same init, same losses."""
    import multiprocessing

    from model.training import TrainConfig, build_training
    from tests.conftest import free_port

    batch = text_batch(tokenizer_dir)
    config = TrainConfig(lr=3e-3, warmup_steps=0, total_steps=10, micro_batch_size=2)
    single = build_training(TINY, vocab_size, config)
    expected = [single.train_step(batch)["loss"] for _ in range(3)]

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [
        context.Process(target=_tensor_parallel_worker, args=(r, port, batch, vocab_size, queue))
        for r in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        results = dict(queue.get(timeout=120) for _ in workers)
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert results[0] == pytest.approx(expected, abs=1e-5)
    assert results[1] == results[0]


# -- the same model on other layouts (model/shards.py); across hosts: tests/cluster/ --

LAYOUTS = {"tp2": {"tensor_parallel": 2}, "pp2": {"pipeline_parallel": 2}}
STEPS = 3


def _training_config():
    from model.training import TrainConfig

    return TrainConfig(lr=3e-3, warmup_steps=0, total_steps=10, micro_batch_size=2)


def _layouts_worker(rank: int, port: int, batch: dict, vocab_size: int, queue) -> None:
    """One of two ranks: trains TINY on each layout in turn, reports its shards."""
    import os

    import torch.distributed as dist
    from megatron.core import parallel_state

    from model.distributed import init_model_parallel
    from model.training import build_training

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        for name, sizes in LAYOUTS.items():
            preset = dataclasses.replace(TINY, name=f"tiny-{name}", **sizes)
            init_model_parallel(preset)
            training = build_training(preset, vocab_size, _training_config())
            initial = training.state_dict()["model"]
            losses = [training.train_step(batch)["loss"] for _ in range(STEPS)]
            shard = (
                parallel_state.get_tensor_model_parallel_rank(),
                parallel_state.get_pipeline_model_parallel_rank(),
            )
            queue.put((name, shard, losses, initial, training.state_dict()["model"]))
            parallel_state.destroy_model_parallel()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_tp2_and_pp2_start_train_and_merge_like_one_process(
    megatron: None, tokenizer_dir: Path, vocab_size: int
) -> None:
    import multiprocessing

    from model.shards import merge_shards, shard_of
    from model.training import build_training
    from tests.conftest import free_port

    batch = text_batch(tokenizer_dir)
    single = build_training(TINY, vocab_size, _training_config())
    single_initial = single.state_dict()["model"]
    expected = [single.train_step(batch)["loss"] for _ in range(STEPS)]
    single_trained = single.state_dict()["model"]

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    port = free_port()
    workers = [
        context.Process(target=_layouts_worker, args=(r, port, batch, vocab_size, queue))
        for r in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        results = [queue.get(timeout=150) for _ in range(2 * len(LAYOUTS))]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()

    for name, sizes in LAYOUTS.items():
        preset = dataclasses.replace(TINY, **sizes)
        mine = {shard: rest for layout, shard, *rest in results if layout == name}
        for losses, *_ in mine.values():
            assert losses == pytest.approx(expected, abs=1e-5), name
        initial = merge_shards({s: r[1] for s, r in mine.items()}, preset)
        trained = merge_shards({s: r[2] for s, r in mine.items()}, preset)
        # The same random initial model, to the bit, whatever the layout.
        whole = {k: v for k, v in single_initial.items() if "_extra_state" not in k}
        assert initial.keys() == whole.keys(), name
        for key, value in whole.items():
            assert torch.equal(initial[key], value), (name, key)
        for key in whole:
            value = single_trained[key]
            assert torch.allclose(trained[key], value, atol=1e-5), (name, key)
        # Cutting the whole model again gives each rank exactly what it held.
        for shard, (_, _, held) in mine.items():
            again = shard_of(trained, preset, *shard, like=held)
            assert all(torch.equal(again[k], held[k]) for k in held if "_extra" not in k), shard


@pytest.fixture(scope="module")
def exported(megatron: None, tokenizer_dir: Path, vocab_size: int, tmp_path_factory):
    """A few trained steps (so weights are not at their init), then exported."""
    from model.export import export_hf
    from model.training import TrainConfig, build_training

    config = TrainConfig(lr=3e-3, warmup_steps=0, total_steps=10, micro_batch_size=4)
    training = build_training(TINY, vocab_size, config)
    for _ in range(3):
        training.train_step(text_batch(tokenizer_dir))
    state = training.state_dict()["model"]
    out = export_hf(state, TINY, vocab_size, tokenizer_dir, tmp_path_factory.mktemp("x") / "hf")
    return training, state, out


def test_export_logits_match_megatron(exported, tokenizer_dir: Path, vocab_size: int) -> None:
    from transformers import AutoModelForCausalLM

    training, _, out = exported
    hf = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
    tokens = text_batch(tokenizer_dir, batch=2)["tokens"]
    with torch.no_grad():
        want = training.gpt.eval()(tokens, torch.arange(32).expand(2, 32), None)
        got = hf(tokens).logits
    diff = (want - got).abs().max().item()
    print(f"max abs logits diff Megatron vs HF: {diff:.3g}")
    assert diff < 1e-4


def test_export_reads_wrapped_and_te_style_checkpoints(exported, vocab_size: int) -> None:
    from model.export import hf_state_dict

    _, state, _ = exported
    plain = hf_state_dict(state, TINY, vocab_size)
    wrapped = {f"module.module.{k}": v for k, v in state.items()}
    wrapped["module.module.decoder.layers.0.mlp.linear_fc1._extra_state"] = b"te-bytes"
    te = {}
    for key, value in state.items():  # Transformer Engine fuses norms into the next linear
        key = key.replace("input_layernorm.weight", "self_attention.linear_qkv.layer_norm_weight")
        te[key.replace("pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight")] = value
    for variant in (wrapped, te):
        other = hf_state_dict(variant, TINY, vocab_size)
        assert other.keys() == plain.keys()
        assert all(torch.equal(other[k], plain[k]) for k in plain)


def test_export_loads_and_generates_with_its_tokenizer(exported) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, out = exported
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.config.eos_token_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert model.config.pad_token_id == tokenizer.convert_tokens_to_ids("<|pad|>")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What grows in an orchard?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(tokenizer.decode(generated[0]), str)


def test_export_rejects_a_checkpoint_of_another_shape(
    exported, tokenizer_dir: Path, vocab_size: int, tmp_path: Path
) -> None:
    from model.export import export_hf

    _, state, _ = exported
    with pytest.raises(OrchardError, match="vocab size"):
        export_hf(state, TINY, vocab_size + 8, tokenizer_dir, tmp_path / "a")
    with pytest.raises(OrchardError, match="shape"):
        export_hf(
            state,
            dataclasses.replace(TINY, ffn_hidden_size=128),
            vocab_size,
            tokenizer_dir,
            tmp_path / "b",
        )
    with pytest.raises(OrchardError, match="does not"):
        export_hf(
            state,
            dataclasses.replace(TINY, num_layers=1),
            vocab_size,
            tokenizer_dir,
            tmp_path / "c",
        )
    assert not any(tmp_path.iterdir())  # nothing half-written
