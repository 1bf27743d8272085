"""Console links of cost lines (airflow_cost_provider.console_links), URL by URL: each platform's page
of a query, job or run from what the ledger keeps (source, external id, resource, attributes), and no
link at all when a part is missing or malformed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airflow_cost_provider import console_links
from airflow_cost_provider.console_links import LINKED_SOURCES, console_url

SUB = "0b1f6471-1bf0-4dda-aec3-111122223333"
RUN = "7d4c3b1a-2f9e-4a8b-9c0d-1e2f3a4b5c6d"


@pytest.mark.parametrize(
    "source, external_id, resource, attributes, url",
    [
        (
            "bigquery", "job_abc-123", "my-project:US", {"location": "US"},
            "https://console.cloud.google.com/bigquery?project=my-project&j=bq%3AUS%3Ajob_abc-123&page=queryresults",
        ),
        (
            "bigquery", "job_1", "example.com:analytics-prod:europe-west3", {},
            "https://console.cloud.google.com/bigquery?project=example.com%3Aanalytics-prod"
            "&j=bq%3Aeurope-west3%3Ajob_1&page=queryresults",
        ),
        (  # the project alone as resource, the location in the attributes
            "bigquery", "job_2", "my-project", {"location": "EU"},
            "https://console.cloud.google.com/bigquery?project=my-project&j=bq%3AEU%3Ajob_2&page=queryresults",
        ),
        (
            "dataproc", "job-1a2b", "my-project/us-central1/etl-cluster", {"region": "us-central1"},
            "https://console.cloud.google.com/dataproc/jobs/job-1a2b?region=us-central1&project=my-project",
        ),
        (
            "dataproc_serverless", "batch-7", "projects/my-project/locations/europe-west1", {"region": "europe-west1"},
            "https://console.cloud.google.com/dataproc/batches/europe-west1/batch-7/monitoring?project=my-project",
        ),
        (
            "snowflake", "01b2c3d4-0000-1111-0000-000123456789", "TRANSFORM_WH", {"account": "myorg-analytics"},
            "https://myorg-analytics.snowflakecomputing.com/console#/monitoring/queries/detail"
            "?queryId=01b2c3d4-0000-1111-0000-000123456789",
        ),
        (
            "snowflake", "q1", "WH", {"account": "xy12345.eu-west-1"},
            "https://xy12345.eu-west-1.snowflakecomputing.com/console#/monitoring/queries/detail?queryId=q1",
        ),
        (
            "athena", "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111", "primary", {"region": "eu-west-1"},
            "https://console.aws.amazon.com/athena/home?region=eu-west-1"
            "#/query-editor/history/a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
        ),
        (
            "athena", "q-9", "primary", {"region": "cn-north-1"},
            "https://console.amazonaws.cn/athena/home?region=cn-north-1#/query-editor/history/q-9",
        ),
        (
            "glue", "jr_0123abcd", "nightly orders", {"region": "us-east-1"},
            "https://console.aws.amazon.com/gluestudio/home?region=us-east-1#/job/nightly%20orders/run/jr_0123abcd",
        ),
        (
            "emr", "s-2AB3CD", "j-1K48XXXXXXHCB", {"region": "us-west-2"},
            "https://console.aws.amazon.com/emr/home?region=us-west-2#/clusterDetails/j-1K48XXXXXXHCB",
        ),
        (
            "databricks", "455644833", "0923-164208-meows279",
            {"host": "adb-1234567890123456.7.azuredatabricks.net", "job_id": "11223344"},
            "https://adb-1234567890123456.7.azuredatabricks.net/#job/11223344/run/455644833",
        ),
        (
            "azure_data_factory", RUN, "rg-data/adf-prod", {"subscription_id": SUB},
            f"https://adf.azure.com/en-us/monitoring/pipelineruns/{RUN}?factory=%2Fsubscriptions%2F{SUB}"
            "%2FresourceGroups%2Frg-data%2Fproviders%2FMicrosoft.DataFactory%2Ffactories%2Fadf-prod",
        ),
        (
            "synapse_pipelines", RUN, "https://myworkspace.dev.azuresynapse.net",
            {"subscription_id": SUB, "resource_group": "rg-syn"},
            f"https://ms.web.azuresynapse.net/en/monitoring/pipelineruns/{RUN}?workspace=%2Fsubscriptions%2F{SUB}"
            "%2FresourceGroups%2Frg-syn%2Fproviders%2FMicrosoft.Synapse%2Fworkspaces%2Fmyworkspace",
        ),
    ],
)  # fmt: skip
def test_the_console_page_of_each_platform(source, external_id, resource, attributes, url):
    assert console_url(source, external_id, resource, attributes) == url


@pytest.mark.parametrize(
    "source, external_id, resource, attributes",
    [
        ("bigquery", "job_1", "my-project", {}),  # no location
        ("bigquery", "job_1", None, {"location": "US"}),  # no project
        ("bigquery", None, "my-project:US", {}),  # no job id
        ("bigquery", "job_1", "My Project:US", {}),  # not a project id
        ("dataproc", "job-1", "my-project", {}),  # no region
        ("dataproc", "job-1", "my-project/global/c", {"region": "global"}),  # not a region of the console
        ("dataproc_serverless", "b-1", "my-project/us-central1", {}),  # not the batch's parent name
        ("snowflake", "q1", "WH", {}),  # no account
        ("snowflake", "q1", "WH", {"account": "evil.com/x?"}),  # not an account identifier
        ("snowflake", "q1", "WH", {"account": "a b"}),
        ("athena", "q1", "primary", {}),  # no region
        ("athena", "q1", "primary", {"region": "moon-base-1x"}),  # not a region
        ("athena", "q1", "primary", {"region": "us-isob-east-1"}),  # an isolated partition: no public console
        ("glue", "jr_1", None, {"region": "us-east-1"}),  # no job name
        ("emr", "s-1", "not-a-cluster", {"region": "us-east-1"}),
        ("databricks", "455", "cluster", {"job_id": "1"}),  # no host
        ("databricks", "455", "cluster", {"host": "user:pw@adb.net", "job_id": "1"}),  # not a plain host
        ("databricks", "455", "cluster", {"host": "adb-1.azuredatabricks.net"}),  # no job id
        ("databricks", "01ef-statement", "warehouse", {"host": "adb-1.azuredatabricks.net", "job_id": "1"}),
        ("azure_data_factory", RUN, "rg-data/adf-prod", {}),  # no subscription
        ("azure_data_factory", RUN, "adf-prod", {"subscription_id": SUB}),  # no resource group
        ("synapse_pipelines", RUN, "https://evil.example.com", {"subscription_id": SUB, "resource_group": "rg"}),
        ("emr_serverless", "00f1", "app-1", {"region": "us-east-1"}),  # no console page of its own
        ("redshift", "123", "wg", {"region": "us-east-1"}),
        ("trino", "20261205_1", "trino_default", {}),
        ("airflow_worker", "x", None, {}),
    ],
)  # fmt: skip
def test_no_link_when_a_part_is_unknown_or_malformed(source, external_id, resource, attributes):
    assert console_url(source, external_id, resource, attributes) is None


def test_ids_are_percent_encoded_and_attributes_that_are_not_a_mapping_give_no_link():
    url = console_url("athena", "a/b#c?d", "wg", {"region": "us-east-1"})
    assert url is None  # '#' and '?' are not in an execution id
    assert console_url("glue", "jr_1", "job/with#hash", {"region": "us-east-1"}) == (
        "https://console.aws.amazon.com/gluestudio/home?region=us-east-1#/job/job%2Fwith%23hash/run/jr_1"
    )
    assert console_url("athena", "q1", "wg", "not a mapping") is None  # type: ignore[arg-type]
    assert console_url("athena", "q1", "wg", None) is None


def test_no_secret_of_the_attributes_goes_into_a_url():
    attributes = {
        "region": "us-east-1",
        "password": "hunter2",
        "token": "dapi123",
        "conn_id": "aws_secret_conn",
        "host": "adb-1.azuredatabricks.net",
        "job_id": "7",
    }
    for source in LINKED_SOURCES:
        url = console_url(source, "run-1", "wg", attributes) or ""
        assert not any(secret in url for secret in ("hunter2", "dapi123", "aws_secret_conn")), source


def test_the_module_is_pure():
    tree = ast.parse(Path(console_links.__file__).read_text())
    imported = {
        name.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for name in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "re", "collections", "typing", "urllib"}


def test_aws_usages_get_the_region_their_service_answered_from():
    """What makes the Athena, Glue and EMR links: the region of the client the look-ups went through."""
    from decimal import Decimal
    from types import SimpleNamespace

    from airflow_cost_provider.instrumentation.aws import AwsCalls, with_region
    from airflow_cost_provider.pricing.model import Usage

    client = SimpleNamespace(
        meta=SimpleNamespace(region_name="eu-west-1"), get_query_execution=lambda **kwargs: {"ok": True}
    )
    calls = AwsCalls(lambda config: client, deadline=float("inf"))
    usages = [
        Usage("athena", "data_scanned", Decimal(1), "byte", "primary", "q-1"),
        Usage(
            "athena", "data_scanned", Decimal(1), "byte", "primary", "q-2", attributes={"region": "us-east-1"}
        ),
    ]
    assert with_region(usages, calls) == usages  # no call made yet: the region is not known
    calls("get_query_execution", QueryExecutionId="q-1")
    found = with_region(usages, calls)
    assert [usage.attributes.get("region") for usage in found] == ["eu-west-1", "us-east-1"]
    assert console_url("athena", "q-1", "primary", found[0].attributes) == (
        "https://console.aws.amazon.com/athena/home?region=eu-west-1#/query-editor/history/q-1"
    )


@pytest.mark.parametrize(
    "api_base, host",
    [
        ("https://adb-1234567890123456.7.azuredatabricks.net", {"host": "adb-1234567890123456.7.azuredatabricks.net"}),
        ("https://dbc-a1b2.cloud.databricks.com", {"host": "dbc-a1b2.cloud.databricks.com"}),
        ("http://127.0.0.1:8443", {}),  # not the workspace's console
        ("https://localhost:8443", {}),
    ],
)  # fmt: skip
def test_a_databricks_runs_workspace_host(api_base, host):
    from airflow_cost_provider.instrumentation.databricks_jobs import _workspace_host

    assert _workspace_host(api_base) == host
