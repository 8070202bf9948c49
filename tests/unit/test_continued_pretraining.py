"""Continued pretraining of an imported base model: the corpus re-tokenized with the
base's own tokenizer, Megatron initialised from the imported weights (its logits equal
the base's before any step), a few steps on Ray Train, the export keeping the base's
config; and the one-line refusals of inputs that do not fit.

The base model is written here: a tiny Llama (2 layers, hidden 64, 4 heads over 2 KV
groups, tied embeddings, RoPE theta 50,000, 128 positions) with a BPE tokenizer of its
own (no pad token, `<|im_end|>` as eos), trained for a few seconds on the corpus so that
it knows it: its loss there is far below a random model's.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from orchard.errors import OrchardError
from orchard.steps import Manifest, run_step
from ray_jobs.import_model import LOGITS_TOLERANCE, ImportConfig, identify, import_model
from ray_jobs.pretrain import (
    PretrainConfig,
    base_of_tokenized,
    continued_model,
    init_from_manifest,
    pretrain,
    read_datasets,
)
from ray_jobs.tokenize import (
    TokenizeConfig,
    TokenizerSource,
    base_tokenizer_manifest,
    tokenize,
    tokenizer_info,
    tokenizer_source,
)
from testkit.corpus import corpus_step

VOCAB = 400  # embedding rows; the tokenizer has fewer tokens (a padded vocabulary)
POSITIONS = 128
ROPE_THETA = 50_000.0


def corpus_texts(corpus: Manifest) -> list[str]:
    from orchard.documents import document_shards, read_shard

    return [d.text for f in document_shards(Path(corpus.path)) for d in read_shard(f)]


def write_base_model(directory: Path, texts: list[str]) -> None:
    """A small Llama with its own tokenizer, trained briefly on `texts`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    tokenizer.save_pretrained(str(directory))

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    eod = bpe.token_to_id("<|endoftext|>")
    stream = [i for text in texts for i in bpe.encode(text).ids + [eod]]
    rows = torch.tensor(stream[: len(stream) // 65 * 65]).view(-1, 65)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small: a second thread only spins
    try:
        for _ in range(60):
            batch = rows[torch.randint(0, len(rows), (16,), generator=generator)]
            loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(str(directory))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cpt")


@pytest.fixture(scope="module")
def corpus(root: Path) -> Manifest:
    return corpus_step(root, documents=40)


@pytest.fixture(scope="module")
def base_dir(root: Path, corpus: Manifest) -> Path:
    directory = root / "tiny-base"
    directory.mkdir()
    write_base_model(directory, corpus_texts(corpus))
    return directory


@pytest.fixture(scope="module")
def imported(root: Path, base_dir: Path) -> Manifest:
    """The import_model step on the tiny base (it proves HF -> Megatron -> HF itself)."""
    checkpoint = identify(str(base_dir))
    config = ImportConfig(source=str(base_dir), display_name="Tiny Base", sha256=checkpoint.sha256)
    return run_step(
        step="import_model",
        name="tiny-base",
        config=config,
        data_root=root,
        body=lambda ctx: import_model(config, checkpoint, ctx),
    )


@pytest.fixture(scope="module")
def retokenized(root: Path, corpus: Manifest, imported: Manifest) -> Manifest:
    """The corpus tokenized with the base's own tokenizer, as orchard_tokenizer does it
    when its base_tokenizer Param names the import."""
    config = TokenizeConfig(executor="local", valid_fraction=0.1)
    source = tokenizer_source(Manifest.read(Path(base_tokenizer_manifest(imported.path)).parent))
    return run_step(
        step="tokenize",
        name="corpus",
        config=config,
        data_root=root,
        inputs=[imported, corpus],
        body=lambda ctx: tokenize(config, source.directory, Path(corpus.path), ctx, source),
    )


def test_the_corpus_is_tokenized_with_the_base_models_own_tokenizer(
    retokenized: Manifest, imported: Manifest, base_dir: Path, corpus: Manifest
) -> None:
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from tokenizers import Tokenizer

    index = read_datasets(Path(retokenized.path))
    own = (base_dir / "tokenizer.json").read_bytes()
    assert retokenized.facts == {
        "tokenizer_kind": "base model",
        "tokenizer_source": f"Tiny Base ({base_dir}, sha256 {imported.facts['sha256']})",
        "tokenizer_sha256": hashlib.sha256(own).hexdigest(),
        "tokenizer_vocab_size": "384",
    }
    assert index["tokenizer_source"]["model_vocab_size"] == VOCAB
    # No <|pad|> in the base's tokenizer: its own pad token, which the import set to its
    # end of turn (the base had none).
    assert (index["eod_token"], index["pad_token"]) == ("<|endoftext|>", "<|im_end|>")
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    first = corpus_texts(corpus)[0]
    firsts = []
    for entry in index["train"] + index["valid"]:
        dataset = IndexedDataset(entry["prefix"])  # kept open while its mmap is read
        firsts.append([int(i) for i in dataset[0]])
    assert base.encode(first).ids + [index["eod_id"]] in firsts


def test_a_base_tokenizer_that_does_not_fit_or_is_missing_is_refused(
    imported: Manifest, retokenized: Manifest, tmp_path: Path
) -> None:
    directory = Path(imported.path) / "tokenizer"
    small_model = TokenizerSource(directory, "base model", "a smaller model", model_vocab_size=300)
    with pytest.raises(OrchardError, match="has 384 tokens but the base model only 300 emb"):
        tokenizer_info(directory, TokenizeConfig(), small_model)
    for missing in (str(tmp_path / "nowhere"), str(tmp_path)):
        with pytest.raises(OrchardError, match="^no imported model at .*run orchard_import"):
            base_tokenizer_manifest(missing)
    with pytest.raises(OrchardError, match="a tokenize output, not an imported base model"):
        base_tokenizer_manifest(retokenized.path)
    # The import's tokenizer/ or hf/ directory names the import too.
    for where in ("tokenizer", "hf"):
        found = base_tokenizer_manifest(str(Path(imported.path) / where))
        assert found == str(Path(imported.path) / "manifest.json")


def test_the_model_initialised_from_the_import_exports_the_base_models_logits(
    imported: Manifest, retokenized: Manifest, base_dir: Path, tmp_path: Path
) -> None:
    """Before any step, the Megatron model continued pretraining builds, exported as the
    step exports it, gives the base model's logits."""
    from transformers import AutoModelForCausalLM

    from model.distributed import init_single_process
    from model.export import export_hf
    from model.training import TrainConfig, build_training

    index = read_datasets(Path(retokenized.path))
    preset, vocab, seq = continued_model(PretrainConfig(), imported, index)
    assert (vocab, seq, preset.seq_length, preset.rotary_base) == (VOCAB, 128, 128, ROPE_THETA)
    init_single_process()
    weights = torch.load(Path(imported.path) / "megatron" / "model.pt", weights_only=True)
    training = build_training(
        preset, vocab, TrainConfig(warmup_steps=0, total_steps=2), init_state=weights
    )
    out = export_hf(
        training.state_dict()["model"],
        preset,
        vocab,
        index["tokenizer"],
        tmp_path / "hf",
        base_hf_dir=Path(imported.path) / "hf",
    )
    base = AutoModelForCausalLM.from_pretrained(str(base_dir)).eval()
    exported = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    batch = torch.randint(0, 384, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = base(batch).logits, exported(batch).logits
    assert want.abs().max() > 1.0
    assert (got - want).abs().max().item() <= LOGITS_TOLERANCE
    for key in ("eos_token_id", "bos_token_id", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(exported.config, key) == getattr(base.config, key), key

    with pytest.raises(OrchardError, match="initial weights do not fit"):
        build_training(
            preset, vocab + 8, TrainConfig(warmup_steps=0, total_steps=2), init_state=weights
        )


def test_inputs_that_do_not_fit_the_base_model_are_refused(
    imported: Manifest, retokenized: Manifest, tmp_path: Path
) -> None:
    index = read_datasets(Path(retokenized.path))
    with pytest.raises(OrchardError, match="seq_length 256 exceeds the base model's 128 pos"):
        continued_model(PretrainConfig(seq_length=256), imported, index)
    other = tmp_path / "other-tokenizer"
    shutil.copytree(index["tokenizer"], other)
    vocab = json.loads((other / "tokenizer.json").read_text())
    vocab["model"]["vocab"]["xyzzy"] = len(vocab["model"]["vocab"])
    (other / "tokenizer.json").write_text(json.dumps(vocab))
    with pytest.raises(OrchardError, match="another tokenizer than the base model 'Tiny Base'"):
        continued_model(PretrainConfig(), imported, index | {"tokenizer": str(other)})
    with pytest.raises(OrchardError, match="^no imported model at"):
        init_from_manifest(str(tmp_path / "nowhere"))
    with pytest.raises(OrchardError, match="is a tokenize output, not an imported base"):
        init_from_manifest(retokenized.path)
    assert init_from_manifest(imported.path) == (
        str(Path(imported.path) / "manifest.json"),
        "cpt-tiny-base",
    )
    # orchard_pretrain's default: the base whose tokenizer tokenized the corpus.
    assert base_of_tokenized(retokenized.path) == str(Path(imported.path) / "manifest.json")


def _hf_loss(model, batches: list[dict]) -> float:
    total, count = 0.0, 0.0
    with torch.no_grad():
        for batch in batches:
            logits = model(input_ids=batch["tokens"], position_ids=batch["position_ids"]).logits
            losses = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), batch["labels"].flatten(), reduction="none"
            )
            mask = batch["loss_mask"].flatten()
            total += float((losses * mask).sum())
            count += float(mask.sum())
    return total / count


@pytest.mark.slow
def test_continued_pretraining_on_ray_train_starts_from_the_base(
    root: Path, imported: Manifest, retokenized: Manifest, base_dir: Path, monkeypatch
) -> None:
    """import -> re-tokenize -> three steps of the pretrain step on Ray Train -> export.
    Step 0's validation loss is the base model's own on the same batches (the worker
    loaded the weights), far below a random model's; training goes on from there."""
    import ray
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.distributed import init_single_process
    from ray_jobs.pretrain import _batch, _datasets

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    config = PretrainConfig(
        steps=3,
        seq_length=64,
        global_batch_size=4,
        lr=1e-3,
        log_interval=1,
        eval_interval=3,
        eval_batches=2,
        threads_per_worker=1,
    )
    temp = tempfile.mkdtemp(prefix="orc-", dir="/tmp")  # Ray's socket paths must stay short
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=temp,
    )
    try:
        done = run_step(
            step="pretrain",
            name="cpt-tiny-base",
            config=config,
            data_root=root,
            inputs=[retokenized, imported],
            body=lambda ctx: pretrain(config, retokenized, ctx, "cpt", None, imported),
        )
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    out = Path(done.path)
    curve = json.loads((out / "curve.json").read_text())
    assert [p["step"] for p in curve] == [0, 1, 2, 3]
    init_loss = done.metrics["init_val_loss"]
    assert init_loss == curve[0]["val_loss"]
    losses = [p["loss"] for p in curve[1:]]
    print(f"init val loss {init_loss:.3f}, losses {losses}, val {curve[-1]['val_loss']:.3f}")
    assert all(math.isfinite(x) for x in losses + [curve[-1]["val_loss"]])
    assert init_loss < 0.6 * math.log(VOCAB)  # a random initialisation's is ~ln(vocab)
    assert curve[-1]["val_loss"] < 0.6 * math.log(VOCAB)  # three steps keep it a trained model

    # The base model's own loss on the batches the worker validated on at step 0.
    init_single_process()
    loop = {
        "datasets": read_datasets(Path(retokenized.path)),
        "dataset_cache": str(root / "check-cache"),
        "datasets_source": None,
        "seed": config.seed,
        "global_batch_size": config.global_batch_size,
        "steps": config.steps,
        "eval_batches": config.eval_batches,
    }
    _, valid = _datasets(loop, config.seq_length)
    batches = [_batch(valid, i, loop, 0, 1) for i in range(config.eval_batches)]
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32).eval()
    assert init_loss == pytest.approx(_hf_loss(base, batches), abs=1e-4)

    assert done.facts == {
        "base_source": str(base_dir),
        "base_sha256": imported.facts["sha256"],
        "base_licence": "unknown",
        "base_display_name": "Tiny Base",
        "base_architecture": "LlamaForCausalLM",
    }
    exported = AutoModelForCausalLM.from_pretrained(str(out / "hf")).eval()
    assert exported.config.max_position_embeddings == POSITIONS  # not the trained 64
    assert exported.config.eos_token_id == 2 and exported.config.tie_word_embeddings
    assert AutoTokenizer.from_pretrained(str(out / "hf")).chat_template
    assert _hf_loss(exported, batches) != pytest.approx(init_loss, abs=1e-6)  # it trained
