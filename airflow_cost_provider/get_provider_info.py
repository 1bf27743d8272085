"""Provider metadata read by Airflow's providers manager, with the documented [cost_provider] options."""

from __future__ import annotations

from airflow_cost_provider.version import __version__

WORKER_RATE_SOURCE = "https://aws.amazon.com/fargate/pricing/"

# Bounds of the numeric options: conf.py enforces them, the descriptions below state them.
# finalize_timeout: below 0.1 s not even a local ledger write completes, so every try would lose its
# ledger row; above 60 s a dead ledger holds each ending task (and its worker slot) that long.
FINALIZE_TIMEOUT_SECONDS = ("0.1", "60")
# Worker rates, per vCPU-hour or GiB-hour in worker_rate_currency: the cap is in the currency's units,
# so it must leave room for currencies with small units (0.04 USD is about 1,000 VND); it still keeps
# a one-try line far inside the ledger's 64-bit nano-units (92,000 vCPU-hours at the cap).
WORKER_RATE_MAX = "100000"
# Providers revise a billing day until its month closes, early in the next month: two months cover it,
# and each scheduled import reads every one of these days again.
STORAGE_REIMPORT_DAYS = (0, 62)
# spool_max_mb: a capture takes a few kB, so 1 MB keeps hundreds; past 100 GB it is a mistake.
SPOOL_MAX_MB = (1, 100_000)
# max_lines_per_task: below 10 a task's own few sources are already aggregated; past a million lines a
# task's capture takes hundreds of MB and its ledger write minutes, far beyond finalize_timeout.
MAX_LINES_PER_TASK = (10, 1_000_000)


def _option(description: str, type_: str, default: str, example: str | None = None, **extra) -> dict:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": type_,
        "example": example,
        "default": default,
        **extra,
    }


CONFIG_OPTIONS: dict[str, dict] = {
    "enabled": _option(
        "Capture and price every task run: True or False. False registers no listener and no hook-lineage "
        "reader.",
        "boolean",
        "True",
    ),
    "ledger_conn": _option(
        "Where the cost ledger lives: an SQLAlchemy URL (postgresql://..., sqlite:////path) or the id of "
        "an Airflow connection. Empty means an SQLite file cost_ledger.db in AIRFLOW_HOME. The ledger is "
        "its own database: Airflow 3 tasks cannot reach the metadata database.",
        "string",
        "",
        example="postgresql://cost:***@ledger-db:5432/cost",
        sensitive=True,
    ),
    "price_book_path": _option(
        "A YAML price book whose entries replace the shipped list prices with the same source, metric "
        "and match, and add new ones. A malformed file stops the provider from pricing "
        "with an error naming the file, the entry and the problem.",
        "string",
        "",
        example="/opt/airflow/config/prices.yaml",
    ),
    "tagging_enabled": _option(
        "Tag work at the source (SQL comments, query tags, job labels) with the task's identity: True or "
        "False.",
        "boolean",
        "True",
    ),
    "untagged_sources": _option(
        "Comma-separated sources whose work is captured but not tagged, e.g. mysql,trino: names of the "
        "price book's sources or airflow_worker.",
        "string",
        "",
        example="mysql",
    ),
    "connection_pricing": _option(
        "JSON object: Airflow connection id -> the attributes that choose its price in the price book. "
        "PostgreSQL, MySQL and Azure SQL statements are priced as the instance rate x their execution "
        'time, so they need the instance: {"analytics_db": {"instance_type": "db.r6g.large"}}. '
        "Other keys: edition and warehouse_size (Snowflake; warehouse_size only when neither QUERY_HISTORY nor SHOW WAREHOUSES gives the size), node_type and nodes (Redshift provisioned), tier and vcores "
        "(Azure SQL), engine_size or dcu_per_hour (Dremio), cluster, cluster_vcores and cluster_memory_gib (Spark: see docs/sources/spark.md). A connection with nothing here is reported as unpriced, never as zero.",
        "string",
        "",
        example='{"analytics_db": {"instance_type": "db.r6g.large"}, "snowflake_default": {"edition": "enterprise"}}',
    ),
    "bigquery_pricing": _option(
        "JSON object: BigQuery project id (or * for every other project) -> on_demand (per TiB billed) "
        "or an edition, standard, enterprise or enterprise_plus (per slot-hour). Empty: on_demand everywhere.",
        "string",
        "",
        example='{"*": "on_demand", "reserved-project": "enterprise"}',
    ),
    "spark_endpoints": _option(
        "JSON object: Airflow connection id of a Spark or Livy connection (or * for every other one) -> the "
        "REST endpoints its applications are measured from at task end: history_server (Spark history "
        "server, http://host:18080) and resource_manager (YARN ResourceManager webapp, http://host:8088). "
        "A Spark connection's yarn_resourcemanager_webapp_address extra is used when no resource_manager is "
        "set. Plain http or https URLs, no credentials in them. Empty: Spark applications are kept "
        "unpriced with the reason.",
        "string",
        "",
        example='{"spark_default": {"history_server": "http://spark-history:18080"}, '
        '"livy_default": {"resource_manager": "http://rm:8088"}}',
    ),
    "disabled_sources": _option(
        "Comma-separated sources not to capture, e.g. airflow_worker,bigquery: names of the price book's "
        "sources or airflow_worker.",
        "string",
        "",
        example="airflow_worker,snowflake",
    ),
    "finalize_timeout": _option(
        "Seconds a task may spend at its end on cost capture, pricing and the ledger write, from "
        f"{FINALIZE_TIMEOUT_SECONDS[0]} to {FINALIZE_TIMEOUT_SECONDS[1]}. Past it the task goes on and a "
        "warning is logged.",
        "float",
        "5.0",
    ),
    "capture_hook_lineage": _option(
        "Read the query and job ids that provider hooks report through Airflow's hook lineage: True or False.",
        "boolean",
        "True",
    ),
    "worker_vcpu_hour_rate": _option(
        "Price of one vCPU-hour of the task process's CPU time (user + system), above 0 and at most "
        f"{WORKER_RATE_MAX}. Default: AWS Fargate, Linux/x86, us-east-1 on-demand, per vCPU-hour "
        f"({WORKER_RATE_SOURCE}).",
        "string",
        "0.04048",
    ),
    "worker_memory_gib_hour_rate": _option(
        "Price of one GiB-hour of memory: the task process's peak resident memory held for the task's wall "
        f"time. Above 0 and at most {WORKER_RATE_MAX}. Default: AWS Fargate, Linux/x86, us-east-1 "
        f"on-demand, per GB-hour ({WORKER_RATE_SOURCE}).",
        "string",
        "0.004445",
    ),
    "worker_rate_currency": _option(
        "Currency of the two worker rates: an ISO 4217 code in capitals, like USD.", "string", "USD"
    ),
    "listener_order": _option(
        "Where the cost listener runs among the task listeners: first (default) or last. Either way the "
        "costProvider_cost facet and the ledger agree; see the README.",
        "string",
        "first",
    ),
    "freeze_heap_for_openlineage": _option(
        "Freeze the task process's heap (gc.freeze) while the task listeners run, so that a garbage "
        "collection in the OpenLineage listener's forked child does not copy the whole heap: True or "
        "False. Only when OpenLineage forks and nothing else froze the heap; see the README.",
        "boolean",
        "True",
    ),
    "storage_reimport_days": _option(
        "Days before its billing day that each scheduled storage cost import reads again, because providers "
        f"revise recent days: {STORAGE_REIMPORT_DAYS[0]} to {STORAGE_REIMPORT_DAYS[1]}. While the billing "
        "day is within the first 10 days of a month, the whole previous month is read again too. ImportStorageCostsOperator(reimport_days=...) overrides it.",
        "integer",
        "5",
    ),
    "storage_allocation": _option(
        "JSON object: dataset URL -> bytes under it, a whole number from 0 to 9223372036854775807 (or null "
        "to list the prefix through the provider's hook). "
        "Storage cost imports give each dataset its share of its bucket's storage cost by these bytes, "
        "method allocated. Used when the operator gets no allocation argument. Azure bills storage "
        "accounts: map its containers (abfss://container@account.dfs.core.windows.net) to see them.",
        "string",
        "",
        example='{"s3://lake/raw/orders/": null, "abfss://raw@acme.dfs.core.windows.net": 5000000000}',
    ),
    "team_mapping": _option(
        "JSON object: DAG id glob -> team (or cost center) of the DAGs' task tries, for reports and "
        "budgets; the first matching glob wins, in the order written. Used when neither the params "
        "cost_team nor a DAG tag team:NAME or cost_center:NAME names the team.",
        "string",
        "",
        example='{"marketing_*": "marketing", "finance_*": "finance"}',
    ),
    "budgets_path": _option(
        "A YAML file of budgets: per scope (team, owner, DAG, task, tag, label, source), a daily, weekly, "
        "monthly or quarterly amount with thresholds on spent and forecast, anomaly rules and notify "
        "targets (see the README's Budgets section). Empty: no budgets. A malformed file is reported "
        "by airflow-cost check, naming the file, the budget and the field.",
        "string",
        "",
        example="/opt/airflow/config/cost_budgets.yaml",
    ),
    "spool_dir": _option(
        "The folder where a capture that the ledger did not take within finalize_timeout waits, one file "
        "per capture, until a later task try on the worker or airflow-cost replay writes it. Empty means "
        "cost_spool in AIRFLOW_HOME.",
        "string",
        "",
        example="/var/lib/airflow/cost_spool",
    ),
    "spool_max_mb": _option(
        f"The most the spool may hold, in MB, from {SPOOL_MAX_MB[0]} to {SPOOL_MAX_MB[1]}. A capture "
        "that would not fit is dropped with a warning.",
        "integer",
        "100",
    ),
    "max_lines_per_task": _option(
        "The most usage records a task try keeps one by one, from "
        f"{MAX_LINES_PER_TASK[0]} to {MAX_LINES_PER_TASK[1]}. Past them, further usages (a loop of small "
        "queries) are priced as they come and summed into one line per source, metric, unit, resource and "
        "price, or per unpriced reason, which keeps the count of usages: the task's memory and its ledger "
        "rows stay bounded, its totals unchanged.",
        "integer",
        "1000",
    ),
    "billing_resources": _option(
        "JSON list of rules for airflow-cost reconcile: billed resources the bill cannot tie to a task "
        "(worker instances, a shared database) and the ledger lines that share them. Each rule: source "
        "(the ledger source, e.g. airflow_worker), optional resource (a glob over the lines' resource), "
        "match with resource_id (a glob over the billed resource id) and/or tags (tag -> value glob), "
        "optional name. The billed rows a rule matches form one pool per day; two rules may not claim "
        "the same billed row.",
        "string",
        "",
        example='[{"name": "workers", "source": "airflow_worker", '
        '"match": {"tags": {"airflow-component": "worker"}}}]',
    ),
    "reconcile_mode": _option(
        "What airflow-cost reconcile does with the part of a billed resource its lines did not use: keep "
        "(the lines get their share of what was used, the rest is a named idle line) or spread (the lines "
        'share the whole bill). One mode, or a JSON object source -> mode with "*" for the others.',
        "string",
        "keep",
        example='{"snowflake": "spread", "*": "keep"}',
    ),
    "correct_estimates": _option(
        "Comma-separated sources (or * for all) whose new estimates are multiplied by the factor "
        "reconciled / estimated that airflow-cost reconcile found for their resource (else for the "
        "source) over the last 30 days, so discounts and commitments show before the bill arrives. The "
        "line stays estimated and records the factor and its amount before it. Off when empty.",
        "string",
        "",
        example="snowflake,bigquery",
    ),
    "opencost_url": _option(
        "The base URL of an OpenCost (or Kubecost) API. Set: when a task that ran Kubernetes pods ends, its "
        "pods' allocation over the task's window is read from /allocation (aggregated by pod, one call "
        "per task, within finalize_timeout) and used as their lines, method allocated, in place of the "
        "requests x running time estimate; a pod it does not know keeps the estimate. Empty: not asked.",
        "string",
        "",
        example="http://opencost.opencost.svc:9003",
    ),
    "opencost_currency": _option(
        "The currency OpenCost reports its costs in (its own configuration names it, the API does not): "
        "an ISO 4217 code in capitals.",
        "string",
        "USD",
    ),
    "prometheus_url": _option(
        "The base URL of the Prometheus HTTP API that scrapes the cluster's kubelets (cAdvisor) and "
        "kube-state-metrics, as OpenCost and Kubecost read it. Set: when a task that ran Kubernetes pods "
        "ends, one instant query (/api/v1/query, within finalize_timeout) reads each container's CPU "
        "seconds and average and peak working set, priced as max(request, usage) x running time, and "
        "finds the executor pods of a Spark driver (SparkKubernetesOperator) through kube_pod_owner. "
        "An http(s) URL without credentials in it. Empty: requests alone are priced.",
        "string",
        "",
        example="http://prometheus-operated.monitoring.svc:9090",
    ),
    "prometheus_selector": _option(
        "Label matchers added to every series the Prometheus query selects, for a Prometheus (Thanos, "
        'Mimir) that holds several clusters: PromQL matchers separated by commas, e.g. cluster="prod-eu".',
        "string",
        "",
        example='cluster="prod-eu"',
    ),
}


def get_provider_info() -> dict:
    return {
        "package-name": "airflow-cost-provider",
        "name": "Cost Provider",
        "description": "Attributes cost to every task run and puts it on the OpenLineage events Airflow emits.",
        "plugins": [
            {"name": "cost_provider", "plugin-class": "airflow_cost_provider.plugin.CostProviderPlugin"}
        ],
        "config": {
            "cost_provider": {
                "description": "Cost capture, pricing and the cost ledger.",
                "options": CONFIG_OPTIONS,
            }
        },
        "versions": [__version__],
    }
