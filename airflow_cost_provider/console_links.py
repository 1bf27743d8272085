"""The platform console's page of a cost line's query, job or run, built from what the ledger keeps
of its usage: the source, the external id, the resource and the usage's attributes (region, project,
account, host...). Pure: no Airflow, no network.

A link is given only when every part of it is known and well formed: a missing or odd region,
project, account or host gives None, never a guessed link. Only ids and names go into a URL (no
connection, token or query text), each part percent-encoded."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

# AWS regions (us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-4...)
_AWS_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
# Google Cloud project ids and regions / BigQuery locations (US, EU, europe-west3...)
_GCP_PROJECT = re.compile(r"^([a-z][a-z0-9.-]{0,61}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_GCP_LOCATION = re.compile(r"^(US|EU|[a-z]+-[a-z]+\d{1,2})$")
# Snowflake account identifiers: orgname-accountname, or a locator with its region and cloud
_SNOWFLAKE_ACCOUNT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9-]+){0,3}$")
# a plain host name (no user, port, path or query)
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))+$")
_AZURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._()-]{0,89}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_ID = re.compile(r"^[A-Za-z0-9._:@/-]{1,400}$")
_DIGITS = re.compile(r"^\d{1,20}$")


def _part(value: Any, pattern: re.Pattern) -> str | None:
    """`value` as text when it is a non-empty string matching `pattern`, else None."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return text if text and pattern.match(text) else None


def _q(text: str) -> str:
    return quote(text, safe="")


def _aws_console(region: str) -> str:
    if region.startswith("cn-"):
        return "https://console.amazonaws.cn"
    if region.startswith("us-gov-"):
        return "https://console.amazonaws-us-gov.com"
    if "-iso" in region:
        return ""  # isolated partitions: no public console to link to
    return "https://console.aws.amazon.com"


def _region(attributes: Mapping[str, Any]) -> str | None:
    region = _part(attributes.get("region"), _AWS_REGION)
    return region if region and _aws_console(region) else None


def _bigquery(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # resource: "project:location" (or the project alone, the location then in the attributes)
    project, _, location = (resource or "").rpartition(":")
    if ":" not in (resource or "") or not _part(location, _GCP_LOCATION):
        project, location = resource, attributes.get("location")
    project = _part(project, _GCP_PROJECT)
    location = _part(location, _GCP_LOCATION)
    job = _part(external_id, _ID)
    if not (project and location and job):
        return None
    return (
        f"https://console.cloud.google.com/bigquery?project={_q(project)}"
        f"&j={_q(f'bq:{location}:{job}')}&page=queryresults"
    )


def _dataproc(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # resource: "project/region/cluster" (or "project/region" when the job was not read)
    parts = (resource or "").split("/")
    project = _part(parts[0], _GCP_PROJECT) if parts else None
    region = _part(attributes.get("region") or (parts[1] if len(parts) > 1 else None), _GCP_LOCATION)
    job = _part(external_id, _ID)
    if not (project and region and job) or "/" in job:
        return None
    return (
        f"https://console.cloud.google.com/dataproc/jobs/{_q(job)}?region={_q(region)}&project={_q(project)}"
    )


def _dataproc_batch(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # resource: "projects/PROJECT/locations/REGION"
    found = re.match(r"^projects/([^/]+)/locations/([^/]+)$", resource or "")
    if not found:
        return None
    project = _part(found.group(1), _GCP_PROJECT)
    region = _part(found.group(2), _GCP_LOCATION)
    batch = _part(external_id, _ID)
    if not (project and region and batch) or "/" in batch:
        return None
    return (
        f"https://console.cloud.google.com/dataproc/batches/{_q(region)}/{_q(batch)}/monitoring"
        f"?project={_q(project)}"
    )


def _snowflake(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    account = _part(attributes.get("account"), _SNOWFLAKE_ACCOUNT)
    query = _part(external_id, _ID)
    if not (account and query):
        return None
    host = f"{account.lower().replace('_', '-')}.snowflakecomputing.com"
    return f"https://{host}/console#/monitoring/queries/detail?queryId={_q(query)}"


def _athena(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    region = _region(attributes)
    query = _part(external_id, _ID)
    if not (region and query):
        return None
    return f"{_aws_console(region)}/athena/home?region={region}#/query-editor/history/{_q(query)}"


def _glue(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    region = _region(attributes)
    job = _part(resource, re.compile(r"^[^\x00-\x1f]{1,255}$"))
    run = _part(external_id, _ID)
    if not (region and job and run):
        return None
    return f"{_aws_console(region)}/gluestudio/home?region={region}#/job/{_q(job)}/run/{_q(run)}"


def _emr(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # the step's cluster (the console has no page of its own for a step)
    region = _region(attributes)
    cluster = _part(resource, re.compile(r"^j-[A-Z0-9]{1,20}$"))
    if not (region and cluster):
        return None
    return f"{_aws_console(region)}/emr/home?region={region}#/clusterDetails/{cluster}"


def _databricks(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # a job run: https://HOST/#job/JOB_ID/run/RUN_ID, as the Jobs API's run_page_url gives it
    host = _part(attributes.get("host"), _HOST)
    job = _part(attributes.get("job_id"), _DIGITS)
    run = _part(external_id, _DIGITS)
    if not (host and job and run):
        return None
    return f"https://{host.lower()}/#job/{job}/run/{run}"


def _azure_data_factory(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # resource: "RESOURCE_GROUP/FACTORY"
    subscription = _part(attributes.get("subscription_id"), _GUID)
    group, _, factory = (resource or "").partition("/")
    group, factory = _part(group, _AZURE_NAME), _part(factory, _AZURE_NAME)
    run = _part(external_id, _GUID)
    if not (subscription and group and factory and run):
        return None
    scope = (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.DataFactory"
        f"/factories/{factory}"
    )
    return f"https://adf.azure.com/en-us/monitoring/pipelineruns/{run}?{urlencode({'factory': scope})}"


def _synapse_pipelines(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # resource: the workspace's development endpoint, https://WORKSPACE.dev.azuresynapse.net
    found = re.match(r"^https://([a-z0-9-]{1,50})\.dev\.azuresynapse\.net/?$", (resource or "").lower())
    subscription = _part(attributes.get("subscription_id"), _GUID)
    group = _part(attributes.get("resource_group"), _AZURE_NAME)
    run = _part(external_id, _GUID)
    if not (found and subscription and group and run):
        return None
    scope = (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Synapse"
        f"/workspaces/{found.group(1)}"
    )
    return (
        f"https://ms.web.azuresynapse.net/en/monitoring/pipelineruns/{run}?{urlencode({'workspace': scope})}"
    )


def _dbt_cloud(external_id: str, resource: str | None, attributes: Mapping[str, Any]) -> str | None:
    # the run's page on the account's access URL (cloud.getdbt.com, or the account's own host)
    host = _part(attributes.get("host"), _HOST)
    account = _part(attributes.get("dbt_cloud_account_id"), _DIGITS)
    project = _part(attributes.get("dbt_cloud_project_id"), _DIGITS)
    run = _part(attributes.get("dbt_cloud_run_id"), _DIGITS)
    if not (host and account and project and run):
        return None
    return f"https://{host}/deploy/{account}/projects/{project}/runs/{run}/"


_BUILDERS: dict[str, Callable[[str, str | None, Mapping[str, Any]], str | None]] = {
    "bigquery": _bigquery,
    "dataproc": _dataproc,
    "dataproc_serverless": _dataproc_batch,
    "snowflake": _snowflake,
    "athena": _athena,
    "glue": _glue,
    "emr": _emr,
    "databricks": _databricks,
    "azure_data_factory": _azure_data_factory,
    "synapse_pipelines": _synapse_pipelines,
    "dbt_cloud": _dbt_cloud,
}
LINKED_SOURCES = tuple(_BUILDERS)


def console_url(
    source: str, external_id: str | None, resource: str | None, attributes: Mapping[str, Any] | None
) -> str | None:
    """The console page of this usage's query, job or run; None when the platform has none or a
    part of the address is unknown."""
    build = _BUILDERS.get(source)
    if build is None or not external_id:
        return None
    try:
        return build(str(external_id), resource, attributes if isinstance(attributes, Mapping) else {})
    except (TypeError, ValueError):
        return None
