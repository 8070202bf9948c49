"""Serving with two replicas on two hosts, and one host dying under a request.

Orchard's Serve application is deployed to the head on host a as `serving.deploy`
deploys it (the Serve REST API), with the ModelServer at two replicas, at most one per
node, on the worker hosts b and c (a label selector); the ingress and the proxy the
test calls are on host a. The model is a tiny random one registered in an MLflow server
on the root namespace's bridge address, whose artifacts are in the S3 stand-in's bucket:
each replica downloads it from there itself.

Then every process of the host whose replica is streaming an answer is killed, as a
machine dying: that answer ends with a clear error event (and no [DONE]), and the next
requests are answered by the replica on the other host. The dead host boots again at the
end (a new Ray node at its address), so the cluster has its three hosts for the tests
after this one.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from orchard.cluster import failures, network
from serving.config import ServingConfig
from serving.openai_api import REPLICA_HEADER
from testkit.cluster_pretrain import bridge_s3, s3_client
from testkit.cluster_serving import ClusterServe, bridge_mlflow, register_tiny_model

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NAME = "orchard-chat-cluster"
MAX_CONTEXT = 2048  # a long answer: it is still streaming when its host dies


@pytest.fixture(scope="module")
def registry(cluster_session, tmp_path_factory):
    """(MLflow URL, a function registering the tiny model and returning its version),
    its artifacts in the bucket."""
    layout = cluster_session.ensure_up()
    tmp = tmp_path_factory.mktemp("serving-cluster")
    with bridge_s3(layout) as endpoint:
        bucket = f"orchard-{uuid.uuid4().hex[:8]}"
        s3_client(endpoint).create_bucket(Bucket=bucket)

        def register() -> str:
            version = register_tiny_model(uri, NAME, tmp, max_context=MAX_CONTEXT)
            keys = s3_client(endpoint).list_objects_v2(Bucket=bucket).get("Contents", [])
            assert any(k["Key"].startswith("mlflow-artifacts/") for k in keys)
            return version

        with bridge_mlflow(layout, endpoint, bucket, tmp / "mlflow") as uri:
            yield uri, register


def chat(content: str, **fields) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": content}], **fields}


def test_two_replicas_on_two_hosts_and_the_other_answers_when_one_host_dies(
    cluster_hosts, registry
):
    from openai import OpenAI

    uri, register = registry
    layout = cluster_hosts.layout
    serve = ClusterServe(cluster_hosts.settings, layout)
    dying = None
    try:
        serve.deploy(
            ServingConfig(
                mlflow_uri=uri,
                model_name=NAME,
                aliases=("champion",),
                refresh_seconds=1.0,
                torch_threads=1,
            )
        )
        # Serve starts on the hosts meanwhile: its ingress finds the alias when it appears.
        version = register()
        serve.wait_running()
        serve.wait_serving("champion", version)

        # Two ModelServer replicas, one on each worker host.
        replicas = [r for r in serve.replicas() if r["state"] == "RUNNING"]
        assert sorted(r["node_ip"] for r in replicas) == sorted(h.address for h in layout.workers)

        # The OpenAI API answers through the proxy on host a.
        client = OpenAI(base_url=f"{serve.base_url}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.with_raw_response.create(
            **chat("Hello!", max_tokens=8, temperature=0)
        )
        assert answer.parse().choices[0].message.content
        assert answer.headers[REPLICA_HEADER].split("/")[0] in {"host-b", "host-c"}

        # A long answer streams; its replica's host dies in the middle of it.
        body = chat("Tell me about apples.", max_tokens=MAX_CONTEXT - 64, temperature=0)
        with httpx.stream(
            "POST",
            f"{serve.base_url}/v1/chat/completions",
            json={**body, "stream": True},
            timeout=120,
        ) as response:
            assert response.status_code == 200, response.read()
            hostname = response.headers[REPLICA_HEADER].split("/")[0]
            dying = next(h for h in layout.workers if h.hostname == hostname)
            lines = response.iter_lines()
            events = []
            for line in lines:  # until the first text arrives
                if line.startswith("data: "):
                    events.append(line.removeprefix("data: "))
                    delta = json.loads(events[-1])["choices"][0]["delta"]
                    if delta.get("content"):
                        break
            killed = network.kill_hosts([dying], grace=0)
            assert killed[dying.name] > 0
            events += [x.removeprefix("data: ") for x in lines if x.startswith("data: ")]
        assert "[DONE]" not in events  # the answer is visibly incomplete ...
        error = json.loads(events[-1])["error"]  # ... and says why
        assert error["code"] == "replica_unavailable", error
        assert "send the request again" in error["message"]

        # New requests are answered by the replica on the other host.
        survivor = next(h for h in layout.workers if h is not dying)
        for _ in range(3):
            again = client.chat.completions.with_raw_response.create(
                **chat("Hello again!", max_tokens=8, temperature=0)
            )
            assert again.parse().choices[0].message.content
            assert again.headers[REPLICA_HEADER].split("/")[0] == survivor.hostname
    finally:
        serve.delete()  # Serve shuts down on every host
        serve.close()
        if dying is not None and not network.netns_pids(dying):  # it boots again
            try:
                failures.power_on(cluster_hosts.settings, layout, dying.name)
            except Exception:  # then the next test that needs a cluster gets a new one
                cluster_hosts.down()
