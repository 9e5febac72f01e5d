"""Integration fixtures: a real S3 endpoint (moto's server mode) on 127.0.0.1.

The endpoint is reached the way production reaches S3: through an Airflow AWS connection (set as
an ``AIRFLOW_CONN_*`` variable) whose extra carries the endpoint URL.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from llmops import storage

if TYPE_CHECKING:
    from collections.abc import Iterator

S3_TEST_KEY_ID = "llmops-test-key-id"
S3_TEST_SECRET = "llmops-test-secret"
S3_REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on a free loopback port for the whole session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        werkzeug.setLevel(level)


@pytest.fixture
def s3_client(s3_server: str) -> Any:
    """A plain boto3 client on the test endpoint: to look at the bucket behind the code's back."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        aws_access_key_id=S3_TEST_KEY_ID,
        aws_secret_access_key=S3_TEST_SECRET,
        region_name=S3_REGION,
    )


@pytest.fixture
def s3_bucket(s3_client: Any, s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A fresh bucket and an Airflow AWS connection to it; yields (bucket_name, conn_id)."""
    bucket = f"llmops-test-{uuid.uuid4().hex[:12]}"
    conn_id = f"llmops_s3_{uuid.uuid4().hex[:8]}"
    for var in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)  # real credentials must not reach the test endpoint
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": S3_TEST_KEY_ID,
                "password": S3_TEST_SECRET,
                "extra": {"endpoint_url": s3_server, "region_name": S3_REGION},
            }
        ),
    )
    s3_client.create_bucket(Bucket=bucket)
    storage.clear_filesystem_cache()
    try:
        yield bucket, conn_id
    finally:
        storage.clear_filesystem_cache()
