"""Serving's configuration: the application's arguments and the Ray Serve config file.

`ServingConfig` is what `serving.app:build_app` receives as `args` from a Serve config
file. `serve_config` writes the whole file (application, deployments, replicas and
resources) from Orchard's settings; `orchard up` deploys it to the local Ray head, and the
same file runs anywhere Serve does:

    .venv/bin/python -m serving.config > serve.yaml           # the local stack's file
    .venv/bin/python -m serving.config --cluster --max-replicas 4 --num-cpus 4 > cluster.yaml
    serve run serve.yaml          # or `serve deploy`, or a KubeRay RayService serveConfigV2
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, replace
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from orchard.settings import Settings

APP_NAME = "orchard-serving"
IMPORT_PATH = "serving.app:build_app"
# Versions one ModelServer replica keeps loaded (Serve model multiplexing): champion,
# challenger, and a pinned or freshly promoted one without evicting either.
MAX_RESIDENT_VERSIONS = 3
# Serve's own latency switches (part of RAY_SERVE_THROUGHPUT_OPTIMIZED, without its direct
# ingress, which opens HTTP ports on the replicas): user code and the router run on the
# replica's main event loop instead of extra threads, a hop less for every streamed message,
# and request logs are written in batches rather than one file write per request.
REPLICA_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mlflow_uri: str = Field(description="MLflow tracking server holding the registry.")
    model_name: str = Field("orchard-chat", description="Registered model name.")
    aliases: tuple[str, ...] = Field(
        ("champion", "challenger"),
        min_length=1,
        description="Aliases served; the first one answers for the bare model name.",
    )
    refresh_seconds: float = Field(
        2.0, gt=0, description="How often the ingress reads the aliases from MLflow."
    )
    model_cache_dir: str | None = Field(
        None, description="Where versions are downloaded (default: a temp directory)."
    )
    max_batch_size: int = Field(
        32,
        ge=1,
        le=256,
        description="Sequences decoded together by one engine (each holds its KV cache).",
    )
    max_waiting: int = Field(
        64, ge=0, description="Requests queued per engine beyond the batch before 429."
    )
    stream_interval_ms: float = Field(
        50.0,
        ge=0,
        description="After the first text, a stream's tokens travel in messages at most "
        "this often (stretched when more than 8 streams share a replica): every Ray message "
        "costs CPU in the replica, the ingress and the proxy (Ray Serve LLM batches its "
        "streams the same way, 50 ms by default).",
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads per replica (default: torch's)."
    )
    device: str = Field("auto", description="'cpu', 'cuda' or 'auto' (cuda if available).")
    engine: Literal["auto", "vllm", "hf"] = Field(
        "auto",
        description="'auto': vLLM for every model it can run here, the hand-written engine "
        "for the rest (serving.vllm_engine.choose_engine); 'vllm' or 'hf' force one.",
    )
    vllm_dtype: str = Field(
        "bfloat16",
        description="vLLM's compute dtype ('bfloat16' uses the CPU's AVX-512 BF16; "
        "'float32' is exact to the hand-written engine; 'auto': the checkpoint's).",
    )
    vllm_quantization: Literal["none", "fp8-kv", "int8"] = Field(
        "none",
        description="vLLM's quantization for versions without an `orchard.serve.quantization` "
        "tag: 'fp8-kv' keeps the KV cache in FP8, 'int8' serves W8A8 INT8 weights "
        "(docs/serving.md, 'Quantized serving').",
    )
    vllm_kv_cache_mib: int = Field(
        512, ge=64, description="vLLM's KV cache per resident version, MiB."
    )
    embedding_model: str | None = Field(
        None,
        description="The sentence-transformers directory /v1/embeddings serves (default: "
        "the packaged all-MiniLM-L6-v2).",
    )


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Replicas and resources of the ModelServer deployment (the one that holds models)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: int = 16
    num_cpus: float = 0.5
    num_gpus: float = 0
    ingress_replicas: int = 1
    embedding_replicas: int = 1
    ingress_num_cpus: float = 0.1
    # Where the replicas go on a cluster of several nodes: at most this many ModelServer
    # replicas per node (1: each on its own host, so one host's death leaves the others
    # answering), and Ray label selectors (`ray start --labels`) for the ModelServer and
    # for the ingress and embedding replicas, e.g. {"orchard-host": "in(b,c)"}.
    max_replicas_per_node: int | None = None
    label_selector: dict[str, str] | None = None
    ingress_label_selector: dict[str, str] | None = None


# The embedded stack shares one machine between Serve and the training steps, whose Ray
# Train workers reserve every logical CPU (pretraining: 2 threads = 2 CPUs on 2 cores).
# Replicas that held 0.6 of them would leave a training job pending forever, so locally
# they reserve none and share the cores through the OS, as the rest of the stack does;
# their torch threads (1) bound what they take. A cluster config reserves real CPUs.
LOCAL_RESOURCES = Resources(num_cpus=0, ingress_num_cpus=0)


def serve_config(
    settings: Settings, serving: ServingConfig, resources: Resources | None = None
) -> dict[str, Any]:
    """A Ray Serve config file (the `serve deploy` / REST API / RayService schema); the
    local stack's resources unless others are given."""
    res = resources or LOCAL_RESOURCES
    args = serving.model_dump(exclude_none=True)
    args["aliases"] = list(serving.aliases)
    model_options: dict[str, Any] = {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
    if res.label_selector:
        model_options["label_selector"] = dict(res.label_selector)
    placed: dict[str, Any] = {}
    if res.max_replicas_per_node:
        placed["max_replicas_per_node"] = res.max_replicas_per_node
    ingress_place = (
        {"label_selector": dict(res.ingress_label_selector)} if res.ingress_label_selector else {}
    )
    return {
        "proxy_location": "EveryNode",
        "http_options": {"host": settings.host, "port": settings.serve_port},
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": IMPORT_PATH,
                "args": args,
                "runtime_env": {"env_vars": dict(REPLICA_ENV)},
                "deployments": [
                    {
                        "name": "ModelServer",
                        "max_ongoing_requests": serving.max_batch_size + serving.max_waiting,
                        "max_queued_requests": 2 * (serving.max_batch_size + serving.max_waiting),
                        "autoscaling_config": {
                            "min_replicas": res.min_replicas,
                            "max_replicas": res.max_replicas,
                            "target_ongoing_requests": res.target_ongoing_requests,
                        },
                        "ray_actor_options": model_options,
                        **placed,
                        "graceful_shutdown_timeout_s": 30,
                    },
                    {
                        "name": "EmbeddingServer",
                        "num_replicas": res.embedding_replicas,
                        "max_ongoing_requests": 256,
                        "ray_actor_options": {"num_cpus": res.num_cpus, **ingress_place},
                    },
                    {
                        "name": "OpenAIIngress",
                        "num_replicas": res.ingress_replicas,
                        "max_ongoing_requests": 1000,
                        "ray_actor_options": {"num_cpus": res.ingress_num_cpus, **ingress_place},
                    },
                ],
            }
        ],
    }


def local_serving_config(settings: Settings) -> ServingConfig:
    """The application arguments of the local stack."""
    return ServingConfig(
        mlflow_uri=settings.mlflow_uri,
        model_name=settings.model_name,
        aliases=settings.serve_aliases,
        model_cache_dir=str(settings.home / "serve" / "models"),
        embedding_model=str(settings.embedding_model) if settings.embedding_model else None,
        # One intra-op thread leaves the other core of a 2-core machine to the rest of
        # the stack; on a cluster, match it to num_cpus.
        torch_threads=1,
    )


def main(argv: list[str] | None = None) -> None:
    """Print the local stack's Serve config; flags change replicas and resources."""
    from orchard.settings import load_settings

    parser = argparse.ArgumentParser(description="Print the Ray Serve config of Orchard.")
    parser.add_argument("--min-replicas", type=int)
    parser.add_argument("--max-replicas", type=int)
    parser.add_argument("--num-cpus", type=float, help="CPUs per ModelServer replica")
    parser.add_argument("--num-gpus", type=float, help="GPUs per ModelServer replica")
    parser.add_argument("--torch-threads", type=int, help="torch threads per replica")
    parser.add_argument(
        "--max-replicas-per-node",
        type=int,
        help="at most this many ModelServer replicas per node (1: one per host)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="for a Ray cluster (KubeRay): proxies listen on 0.0.0.0 for the Kubernetes "
        "Service, versions download to each node's temp directory",
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    serving = local_serving_config(settings)
    if args.cluster:
        settings = settings.model_copy(update={"host": "0.0.0.0"})
        threads = max(1, int(args.num_cpus or Resources.num_cpus))
        serving = serving.model_copy(update={"model_cache_dir": None, "torch_threads": threads})
    if args.torch_threads:
        serving = serving.model_copy(update={"torch_threads": args.torch_threads})
    chosen = {
        field: getattr(args, field)
        for field in (
            "min_replicas",
            "max_replicas",
            "num_cpus",
            "num_gpus",
            "max_replicas_per_node",
        )
        if getattr(args, field) is not None
    }
    resources = Resources(**chosen) if args.cluster else replace(LOCAL_RESOURCES, **chosen)
    yaml.safe_dump(serve_config(settings, serving, resources), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
