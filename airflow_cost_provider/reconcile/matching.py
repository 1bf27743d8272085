"""Which billed resources a ledger source can be matched to automatically, and in which units bills
count what the ledger counts. Pure data and SQL text; no Airflow, no database.

A line matches a billed resource when both have the same *kind* (the service, read from the line's
source and from the billed resource id: an ARN's service, an Azure resource provider) and the same
*name* (the line's resource and the resource id's last segment, compared in lower case).

BigQuery jobs on an edition are matched to their reservation (kind `bigquery_reservation`): the
job's `reservation_id` (`admin-project:US.prod`) and the billed
`projects/admin-project/locations/US/reservations/prod` are both named `us.prod`.
"""

from __future__ import annotations

from decimal import Decimal

from airflow_cost_provider.pricing.units import UnknownUnitError, get_unit

# The cloud whose bill charges a source's work: the provider a tagged billing row must come from.
PROVIDER_OF_SOURCE = {
    "athena": "aws",
    "glue": "aws",
    "emr": "aws",
    "emr_serverless": "aws",
    "emr_eks": "aws",
    "redshift": "aws",
    "bigquery": "gcp",
    "dataproc": "gcp",
    "dataproc_serverless": "gcp",
    "compute_engine": "gcp",
    "azure_data_factory": "azure",
    "synapse_pipelines": "azure",
    "synapse_spark": "azure",
    "synapse_serverless_sql": "azure",
    "azure_sql": "azure",
    "snowflake": "snowflake",
    "databricks": "databricks",
}

# BigQuery lines of jobs that ran on a reservation: billed per reservation, not per job
RESERVATION = "bigquery_reservation"

# The kind of billed resource each source's lines run on (sources not named here match by rules only).
KIND_OF_SOURCE = {
    "athena": "athena",
    "glue": "glue",
    "emr": "emr",
    "emr_serverless": "emr_serverless",
    "emr_eks": "emr_eks",
    "redshift": "redshift",
    "dataproc": "dataproc",
    "azure_data_factory": "azure_data_factory",
    "synapse_pipelines": "synapse",
    "synapse_spark": "synapse",
    "synapse_serverless_sql": "synapse",
    "azure_sql": "azure_sql",
    "snowflake": "snowflake",
    "databricks": "databricks",
}

# The service in an AWS ARN (arn:aws:SERVICE:region:account:...) -> kind.
AWS_ARN_SERVICES = {
    "athena": "athena",
    "glue": "glue",
    "elasticmapreduce": "emr",
    "emr-serverless": "emr_serverless",
    "emr-containers": "emr_eks",
    "redshift": "redshift",
    "redshift-serverless": "redshift",
}
# The resource provider in an Azure resource id (/subscriptions/../providers/NAMESPACE/..) -> kind.
AZURE_NAMESPACES = {
    "microsoft.datafactory": "azure_data_factory",
    "microsoft.synapse": "synapse",
    "microsoft.sql": "azure_sql",
}

# Units as bills write them (FOCUS ConsumedUnit, CUR pricing units, metering views) -> the price book's.
BILLED_UNITS = {
    "hrs": "hour",
    "hr": "hour",
    "hour": "hour",
    "hours": "hour",
    "second": "second",
    "seconds": "second",
    "s": "second",
    "credit": "credit",
    "credits": "credit",
    "dbu": "DBU",
    "dbus": "DBU",
    "byte": "byte",
    "bytes": "byte",
    "gb": "GB",
    "gigabytes": "GB",
    "gib": "GiB",
    "gibibyte": "GiB",
    "tb": "TB",
    "terabytes": "TB",
    "tib": "TiB",
    "tebibyte": "TiB",
    "dpu-hour": "DPU-hour",
    "dpu-hours": "DPU-hour",
    "vcpu-hours": "vCPU-hour",
    "vcpu-hour": "vCPU-hour",
    "slot-ms": "slot-ms",
    "slot-second": "slot-second",
    "slot-seconds": "slot-second",
    "slot second": "slot-second",
    "slot seconds": "slot-second",
    "slot-hour": "slot-hour",
    "slot-hours": "slot-hour",
    "slot hour": "slot-hour",
    "slot hours": "slot-hour",
    "rpu-hours": "RPU-hour",
    "rpu-hour": "RPU-hour",
}


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _case(expression: str, mapping: dict[str, str]) -> str:
    whens = " ".join(f"WHEN {_quoted(key)} THEN {_quoted(value)}" for key, value in mapping.items())
    return f"CASE {expression} {whens} END"


def billed_kind_sql(provider: str, resource_id: str) -> str:
    """DuckDB SQL: the kind of a billed resource (NULL: none this project runs work on)."""
    arn_service = f"regexp_extract({resource_id}, '^arn:aws[a-z-]*:([a-z0-9-]+):', 1)"
    namespace = f"regexp_extract(lower({resource_id}), '/providers/([a-z.]+)/', 1)"
    return (
        f"CASE WHEN {provider} = 'aws' THEN {_case(arn_service, AWS_ARN_SERVICES)} "
        f"WHEN {provider} = 'azure' THEN {_case(namespace, AZURE_NAMESPACES)} "
        f"WHEN {provider} = 'gcp' AND lower({resource_id}) LIKE '%/reservations/%' THEN '{RESERVATION}' "
        f"WHEN {provider} = 'gcp' AND {resource_id} LIKE '%/clusters/%' THEN 'dataproc' "
        f"WHEN {provider} IN ('snowflake', 'databricks') THEN {provider} END"
    )


def billed_reservation_sql(resource_id: str) -> str:
    """DuckDB SQL: `location.reservation` of a billed reservation's resource id, in lower case."""
    parts = f"regexp_extract(lower({resource_id}), '/locations/([^/]+)/reservations/([^/]+)', ['l', 'r'])"
    return f"({parts}.l || '.' || {parts}.r)"


def job_reservation_sql(reservation_id: str) -> str:
    """DuckDB SQL: `location.reservation` of a job's reservation_id (`admin:US.prod`); NULL for the
    shared pools (`default-pipeline`, `unreserved`), which no reservation bills."""
    return f"lower(NULLIF(regexp_extract({reservation_id}, '^[^:]+:([^.]+[.].+)$', 1), ''))"


def name_sql(resource: str) -> str:
    """DuckDB SQL: a resource's name as matched: its last `/` or `:` segment, in lower case."""
    return f"lower(regexp_extract({resource}, '([^/:]+)/?$', 1))"


def line_kind_sql(source: str) -> str:
    return _case(source, KIND_OF_SOURCE)


def line_provider_sql(source: str) -> str:
    return _case(source, PROVIDER_OF_SOURCE)


def unit_factor(name: str | None) -> tuple[str, Decimal] | None:
    """(dimension, base units per unit) of a ledger or billed unit; None when unknown."""
    if not name:
        return None
    for candidate in (name, BILLED_UNITS.get(name.strip().lower())):
        if candidate is None:
            continue
        try:
            unit = get_unit(candidate)
        except UnknownUnitError:
            continue
        return unit.dimension, unit.factor
    return None


# Lines whose usage another bill charges (source -> metrics): the cloud VMs under Databricks classic
# compute are billed by the cloud, not in system.billing.usage, so they never join a pool of the
# platform's own bill (a `billing_resources` rule can still claim the VMs' rows for them).
BILLED_ELSEWHERE = {"databricks": ("instance_time",)}


def billed_elsewhere_sql(source: str, metric: str) -> str:
    """DuckDB SQL: whether a line's usage is billed by another provider than its source's."""
    conditions = [
        f"({source} = {_quoted(name)} AND {metric} IN ({', '.join(_quoted(m) for m in metrics)}))"
        for name, metrics in BILLED_ELSEWHERE.items()
    ]
    return "(" + " OR ".join(conditions) + ")"


def billed_run_sql(provider: str, tags: str) -> str:
    """DuckDB SQL: the platform's own run a billed row names (`kind:id`), NULL for none: a Databricks
    pipeline update (`dlt_update_id`), else a job run (`job_run_id`), as `databricks-usage` tags them."""
    return (
        f"CASE WHEN {provider} = 'databricks' THEN COALESCE("
        f"'dlt_update:' || json_extract_string({tags}, '$.dlt_update_id'), "
        f"'job_run:' || json_extract_string({tags}, '$.job_run_id')) END"
    )


def line_run_sql(source: str, external_id: str, update_id: str) -> str:
    """DuckDB SQL: the platform run a line measured, in `billed_run_sql`'s terms: a pipeline task's
    update (its `update_id` attribute), else the job run (the usage's external id)."""
    return (
        f"CASE WHEN {source} = 'databricks' THEN COALESCE("
        f"'dlt_update:' || {update_id}, 'job_run:' || {external_id}) END"
    )
