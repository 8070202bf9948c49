"""MLflow artifacts on S3 when ORCHARD_S3_ENDPOINT is set.

moto's S3 server stands in for MinIO here (no MinIO server ships in a package registry):
it speaks the S3 API on loopback, and the `minio` client and boto3 talk to it unchanged.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import pytest
from minio import Minio

from tests.conftest import free_port, orchard, stack_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def s3_endpoint():
    port = free_port()
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    server = subprocess.Popen(
        [moto, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_mlflow_stores_artifacts_in_the_configured_bucket(s3_endpoint, tmp_path, monkeypatch):
    env = stack_env(tmp_path / "home")
    env |= {
        "ORCHARD_S3_ENDPOINT": s3_endpoint,
        "ORCHARD_S3_BUCKET": "orchard-test",
        "ORCHARD_S3_ACCESS_KEY": "testing",
        "ORCHARD_S3_SECRET_KEY": "testing",
    }
    result = orchard(env, "up", "mlflow")
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        mlflow.set_tracking_uri(f"http://127.0.0.1:{env['ORCHARD_MLFLOW_PORT']}")
        mlflow.set_experiment("s3-check")
        report = tmp_path / "report.txt"
        report.write_text("lineage goes here")
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(report))  # proxied through the tracking server
        minio = Minio(s3_endpoint.removeprefix("http://"), "testing", "testing", secure=False)
        keys = [o.object_name for o in minio.list_objects("orchard-test", recursive=True)]
        (key,) = [k for k in keys if k.endswith(f"{run.info.run_id}/artifacts/report.txt")]
        assert minio.get_object("orchard-test", key).read() == b"lineage goes here"
        assert not (tmp_path / "home" / "data" / "mlflow-artifacts").exists()
    finally:
        orchard(env, "down")
