"""The Helm chart (helm/orchard) with real tools, offline: Helm 4's own Go SDK (lint,
values-schema validation, rendering) through helm-python-sdk; every rendered manifest
against the Kubernetes 1.33 and latest OpenAPI schemas (kubernetes-validate, strict) and
the KubeRay v1.7.0 CRD schemas vendored under helm/schemas/; the policies a reviewer asks
for; and the wiring to the code it deploys (settings names, the Serve config, the
migration command). No cluster: docs/deploy.md says what this leaves unchecked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from orchard.settings import Settings, load_settings
from serving.config import Resources, ServingConfig, serve_config

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "orchard"
KUBERAY_SCHEMAS = REPO / "helm" / "schemas" / "kuberay-v1.7.0"
VALUES_FILES = ("values-dev.yaml", "values-gpu.yaml", "values-prod.yaml")
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version() + ".0")
RELEASE, NAMESPACE = "orchard", "orchard"


def values_of(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / name).read_text())


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """`helm template` (an install): every manifest of the chart, NOTES.txt left out."""
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        manifests += [doc for doc in yaml.safe_load_all(text) if doc]
    return manifests


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {name: render(values_of(name)) for name in VALUES_FILES}


def find(manifests: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    [found] = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(suffix)]
    return found


def pod_specs(manifest: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(where, pod spec, long-running) of every pod a manifest makes, KubeRay's included."""
    kind, spec = manifest["kind"], manifest.get("spec", {})
    where = f"{kind}/{manifest['metadata']['name']}"
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        yield where, spec["template"]["spec"], True
    elif kind == "Job":
        yield where, spec["template"]["spec"], False
    elif kind in ("RayCluster", "RayService", "RayJob"):
        cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
        if "headGroupSpec" in cluster:
            yield f"{where} head", cluster["headGroupSpec"]["template"]["spec"], True
            for group in cluster.get("workerGroupSpecs", []):
                yield f"{where} {group['groupName']}", group["template"]["spec"], True
        if "submitterPodTemplate" in spec:
            yield f"{where} submitter", spec["submitterPodTemplate"]["spec"], False


def policy_violations(manifests: list[dict[str, Any]]) -> list[str]:
    """What a reviewer would refuse: `latest` or untagged images, containers without
    requests and limits, root, a writable root file system, privilege escalation, and
    long-running containers without readiness and liveness probes."""
    problems = []
    for manifest in manifests:
        for where, pod, long_running in pod_specs(manifest):
            pod_context = pod.get("securityContext", {})
            init = [(c, False) for c in pod.get("initContainers", [])]
            for container, main in init + [(c, True) for c in pod["containers"]]:
                name = f"{where} container {container['name']}"
                image = container.get("image", "")
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                if not tag or tag == "latest":
                    problems.append(f"{name}: image {image!r} has no pinned tag")
                resources = container.get("resources", {})
                for part in ("requests", "limits"):
                    missing = {"cpu", "memory"} - set(resources.get(part, {}))
                    if missing:
                        problems.append(f"{name}: no {part} for {sorted(missing)}")
                context = container.get("securityContext", {})
                if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
                    problems.append(f"{name}: not runAsNonRoot")
                if not context.get("readOnlyRootFilesystem"):
                    problems.append(f"{name}: root file system is writable")
                if context.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{name}: allowPrivilegeEscalation is not false")
                if main and long_running:
                    for probe in ("readinessProbe", "livenessProbe"):
                        if probe not in container:
                            problems.append(f"{name}: no {probe}")
    return problems


# -- helm lint and the values schema --------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_helm_lint_passes_strict(values_file: str) -> None:
    report = helm.lint(CHART, values_of(values_file), strict=True, kube_version="v1.33.0")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_a_wrong_type_fails_lint_naming_the_value(tmp_path: Path) -> None:
    bad = tmp_path / "values-bad.yaml"
    bad.write_text(
        (CHART / "values-dev.yaml").read_text()
        + "\nmigrations:\n  backoffLimit: two\n"
        + "image:\n  repository: registry.example.org/orchard/orchard\n  tag: latest\n"
    )
    report = helm.lint(CHART, yaml.safe_load(bad.read_text()), strict=True)
    errors = "\n".join(report["errors"])
    assert "/migrations/backoffLimit': got string, want integer" in errors
    assert "/image/tag" in errors
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="backoffLimit"):
        chart.render(yaml.safe_load(bad.read_text()), name=RELEASE, namespace=NAMESPACE)


def test_an_unknown_setting_is_refused_by_the_schema() -> None:
    values = values_of("values-dev.yaml")
    values["settings"]["database_url"] = "postgresql://orchard:hunter2@db/orchard"
    report = helm.lint(CHART, values)
    assert any("/settings" in error and "database_url" in error for error in report["errors"])


def test_a_missing_secret_reference_names_the_value_to_set() -> None:
    values = values_of("values-dev.yaml")
    values["platformKeys"]["existingSecret"] = ""
    with pytest.raises(helm.HelmRenderError, match="set platformKeys.existingSecret"):
        render(values)


def test_settings_the_schema_allows_are_real_non_secret_settings() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    allowed = set(schema["properties"]["settings"]["properties"])
    secret = {name for name, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)}
    derived = {"home", "mlflow_tracking_uri", "serving_url", "ray_address", "airflow_url"}
    assert allowed <= set(Settings.model_fields), allowed - set(Settings.model_fields)
    assert not allowed & (secret | derived | {"database_url", "redis_url", "oauth_providers"})


# -- schemas: Kubernetes and KubeRay ----------------------------------------------------


def kuberay_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((KUBERAY_SCHEMAS / f"{kind.lower()}-v1.json").read_text())
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_every_manifest_validates_against_kubernetes_and_kuberay(
    rendered: dict[str, list[dict[str, Any]]], values_file: str
) -> None:
    manifests = rendered[values_file]
    kinds = {m["kind"] for m in manifests}
    assert {"Deployment", "Service", "Ingress", "Job", "RayService", "RayCluster"} <= kinds
    validators = {kind: kuberay_validator(kind) for kind in ("RayCluster", "RayService", "RayJob")}
    for manifest in manifests:
        where = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["apiVersion"] == "ray.io/v1":
            errors = [e.message for e in validators[manifest["kind"]].iter_errors(manifest)]
            assert errors == [], f"{where}: {errors[:3]}"
            # the pod templates inside, against Kubernetes' own PodTemplate schema too
            for _where, pod, _ in pod_specs(manifest):
                template = {"apiVersion": "v1", "kind": "PodTemplate"}
                template |= {"metadata": {"name": "t"}, "template": {"spec": pod}}
                for version in KUBERNETES_VERSIONS:
                    kubernetes_validate.validate(template, version, strict=True)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{where} is not valid Kubernetes {version}: {error.message}")


def test_the_schemas_catch_a_misspelt_field() -> None:
    """The validation above can fail: a typo in a pod spec and in a RayCluster spec."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containerz": []}},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.33.0", strict=True)
    cluster = {"apiVersion": "ray.io/v1", "kind": "RayCluster", "metadata": {"name": "x"}}
    cluster["spec"] = {
        "headGroupSpec": {"rayStartParams": {}, "template": {}},
        "workerGroupSpec": [],
    }
    assert list(kuberay_validator("RayCluster").iter_errors(cluster))


# -- policies -----------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_policies_hold_for_every_container(
    rendered: dict[str, list[dict[str, Any]]], values_file: str
) -> None:
    assert policy_violations(rendered[values_file]) == []


def test_the_policy_check_catches_a_writable_root_and_a_missing_probe() -> None:
    values = values_of("values-dev.yaml")
    values["containerSecurityContext"] = {"readOnlyRootFilesystem": False}  # merged by Helm
    manifests = render(values)
    del find(manifests, "Deployment", "-mlflow")["spec"]["template"]["spec"]["containers"][0][
        "livenessProbe"
    ]
    problems = policy_violations(manifests)
    assert "Deployment/orchard-api container api: root file system is writable" in problems
    assert "Deployment/orchard-mlflow container mlflow: no livenessProbe" in problems


# -- what the chart deploys -------------------------------------------------------------


def test_gpu_values_put_serving_and_training_workers_on_gpus(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    gpu = rendered["values-gpu.yaml"]
    [serving_gpu] = find(gpu, "RayService")["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    pod = serving_gpu["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith(":0.1.0-cuda")
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    groups = find(gpu, "RayCluster")["spec"]["workerGroupSpecs"]
    limits = {
        g["groupName"]: g["template"]["spec"]["containers"][0]["resources"]["limits"]
        for g in groups
    }
    assert limits["gpu"]["nvidia.com/gpu"] == 8 and "nvidia.com/gpu" not in limits["cpu"]
    # the CPU values file asks for no GPU anywhere
    assert "nvidia.com/gpu" not in json.dumps(rendered["values-dev.yaml"])


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_serve_config_is_what_serving_config_writes_for_a_cluster(
    rendered: dict[str, list[dict[str, Any]]], values_file: str
) -> None:
    """The RayService's serveConfigV2 equals serving/config.py's serve_config() for the
    same numbers (`python -m serving.config --cluster ...`), so the two cannot drift."""
    values = values_of(values_file)
    defaults = values_of("values.yaml")["serving"]
    s = {**defaults, **values["serving"]}
    app, server = {**defaults["app"], **s["app"]}, s["modelServer"]
    ingress = {**defaults["ingress"], **s.get("ingress", {})}
    settings = Settings(host="0.0.0.0", serve_port=s["port"])
    serving = ServingConfig(
        mlflow_uri=f"http://{RELEASE}-mlflow:5000",
        model_name=values["settings"]["model_name"],
        aliases=tuple(values["settings"]["serve_aliases"]),
        refresh_seconds=app["refreshSeconds"],
        max_batch_size=app["maxBatchSize"],
        max_waiting=app["maxWaiting"],
        stream_interval_ms=app["streamIntervalMs"],
        torch_threads=max(1, int(server["numCpus"])),
        device=app["device"],
        engine=app["engine"],
        vllm_dtype=app["vllmDtype"],
        vllm_quantization=app["vllmQuantization"],
        vllm_kv_cache_mib=app["vllmKvCacheMib"],
    )
    resources = Resources(
        min_replicas=server["minReplicas"],
        max_replicas=server["maxReplicas"],
        target_ongoing_requests=server["targetOngoingRequests"],
        num_cpus=server["numCpus"],
        num_gpus=server["numGpus"],
        ingress_replicas=ingress["replicas"],
        ingress_num_cpus=ingress["numCpus"],
    )
    chart_config = yaml.safe_load(
        find(rendered[values_file], "RayService")["spec"]["serveConfigV2"]
    )
    assert chart_config == json.loads(json.dumps(serve_config(settings, serving, resources)))


def resolved_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment, with a stand-in for each value taken from a Secret."""
    stand_ins = {
        "ORCHARD_DATABASE_URL": "postgresql+psycopg://orchard:x@db:5432/orchard",
        "ORCHARD_REDIS_URL": "redis://redis:6379/0",
        "ORCHARD_OAUTH_PROVIDERS": "{}",
    }
    return {
        item["name"]: item["value"] if "value" in item else stand_ins.get(item["name"], "secret")
        for item in container["env"]
    }


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_the_api_environment_loads_as_orchard_settings(
    rendered: dict[str, list[dict[str, Any]]], values_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every ORCHARD_* variable the chart sets is a real setting with a valid value:
    load_settings() refuses unknown names, and the addresses point at the chart's Services."""
    api = find(rendered[values_file], "Deployment", "-api")["spec"]["template"]["spec"]
    env = resolved_env(api["containers"][0])
    for name in [n for n in os.environ if n.startswith("ORCHARD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(Path(__file__).parent)  # no orchard.toml here
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.mlflow_uri == f"http://{RELEASE}-mlflow:5000"
    assert settings.serving_base_url == f"http://{RELEASE}-serving-serve-svc:8100"
    assert settings.ray_dashboard_url == f"http://{RELEASE}-training-head-svc:8265"
    assert settings.public_url == values_of(values_file)["settings"]["public_url"]
    assert settings.database_url and settings.airflow_url
    assert settings.s3_access_key is not None  # from the Secret, never a value
    assert not any(
        "value" in item and "SECRET" in item["name"] for item in api["containers"][0]["env"]
    )


def secret_looking_values(node: Any, path: str = "") -> Iterator[str]:
    """Values that look like secrets: under a password/token/secret key (other than the
    name of a Secret or of a key in one), or a URL with credentials in it."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}"
            named = key == "existingSecret" or key.endswith(("Key", "SecretName"))
            if not named and any(w in key.lower() for w in ("password", "token", "secret")):
                if value:
                    yield where
            yield from secret_looking_values(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from secret_looking_values(item, f"{path}[{index}]")
    elif isinstance(node, str) and "://" in node and "@" in node.split("://", 1)[1]:
        yield path


def test_no_secret_value_in_any_values_file() -> None:
    for name in ("values.yaml", *VALUES_FILES):
        assert list(secret_looking_values(values_of(name))) == [], name
    leaky = {"externalAirflow": {"token": "abc"}, "x": ["redis://:pw@redis:6379"]}
    assert list(secret_looking_values(leaky)) == [".externalAirflow.token", ".x[0]"]


def test_network_policies_let_the_api_reach_serving_but_not_the_ingress(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    manifests = rendered["values-prod.yaml"]
    controller = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    }

    def peers(policy: dict[str, Any]) -> list[tuple[dict[str, Any], list[int]]]:
        return [
            (peer, [p["port"] for p in rule.get("ports", [])])
            for rule in policy["spec"]["ingress"]
            for peer in rule["from"]
        ]

    serving = peers(find(manifests, "NetworkPolicy", "-serving"))
    assert controller not in [peer for peer, _ in serving]
    api_peer = [
        ports
        for peer, ports in serving
        if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
        == "api"
    ]
    assert api_peer == [[8100]]
    assert peers(find(manifests, "NetworkPolicy", "-api")) == [(controller, [8000])]
    # the Ingress routes to the platform API only
    ingress = find(manifests, "Ingress")
    backends = {
        p["backend"]["service"]["name"]
        for r in ingress["spec"]["rules"]
        for p in r["http"]["paths"]
    }
    assert backends == {f"{RELEASE}-api"}


def test_migrations_run_as_a_pre_upgrade_hook_with_the_platform_command(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    job = find(rendered["values-prod.yaml"], "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]
    [mlflow_upgrade] = job["spec"]["template"]["spec"]["initContainers"]
    assert "mlflow db upgrade" in mlflow_upgrade["command"][-1]
    # The image's migrate role really migrates a database (SQLite here, PostgreSQL there).
    db = tmp_path / "platform.db"
    env = {"PATH": "/usr/bin:/bin", "ORCHARD_HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
    env["ORCHARD_DATABASE_URL"] = f"sqlite:///{db}"
    result = subprocess.run(
        [sys.executable, str(REPO / "infra/images/orchard_role.py"), "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "platform database is at the newest schema" in result.stdout
    assert db.stat().st_size > 0


def test_ray_autoscaling_keeps_what_kuberay_needs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """KubeRay gives the autoscaler sidecar its own ServiceAccount and RBAC only when the
    head names none, and the sidecar needs its token; it is held to the same policies
    through autoscalerOptions."""
    for manifest in rendered["values-gpu.yaml"]:
        if manifest["kind"] not in ("RayCluster", "RayService"):
            continue
        cluster = manifest["spec"].get("rayClusterConfig") or manifest["spec"]
        assert cluster["enableInTreeAutoscaling"] is True
        head = cluster["headGroupSpec"]["template"]["spec"]
        assert "serviceAccountName" not in head and "automountServiceAccountToken" not in head
        options = cluster["autoscalerOptions"]
        assert {"cpu", "memory"} <= set(options["resources"]["limits"])
        assert options["securityContext"]["readOnlyRootFilesystem"] is True
