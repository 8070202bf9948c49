"""Uploaded originals on S3 when the data root is an `s3://` URI: written, read for
ingestion and deleted through `orchard.storage` (the data steps' layer), against moto's
S3 server (a real S3 endpoint on loopback, as in tests/unit/test_storage.py)."""

from __future__ import annotations

import uuid

import boto3
import pytest
from pydantic import SecretStr

from orchard.settings import Settings
from testkit.s3 import moto_s3
from tests.platform.conftest import PASSWORD
from tests.platform.test_knowledge import MOTH, new_base, search, settled, upload


def client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip


def objects(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    """The objects under `prefix`, less the empty `dir/` markers pyarrow writes."""
    s3 = client(endpoint)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        item["Key"]: s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        for item in listed
        if not item["Key"].endswith("/")
    }


@pytest.fixture(scope="module")
def endpoint():
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="module")
def bucket(endpoint) -> str:
    name = f"orchard-{uuid.uuid4().hex[:8]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def settings(settings: Settings, endpoint: str, bucket: str) -> Settings:
    return settings.model_copy(
        update={
            "data_root": f"s3://{bucket}/root",
            "s3_endpoint": endpoint,
            "s3_access_key": SecretStr("testing"),
            "s3_secret_key": SecretStr("testing"),
            "rate_limit_user": "6000/minute",  # status polls
        }
    )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # nothing DB-specific
def test_originals_live_on_s3_when_the_data_root_is_there(api, endpoint, bucket):
    alice = api.user("alice")
    base = new_base(api, alice)
    file = upload(api, alice, base, "moths.txt", MOTH.encode()).json()
    key = f"root/knowledge/files/{alice.id}/{file['id']}"
    assert objects(endpoint, bucket, key) == {key: MOTH.encode()}
    assert settled(api, alice, base, file)["status"] == "ready"  # parsed from the object
    hits = search(api, alice, base, "which insect bores into apples?")
    assert hits[0]["chunk"]["file_id"] == file["id"]
    assert not (api.settings.home / "knowledge" / "files" / alice.id).exists()

    deleted = api.http.delete(f"/knowledge/{base['id']}/files/{file['id']}", headers=alice.headers)
    assert deleted.status_code == 204 and objects(endpoint, bucket, key) == {}

    again = upload(api, alice, base, "moths.txt", MOTH.encode()).json()
    assert settled(api, alice, base, again)["status"] == "ready"
    prefix = f"root/knowledge/files/{alice.id}/"
    assert list(objects(endpoint, bucket, prefix)) == [prefix + again["id"]]
    gone = api.http.request("DELETE", "/users/me", json={"password": PASSWORD},
                            headers=alice.headers)  # fmt: skip
    assert gone.status_code == 204 and objects(endpoint, bucket, prefix) == {}
