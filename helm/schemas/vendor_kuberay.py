"""Write the KubeRay CRDs' OpenAPI v3 schemas as strict JSON Schemas, for the chart's tests.

    python helm/schemas/vendor_kuberay.py KUBERAY_CHECKOUT helm/schemas/kuberay-v1.7.0

reads helm-chart/kuberay-operator/crds/ray.io_{rayclusters,rayjobs,rayservices}.yaml of
a checkout of github.com/ray-project/kuberay (Apache-2.0) and writes one
<kind>-<version>.json per served version. Descriptions are dropped (they are most of the
size) and, as kubeconform's -strict does, every object that lists its properties and does
not say x-kubernetes-preserve-unknown-fields gets additionalProperties: false, so a
misspelt field fails validation instead of being pruned silently by the API server.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

CRDS = ("rayclusters", "rayjobs", "rayservices")


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key != "description"}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def main(checkout: str, destination: str) -> None:
    out_dir = Path(destination)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CRDS:
        path = Path(checkout) / f"helm-chart/kuberay-operator/crds/ray.io_{name}.yaml"
        crd = yaml.safe_load(path.read_text())
        kind = crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served"):
                continue
            schema = strict(version["schema"]["openAPIV3Schema"])
            # apiVersion/kind/metadata are checked by the Kubernetes schemas' conventions
            # here: the CRD leaves metadata open.
            target = out_dir / f"{kind.lower()}-{version['name']}.json"
            target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
            print(f"{target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:])
