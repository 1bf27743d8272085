"""A moto server on 127.0.0.1 for the AWS end-to-end tests, and the Airflow connection that reaches it.

The server runs in the test process (`moto.server.ThreadedMotoServer`), so `airflow dags test`, a
separate process, talks to it over HTTP like it would to AWS, while the test reads what it saw with
the services' own API calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

REGION = "us-east-1"
ACCESS_KEY = "testing"
SECRET_KEY = "testing"


@contextmanager
def moto_server() -> Iterator[str]:
    """Start a moto server on a free port of 127.0.0.1; yields its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def aws_connection(endpoint_url: str, service_endpoints: dict[str, str] | None = None) -> str:
    """An `AIRFLOW_CONN_AWS_DEFAULT` value (JSON) with fake keys, pointing every service at the
    server, and the services in `service_endpoints` at their own URL."""
    extra: dict[str, Any] = {"endpoint_url": endpoint_url, "region_name": REGION}
    if service_endpoints:
        extra["service_config"] = {name: {"endpoint_url": url} for name, url in service_endpoints.items()}
    return json.dumps({"conn_type": "aws", "login": ACCESS_KEY, "password": SECRET_KEY, "extra": extra})


def airflow_env(endpoint_url: str, service_endpoints: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for `airflow dags test`: the connection, and no real AWS credentials or metadata."""
    return {
        "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(endpoint_url, service_endpoints),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": REGION,
    }


def client(service: str, endpoint_url: str) -> Any:
    """A boto3 client for the test's own look-ups."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10),
    )
