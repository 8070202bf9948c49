"""Fetch a registered model version's files once, and load them with transformers.

A version is downloaded from MLflow into `<cache_dir>/<name>/<version>/` (a version's
files never change, so a finished download is reused, also across replica restarts) and
loaded with `AutoModelForCausalLM` / `AutoTokenizer` from the layout docs/serving.md
describes: an MLflow `transformers` flavor model (`MLmodel`, `model/`,
`components/tokenizer/`), or a plain Hugging Face directory.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A registered version cannot be served; the message says what is wrong with it."""


def default_cache_dir() -> Path:
    """Where versions download when no `model_cache_dir` is configured: inside a Ray
    worker (a Serve replica) the node's Ray temp directory, local to the node whatever
    else its hosts share; elsewhere the system's temp directory."""
    try:
        import ray

        if ray.is_initialized():
            return Path(ray.get_runtime_context().get_temp_dir()) / "orchard-serve-models"
    except (ImportError, RuntimeError, AttributeError):
        pass
    return Path(tempfile.gettempdir()) / "orchard-serve-models"


def download_version(tracking_uri: str, name: str, version: str, cache_dir: Path) -> Path:
    """The local directory holding version `version` of `name`, downloaded if needed."""
    target = cache_dir / name / version
    if (target / ".complete").exists():
        return target
    import mlflow
    from mlflow import MlflowClient

    partial = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=_mkdir(cache_dir / name)))
    try:
        # Resolve the version's source with an explicit registry: download_artifacts()
        # ignores registry_uri for models:/ URIs and would open ./mlflow.db instead.
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        source = client.get_model_version_download_uri(name, version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(partial), tracking_uri=tracking_uri
        )
        Path(local, ".complete").touch()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(local, target)
    except Exception as error:
        raise ModelLoadError(
            f"cannot download models:/{name}/{version} from {tracking_uri}: {error}"
        ) from error
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def hf_dirs(root: Path) -> tuple[Path, Path]:
    """(model directory, tokenizer directory) inside a downloaded version."""
    mlmodel = root / "MLmodel"
    if mlmodel.exists():
        flavors = yaml.safe_load(mlmodel.read_text()).get("flavors", {})
        if "transformers" not in flavors:
            raise ModelLoadError(
                f"{root} is an MLflow model without the transformers flavor "
                f"(flavors: {', '.join(flavors) or 'none'}): register it with "
                "orchard.registry.register_hf_model"
            )
        flavor = flavors["transformers"]
        model_dir = root / flavor.get("model_binary", "model")
        tokenizer_dir = root / "components" / "tokenizer"
        if "tokenizer" not in flavor.get("components", []) or not tokenizer_dir.is_dir():
            raise ModelLoadError(f"{root} holds no tokenizer component: log it with the model")
        return model_dir, tokenizer_dir
    if (root / "config.json").exists():
        return root, root
    raise ModelLoadError(
        f"{root} is neither an MLflow transformers model (MLmodel) nor a Hugging Face "
        "directory (config.json): see docs/serving.md for the layout serving expects"
    )


def load_tokenizer(tokenizer_dir: Path) -> Any:
    """The tokenizer of a version; one without a chat template fails."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"cannot load the tokenizer in {tokenizer_dir}: {error}") from error
    _require_chat_template(tokenizer, tokenizer_dir)
    return tokenizer


def _require_chat_template(tokenizer: Any, tokenizer_dir: Path) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"the tokenizer in {tokenizer_dir} has no chat template: save one with the "
            "tokenizer (tokenizer.chat_template = ...; save_pretrained)"
        )


def load_hf_model(root: Path, *, device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) ready for the engine; a tokenizer without a chat template fails."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir, tokenizer_dir = hf_dirs(root)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        # float32 on CPU: bf16 matmuls are slow or missing on many CPUs.
        dtype = torch.float32 if device == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"cannot load the model in {root}: {error}") from error
    _require_chat_template(tokenizer, tokenizer_dir)
    return model.eval(), tokenizer
