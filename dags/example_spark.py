"""Spark: aggregate the day's clickstream with spark-submit, then score it with a Livy batch.

Cost: the application's Spark conf carries the task's identity as `spark.airflow.*` properties, as
YARN application tags (`spark.yarn.tags`) and, on Kubernetes, as driver and executor pod labels; a Livy
batch gets the same conf and the task's name. What the job does is unchanged. When the task ends the
application's id (from spark-submit's output, or the Livy batch's `appId`) is looked up in the YARN
ResourceManager (`vcoreSeconds`, `memorySeconds`) or the Spark history server (each executor's cores and
memory x its lifetime, plus the driver in cluster mode), and priced per vCPU-hour and GiB-hour
(`spark/core_time`, `spark/memory_time`, method `list_price`), or as an `allocated` share of the
cluster's cost per hour when `connection_pricing` gives the cluster's size. Without an endpoint the
application is kept as unpriced usage with the reason. Set the endpoints in `[cost_provider]
spark_endpoints`, e.g. `{"spark_default": {"history_server": "http://spark-history:18080"},
"livy_default": {"resource_manager": "http://rm:8088"}}`.

Connections: `spark_default` (the master: yarn, spark://host:7077 or k8s://https://host; a YARN
connection's `yarn_resourcemanager_webapp_address` extra is used as the ResourceManager) and
`livy_default` (the Livy server). Set the application paths to yours.
"""

from __future__ import annotations

import pendulum
from airflow.providers.apache.livy.operators.livy import LivyOperator
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import dag


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    doc_md=__doc__,
    tags=["cost-provider", "example", "apache-spark"],
)
def example_spark():
    aggregate_clicks = SparkSubmitOperator(
        task_id="aggregate_clicks",
        conn_id="spark_default",
        application="s3a://analytics-jobs/clickstream/aggregate.py",
        application_args=["--date", "{{ ds }}"],
        name="aggregate_clicks",
        executor_cores=4,
        executor_memory="8g",
        num_executors=4,
    )
    score_sessions = LivyOperator(
        task_id="score_sessions",
        livy_conn_id="livy_default",
        file="s3a://analytics-jobs/clickstream/score.py",
        args=["--date", "{{ ds }}"],
        executor_cores=2,
        executor_memory="4g",
        num_executors=2,
        polling_interval=30,
    )
    aggregate_clicks >> score_sessions


example_spark()
