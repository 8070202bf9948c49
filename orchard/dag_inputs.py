"""What a DAG task builds on: the upstream step output it was given, triggered by, or the
newest one on disk. Imported inside tasks (Airflow parses DAG files often)."""

from __future__ import annotations

from typing import Any


def upstream_manifest(context: dict, asset: Any, given: str, step: str) -> str:
    """Which upstream output to build on: the Param when given, else the asset event that
    triggered this run, else the newest finished `step` output."""
    from pathlib import Path

    from airflow.sdk.exceptions import AirflowFailException

    from orchard.settings import load_settings
    from orchard.steps import latest

    if given:
        path = Path(given)
        path = path / "manifest.json" if path.is_dir() else path
        if not path.is_file():
            raise AirflowFailException(f"no manifest at {given}: give a finished {step} output")
        return str(path)
    events = (context.get("triggering_asset_events") or {}).get(asset) or []
    for event in reversed(list(events)):
        manifest = (event.extra or {}).get("manifest")
        if manifest and Path(manifest).is_file():
            return manifest
    newest = latest(Path(load_settings().data_dir), step)
    if newest is None:
        raise AirflowFailException(
            f"no finished {step} output yet: run the DAG that makes it first"
        )
    return str(Path(newest.path) / "manifest.json")
