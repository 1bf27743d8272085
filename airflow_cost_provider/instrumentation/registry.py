"""The instrumentations, imported only when instrumenting, each skipped when its provider is missing."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading

from airflow_cost_provider import conf
from airflow_cost_provider.capture.safety import report_failure
from airflow_cost_provider.instrumentation.base import Instrumentation

log = logging.getLogger("airflow_cost_provider")

# name -> (module:class, the provider package it patches)
INSTRUMENTATIONS: dict[str, tuple[str, str]] = {
    "sql": ("airflow_cost_provider.instrumentation.sql:SqlStatements", "airflow.providers.common.sql"),
    "bigquery": ("airflow_cost_provider.instrumentation.bigquery:BigQueryJobs", "airflow.providers.google"),
    "snowflake": (
        "airflow_cost_provider.instrumentation.snowflake:SnowflakeQueries",
        "airflow.providers.snowflake",
    ),
    "athena": ("airflow_cost_provider.instrumentation.athena:AthenaQueries", "airflow.providers.amazon"),
    "redshift": (
        "airflow_cost_provider.instrumentation.redshift:RedshiftQueries",
        "airflow.providers.amazon",
    ),
    "databricks_sql": (
        "airflow_cost_provider.instrumentation.databricks_sql:DatabricksSqlQueries",
        "airflow.providers.databricks",
    ),
    "trino": ("airflow_cost_provider.instrumentation.trino:TrinoQueries", "airflow.providers.trino"),
    "dremio": ("airflow_cost_provider.instrumentation.dremio:DremioJobs", "airflow.providers.http"),
    # job services
    "glue": ("airflow_cost_provider.instrumentation.glue:GlueJobs", "airflow.providers.amazon"),
    "emr": ("airflow_cost_provider.instrumentation.emr:EmrJobs", "airflow.providers.amazon"),
    "dataproc": ("airflow_cost_provider.instrumentation.dataproc:DataprocJobs", "airflow.providers.google"),
    "databricks_jobs": (
        "airflow_cost_provider.instrumentation.databricks_jobs:DatabricksJobs",
        "airflow.providers.databricks",
    ),
    "spark_submit": (
        "airflow_cost_provider.instrumentation.spark:SparkSubmitApplications",
        "airflow.providers.apache.spark",
    ),
    "livy": ("airflow_cost_provider.instrumentation.spark:LivyBatches", "airflow.providers.apache.livy"),
    "azure_data_factory": (
        "airflow_cost_provider.instrumentation.azure_data_factory:DataFactoryPipelines",
        "airflow.providers.microsoft.azure",
    ),
    "synapse": (
        "airflow_cost_provider.instrumentation.synapse:SynapseJobs",
        "airflow.providers.microsoft.azure",
    ),
    "dbt_cloud": (
        "airflow_cost_provider.instrumentation.dbt_cloud:DbtCloudJobs",
        "airflow.providers.dbt.cloud",
    ),
    "kubernetes": (
        "airflow_cost_provider.instrumentation.kubernetes:KubernetesPods",
        "airflow.providers.cncf.kubernetes",
    ),
    # dbt run by Astronomer Cosmos
    "cosmos": ("airflow_cost_provider.instrumentation.cosmos:CosmosDbtRuns", "cosmos"),
}

_instances: dict[str, Instrumentation] = {}
_lock = threading.Lock()


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def get(name: str) -> Instrumentation | None:
    """The instrumentation, created on first use; None when its provider is not installed."""
    with _lock:
        if name in _instances:
            return _instances[name]
        target, package = INSTRUMENTATIONS[name]
        if not _installed(package):
            log.debug("cost provider: %s not instrumented: %s is not installed", name, package)
            return None
        module_name, class_name = target.split(":")
        try:
            instance = getattr(importlib.import_module(module_name), class_name)()
        except ImportError as error:
            log.debug("cost provider: %s not instrumented: %s", name, error)
            return None
        _instances[name] = instance
        return instance


def instrument_all() -> list[str]:
    """Instrument every source that is installed and not disabled; returns the names instrumented."""
    done = []
    for name in INSTRUMENTATIONS:
        try:
            instrumentation = get(name)
            if instrumentation is None:
                continue
            if instrumentation.sources and not any(conf.source_enabled(s) for s in instrumentation.sources):
                continue
            instrumentation.instrument()
            done.append(name)
        except Exception as error:
            report_failure(f"instrumenting {name}", error)
    return done


def uninstrument_all() -> None:
    with _lock:
        instances = list(_instances.values())
    for instrumentation in instances:
        instrumentation.uninstrument()
