"""The feedback loop's client side: how `orchard_feedback` fetches the platform's feedback
export (over HTTP, with an administrator's API key of scope `feedback:export`: the DAG
never imports platform code nor reads its database), and how a run names the champion it
starts from.

The key comes from the setting `feedback_api_key` (`ORCHARD_FEEDBACK_API_KEY`), else
`<home>/secrets/feedback-export-key` (mode 0600); an administrator makes it in the UI
(Account → API keys, the scope "Export feedback") or with
`POST /api/v1/api-keys {"name": "orchard_feedback", "scopes": ["feedback:export"]}`.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from orchard.errors import OrchardError
from orchard.settings import Settings

KEY_ENV = "ORCHARD_FEEDBACK_API_KEY"
KEY_SECRET = "feedback-export-key"
EXPORT_PATH = "/api/v1/admin/feedback/export"


@dataclass(frozen=True)
class Export:
    path: Path  # the JSON lines, mode 0600 (they hold user text before redaction)
    sha256: str
    records: int
    opted_out_accounts: int


def export_key(settings: Settings) -> str:
    if settings.feedback_api_key is not None:
        return settings.feedback_api_key.get_secret_value().strip()
    secret = Path(settings.home) / "secrets" / KEY_SECRET
    if secret.is_file():
        return secret.read_text().strip()
    raise OrchardError(
        f"no API key for the feedback export: set {KEY_ENV} or write {secret} with an "
        "administrator's API key of scope feedback:export (Account → API keys, or POST "
        '/api/v1/api-keys {"name": "orchard_feedback", "scopes": ["feedback:export"]})'
    )


def fetch_export(api_url: str, key: str, directory: Path, timeout: float = 120) -> Export:
    """Download the export into `directory` (named by its sha256) and describe it."""
    url = api_url.rstrip("/") + EXPORT_PATH
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            opted_out = int(response.headers.get("X-Orchard-Opted-Out") or 0)
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[:300]
        raise OrchardError(
            f"the feedback export at {url} answered {error.code}: {detail} (the key must be "
            "an administrator's with scope feedback:export)"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise OrchardError(
            f"cannot reach the platform API at {url} ({error}): start it (orchard up api) "
            "or set the DAG's api_url Param"
        ) from None
    digest = hashlib.sha256(body).hexdigest()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"export-{digest[:16]}.jsonl"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(body)
    tmp.chmod(0o600)
    tmp.replace(path)
    records = sum(1 for line in body.splitlines() if line.strip())
    return Export(path, digest, records, opted_out)


def champion_lineage(tracking_uri: str, name: str) -> tuple[str, str, str | None]:
    """(champion version, the manifest path of the model it was registered from, the
    chat_data manifest behind it or None): where a run from feedback starts."""
    from orchard.registry import aliases, version_tag

    version = aliases(tracking_uri, name).get("champion")
    if version is None:
        raise OrchardError(
            f"{name} has no champion: register and promote a model first (orchard_posttrain "
            "from a pretrained model, then promote it on the admin models page)"
        )
    step = version_tag(tracking_uri, name, version, "orchard.model_step")
    model = step and version_tag(tracking_uri, name, version, f"orchard.lineage.{step}")
    if not model:
        raise OrchardError(
            f"{name} version {version} (champion) has no lineage tags: it was not registered "
            "by orchard_posttrain, so no model directory to start from is known"
        )
    chat = version_tag(tracking_uri, name, version, "orchard.lineage.chat_data")
    return version, model, chat


def mlflow_dataset(pairs: list[dict], version: str, location: str):
    """Feedback set `version` (the feedback step's key) at `location` (its directory) as an
    MLflow dataset named `orchard-feedback-<version>`: what the feedback step's run and the
    dpo run that trains on it log with `mlflow.log_input`, the same digest in both."""
    import mlflow
    import pandas as pd

    frame = pd.DataFrame(
        {
            "id": [p["id"] for p in pairs],
            "prompt": [json.dumps(p["prompt"]) for p in pairs],
            "chosen": [p["chosen"][0]["content"] for p in pairs],
            "rejected": [p["rejected"][0]["content"] for p in pairs],
            "source": [p["source"] for p in pairs],
        }
    )
    return mlflow.data.from_pandas(frame, source=location, name=f"orchard-feedback-{version}")


def read_feedback_set(directory: Path, part: str) -> list[dict]:
    """The rows of one part of a published feedback set: `preference` (pairs) or `kto`
    (unpaired rows)."""
    path = directory / part / "train.jsonl"
    if not path.is_file():
        raise OrchardError(f"{path} is missing: pass a finished feedback manifest")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def unfold(pairs: list[dict]) -> list[dict]:
    """Each preference pair as two unpaired rows: its chosen answer desirable
    (`label` true), its rejected one undesirable; the pair's other fields kept."""
    rows = []
    for pair in pairs:
        rest = {k: v for k, v in pair.items() if k not in ("chosen", "rejected", "id")}
        for side, label in (("chosen", True), ("rejected", False)):
            row_id = f"{pair.get('id', '')}:{side}"
            rows.append({**rest, "id": row_id, "completion": pair[side], "label": label})
    return rows


def kto_rows(pairs: list[dict], unpaired: list[dict]) -> list[dict]:
    """What KTO trains on from a feedback set: its unpaired rows, then its pairs unfolded,
    each (prompt, completion, label) once (a thumbed answer that is also half of a pair
    counts once); rows from pairs carry `paired` true."""
    seen: set[str] = set()
    rows = []
    for row in [
        *({**u, "paired": False} for u in unpaired),
        *({**u, "paired": True} for u in unfold(pairs)),
    ]:
        key = json.dumps([row["prompt"], row["completion"], row["label"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            rows.append(row)
    return rows


def mlflow_unpaired_dataset(rows: list[dict], name: str, location: str):
    """Unpaired rows (prompt, completion, label) as an MLflow dataset `name`."""
    import mlflow
    import pandas as pd

    frame = pd.DataFrame(
        {
            "prompt": [json.dumps(r["prompt"]) for r in rows],
            "completion": [r["completion"][-1]["content"] for r in rows],
            "label": [bool(r["label"]) for r in rows],
            "source": [r.get("source", "") for r in rows],
        }
    )
    return mlflow.data.from_pandas(frame, source=location, name=name)
