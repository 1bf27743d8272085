"""Test DAG: the apache-spark provider's SparkSubmitOperator on YARN, Kubernetes and standalone masters
(client and cluster mode) and the apache-livy provider's LivyOperator, unchanged. spark-submit is the
stand-in on PATH the tests install (tests/support/fake_spark.py), the YARN ResourceManager, Spark
history server, Livy server and standalone master the fake the tests start; the connections come from
the environment. Each application's name picks what spark-submit prints for it."""

from __future__ import annotations

import pendulum
from airflow.providers.apache.livy.operators.livy import LivyOperator
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import dag

APP = "local:///opt/spark/jobs/etl.py"


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_spark():
    yarn = SparkSubmitOperator(
        task_id="yarn_cluster",
        conn_id="spark_yarn",
        application=APP,
        name="yarn_etl",
        conf={"spark.yarn.tags": "team-a", "spark.executor.memory": "4g"},
        yarn_track_via_rm_api=True,
        status_poll_interval=1,
    )
    k8s = SparkSubmitOperator(
        task_id="kubernetes_cluster",
        conn_id="spark_k8s",
        application=APP,
        name="k8s_etl",
        conf={
            "spark.executor.memory": "4g",
            "spark.driver.memory": "2g",
            "spark.driver.cores": "2",
            "spark.kubernetes.driver.label.team": "growth",
        },
    )
    client = SparkSubmitOperator(
        task_id="standalone_client",
        conn_id="spark_standalone",
        application=APP,
        name="standalone_report",
    )
    cluster = SparkSubmitOperator(
        task_id="standalone_cluster",
        conn_id="spark_standalone_cluster",
        application=APP,
        name="standalone_cluster_job",
        conf={"spark.executor.memory": "2g", "spark.executor.memoryOverhead": "512m"},
        status_poll_interval=1,
    )
    livy = LivyOperator(task_id="livy_batch", livy_conn_id="livy_default", file=APP, polling_interval=1)
    livy_deferred = LivyOperator(
        task_id="livy_deferrable",
        livy_conn_id="livy_default",
        file=APP,
        name="scoring_deferred",
        deferrable=True,
        polling_interval=1,
    )
    shared = SparkSubmitOperator(
        task_id="shared_cluster", conn_id="spark_shared", application=APP, name="shared_etl", durable=False
    )
    history_down = SparkSubmitOperator(
        task_id="history_down", conn_id="spark_down", application=APP, name="down_etl"
    )
    unknown_app = SparkSubmitOperator(
        task_id="unknown_app", conn_id="spark_k8s", application=APP, name="missing_etl"
    )
    slow_history = SparkSubmitOperator(
        task_id="slow_history", conn_id="spark_k8s", application=APP, name="slow_etl"
    )
    (
        yarn
        >> k8s
        >> client
        >> cluster
        >> livy
        >> livy_deferred
        >> shared
        >> history_down
        >> unknown_app
        >> slow_history
    )


cost_spark()
