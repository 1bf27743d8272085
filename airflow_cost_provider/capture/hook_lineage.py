"""Query and job ids that provider hooks report to Airflow's hook-lineage collector as `sql_job` extras.

The collector is one per process; under `airflow dags test` every task of the run shares it, so each
session remembers how much the collector held when its task started and reads only what came after.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

SQL_JOB_KEY = "sql_job"

# Hook class name -> source. Checked before the connection type, which several AWS hooks share.
_SOURCE_BY_HOOK = {
    "AthenaHook": "athena",
    "AthenaSQLHook": "athena",
    "RedshiftDataHook": "redshift",
    "RedshiftSQLHook": "redshift",
    "BigQueryHook": "bigquery",
    "SnowflakeHook": "snowflake",
    "SnowflakeSqlApiHook": "snowflake",
    "DatabricksSqlHook": "databricks",
    "PostgresHook": "postgres",
    "MySqlHook": "mysql",
    "TrinoHook": "trino",
    "MsSqlHook": "azure_sql",
    "OdbcHook": "azure_sql",
}
_SOURCE_BY_CONN_TYPE = {
    "postgres": "postgres",
    "mysql": "mysql",
    "trino": "trino",
    "snowflake": "snowflake",
    "google_cloud_platform": "bigquery",
    "databricks": "databricks",
    "mssql": "azure_sql",
}


def _collector():
    """The process's collector, or None while nothing has created it: then no hook has reported
    anything, and creating it just to read it empty would import every provider's asset handlers
    (over a second in a fresh task process). The OpenLineage provider checks the same way."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    cache_info = getattr(get_hook_lineage_collector, "cache_info", None)
    if cache_info is not None and cache_info().currsize == 0:
        return None
    return get_hook_lineage_collector()


def mark() -> list[int]:
    """How many times each extra the collector holds had been reported when the task started."""
    collector = _collector()
    return [] if collector is None else [info.count for info in collector.collected_assets.extra]


def source_of(context: Any) -> str:
    for cls in type(context).__mro__:
        if cls.__name__ in _SOURCE_BY_HOOK:
            return _SOURCE_BY_HOOK[cls.__name__]
    conn_type = getattr(context, "conn_type", None)
    return _SOURCE_BY_CONN_TYPE.get(conn_type, str(conn_type or type(context).__name__).lower())


def usage_since(start_mark: list[int] | None, at: dt.datetime) -> list[Usage]:
    """One `query` usage per statement or job reported since the mark, with its id when it has one."""
    usages: list[Usage] = []
    collector = _collector()
    if collector is None:
        return usages
    start_mark = start_mark or []
    for position, info in enumerate(collector.collected_assets.extra):
        before = start_mark[position] if position < len(start_mark) else 0
        new_reports = info.count - before
        if info.key != SQL_JOB_KEY or new_reports <= 0 or not isinstance(info.value, dict):
            continue
        attributes: dict[str, Any] = {
            "reported_by": type(info.context).__name__,
            UNPRICED_HINT_ATTRIBUTE: "the hook reported the query but no usage statistics; "
            "its id is kept to join with the platform's query history",
        }
        if info.value.get("row_count") is not None:
            attributes["row_count"] = info.value["row_count"]
        if info.value.get("default_db"):
            attributes["database"] = str(info.value["default_db"])
        job_id = info.value.get("job_id")
        usages.append(
            Usage(
                source=source_of(info.context),
                metric="queries",
                quantity=Decimal(new_reports),
                unit="query",
                external_id=str(job_id) if job_id is not None else None,
                end_time=at,
                attributes=attributes,
            )
        )
    return usages
