"""The instrumentations, each imported only once a module it patches is imported (a task that uses no
provider hook imports none of them), and skipped when its provider is missing."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
import threading

import wrapt

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

# name -> the modules whose import instruments it: each instrumentation's own `modules`, named here so
# that arming it imports nothing (sql.py takes its list from here; tests/unit/instrumentation/
# test_registry.py keeps the others equal)
TRIGGERS: dict[str, tuple[str, ...]] = {
    "sql": (
        "airflow.providers.common.sql.hooks.sql",
        "airflow.providers.snowflake.hooks.snowflake",
        "airflow.providers.databricks.hooks.databricks_sql",
        "airflow.providers.trino.hooks.trino",
        "airflow.providers.postgres.hooks.postgres",
        "airflow.providers.mysql.hooks.mysql",
        "airflow.providers.microsoft.mssql.hooks.mssql",
        "airflow.providers.amazon.aws.hooks.redshift_sql",
        "airflow.providers.amazon.aws.hooks.athena_sql",
    ),
    "bigquery": ("airflow.providers.google.cloud.hooks.bigquery",),
    "snowflake": (
        "airflow.providers.snowflake.hooks.snowflake",
        "airflow.providers.snowflake.hooks.snowflake_sql_api",
    ),
    "athena": ("airflow.providers.amazon.aws.hooks.athena",),
    "redshift": ("airflow.providers.amazon.aws.hooks.redshift_data",),
    "databricks_sql": ("airflow.providers.databricks.hooks.databricks_sql",),
    "trino": ("airflow.providers.trino.hooks.trino",),
    "dremio": ("airflow.providers.http.hooks.http",),
    "glue": ("airflow.providers.amazon.aws.hooks.glue",),
    "emr": ("airflow.providers.amazon.aws.hooks.emr",),
    "dataproc": ("airflow.providers.google.cloud.hooks.dataproc",),
    "databricks_jobs": ("airflow.providers.databricks.hooks.databricks",),
    "spark_submit": ("airflow.providers.apache.spark.hooks.spark_submit",),
    "livy": ("airflow.providers.apache.livy.hooks.livy",),
    "azure_data_factory": ("airflow.providers.microsoft.azure.hooks.data_factory",),
    "synapse": ("airflow.providers.microsoft.azure.hooks.synapse",),
    "kubernetes": ("airflow.providers.cncf.kubernetes.operators.pod",),
    "dbt_cloud": (
        "airflow.providers.dbt.cloud.hooks.dbt",
        "airflow.providers.dbt.cloud.operators.dbt",
        "airflow.providers.dbt.cloud.sensors.dbt",
    ),
    "cosmos": ("cosmos.operators.local",),
}

_instances: dict[str, Instrumentation] = {}
_lock = threading.RLock()  # an instrumentation's import may import a module that triggers another
_armed = False  # instrument_all() arms the triggers, uninstrument_all() disarms them
_triggers_registered: set[str] = set()


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


def _instrument(name: str) -> bool:
    """Create and instrument one instrumentation unless its provider is missing or its sources are
    all disabled; True when it is instrumented."""
    try:
        instrumentation = get(name)
        if instrumentation is None:
            return False
        if instrumentation.sources and not any(conf.source_enabled(s) for s in instrumentation.sources):
            return False
        instrumentation.instrument()
        return True
    except Exception as error:
        report_failure(f"instrumenting {name}", error)
        return False


def _trigger(name: str):
    def on_import(module: object) -> None:
        # runs inside the import of the provider's module: never raise into it
        if _armed:
            _instrument(name)

    return on_import


def instrument_all() -> list[str]:
    """Instrument every source that is installed and not disabled: at once for those whose modules
    are imported already, the others when the task imports one of their modules. Returns the names
    instrumented now."""
    global _armed
    _armed = True
    done = []
    for name in INSTRUMENTATIONS:
        modules = TRIGGERS.get(name, ())
        if not modules or name in _instances or any(module in sys.modules for module in modules):
            if _instrument(name):
                done.append(name)
        elif name not in _triggers_registered:
            _triggers_registered.add(name)
            for module in modules:
                wrapt.register_post_import_hook(_trigger(name), module)
    return done


def uninstrument_all() -> None:
    global _armed
    _armed = False
    with _lock:
        instances = list(_instances.values())
    for instrumentation in instances:
        instrumentation.uninstrument()
