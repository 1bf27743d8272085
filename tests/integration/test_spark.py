"""Spark applications end to end: the apache-spark provider's SparkSubmitOperator (YARN cluster mode,
Kubernetes cluster mode, standalone client and cluster mode) and the apache-livy provider's
LivyOperator under `airflow dags test`, with a spark-submit stand-in on the task's PATH and a fake YARN
ResourceManager, Spark history server, Livy server and standalone master on 127.0.0.1. Asserts what
the cluster received (the task's identity in the Spark conf, YARN tags, pod labels, the Livy batch) and
the facet and ledger lines: YARN's vcoreSeconds and memorySeconds, or the history server's executors x
their lifetimes, priced per vCPU-hour and GiB-hour; an allocated share of a cluster's cost per hour;
and unpriced lines with the reason when the history server is down, slow or does not know the app."""

from __future__ import annotations

import json
import os
import socket
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_spark import APP
from tests.support.airflow_env import ledger_rows
from tests.support.fake_spark import (
    HistoryApp,
    conf_of,
    fake_spark_cluster,
    install_spark_submit,
    kubernetes_cluster_lines,
    spark_submit_calls,
    standalone_client_lines,
    standalone_cluster_lines,
    yarn_app,
    yarn_cluster_lines,
)
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
YARN_APP = "application_1767312000000_0007"
SHARED_APP = "application_1767312000000_0011"
LIVY_APP = "application_1767312000000_0042"
LIVY_DEFERRED_APP = "application_1767312000000_0043"
K8S_APP = "spark-0f3c9d2e8a7b4c1d9e6f5a4b3c2d1e0f"
CLIENT_APP = "app-20260102000000-0003"
CLUSTER_APP = "app-20260102000100-0004"
DECOY_APP = "app-20260102000100-0005"
DRIVER_ID = "driver-20260102000100-0001"
DOWN_APP = "spark-5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a"
MISSING_APP = "spark-0000000000000000000000000000dead"
SLOW_APP = "spark-51051051051051051051051051051051"
PLAN = {
    "yarn_etl": {"lines": yarn_cluster_lines(YARN_APP)},
    "shared_etl": {"lines": yarn_cluster_lines(SHARED_APP)},
    "k8s_etl": {"lines": kubernetes_cluster_lines("k8s-etl-5f2a9c-driver", K8S_APP)},
    "standalone_report": {"lines": standalone_client_lines(CLIENT_APP)},
    "standalone_cluster_job": {"lines": standalone_cluster_lines(DRIVER_ID)},
    "down_etl": {"lines": kubernetes_cluster_lines("down-etl-1a2b-driver", DOWN_APP)},
    "missing_etl": {"lines": kubernetes_cluster_lines("missing-etl-3c4d-driver", MISSING_APP)},
    "slow_etl": {"lines": kubernetes_cluster_lines("slow-etl-5e6f-driver", SLOW_APP)},
}
SHARED_PRICE_PER_HOUR = Decimal("12.80")


def shipped_price(metric: str) -> tuple[Decimal, str]:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [p for p in book["prices"] if p["source"] == "spark" and p["metric"] == metric]
    return Decimal(entry["amount"]), entry["unit"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    with fake_spark_cluster() as server:
        server.yarn[YARN_APP] = yarn_app(YARN_APP, "yarn_etl", 1234, 5_056_000, 120_000)
        server.yarn[SHARED_APP] = yarn_app(SHARED_APP, "shared_etl", 7_200, 18_432_000, 600_000)
        server.yarn[LIVY_APP] = yarn_app(LIVY_APP, "livy", 600, 2_457_600, 300_000)
        server.yarn[LIVY_DEFERRED_APP] = yarn_app(LIVY_DEFERRED_APP, "scoring_deferred", 90, 368_640, 45_000)
        server.livy_apps["cost_spark.livy_batch.1"] = LIVY_APP
        server.livy_apps["scoring_deferred"] = LIVY_DEFERRED_APP
        server.add_history(
            HistoryApp(
                K8S_APP,
                "k8s_etl",
                175_000,
                [("1", 4, 5_000, 170_000), ("2", 4, 5_000, None)],
                submitted_as="k8s_etl",
            )
        )
        server.add_history(HistoryApp(CLIENT_APP, "standalone_report", 90_000, [("0", 2, 2_000, None)]))
        server.add_history(
            HistoryApp(
                CLUSTER_APP,
                "standalone_cluster_job",
                60_000,
                [("0", 3, 1_000, 61_000)],
                submitted_as="standalone_cluster_job",
            )
        )
        # the same name, started by another task's run: its identity does not match
        server.add_history(
            HistoryApp(
                DECOY_APP,
                "standalone_cluster_job",
                999_000,
                [("0", 8, 0, None)],
                properties={"spark.airflow.openlineage_run_id": "0190-not-this-task"},
                submitted_as="standalone_cluster_job",
            )
        )
        server.add_history(HistoryApp(SLOW_APP, "slow_etl", 10_000, [("1", 1, 0, None)]))
        server.slow[SLOW_APP] = 6.0
        yield server


@pytest.fixture(scope="module")
def spark_run(airflow_env, cluster, tmp_path_factory):
    folder = tmp_path_factory.mktemp("spark-bin")
    plan_file = install_spark_submit(folder, PLAN)
    cluster.spark_submit_plan = plan_file
    book = folder / "prices.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "version": "test-spark",
                "prices": [
                    {
                        "source": "spark",
                        "metric": "cluster_time",
                        "unit": "hour",
                        "amount": str(SHARED_PRICE_PER_HOUR),
                        "currency": "USD",
                        "effective_date": "2026-01-01",
                        "match": {"cluster": "shared-yarn"},
                    }
                ],
            }
        )
    )
    spark = {"conn_type": "spark"}
    endpoints = {
        "spark_k8s": {"history_server": cluster.url},
        "spark_standalone": {"history_server": cluster.url + "/"},
        "spark_standalone_cluster": {"history_server": cluster.url},
        "spark_down": {"history_server": f"http://127.0.0.1:{closed_port()}"},
        "spark_shared": {"resource_manager": cluster.url},
        "livy_default": {"resource_manager": cluster.url},
    }
    env = {
        "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}",
        # the Spark connection's own extra names the ResourceManager: no spark_endpoints entry needed
        "AIRFLOW_CONN_SPARK_YARN": json.dumps(
            {
                **spark,
                "host": "yarn",
                "extra": {"deploy-mode": "cluster", "yarn_resourcemanager_webapp_address": cluster.url},
            }
        ),
        "AIRFLOW_CONN_SPARK_SHARED": json.dumps(
            {**spark, "host": "yarn", "extra": {"deploy-mode": "cluster"}}
        ),
        "AIRFLOW_CONN_SPARK_K8S": json.dumps(
            {
                **spark,
                "host": "k8s://https://127.0.0.1:6443",
                "extra": {"deploy-mode": "cluster", "namespace": "spark-jobs"},
            }
        ),
        "AIRFLOW_CONN_SPARK_DOWN": json.dumps(
            {**spark, "host": "k8s://https://127.0.0.1:6443", "extra": {"deploy-mode": "cluster"}}
        ),
        "AIRFLOW_CONN_SPARK_STANDALONE": json.dumps({**spark, "host": "spark://127.0.0.1:7077"}),
        "AIRFLOW_CONN_SPARK_STANDALONE_CLUSTER": json.dumps(
            {
                **spark,
                "host": "spark://127.0.0.1:7077",
                "extra": {"deploy-mode": "cluster", "rest-port": cluster.port},
            }
        ),
        "AIRFLOW_CONN_LIVY_DEFAULT": json.dumps(
            {"conn_type": "livy", "host": "127.0.0.1", "port": cluster.port}
        ),
        "AIRFLOW__COST_PROVIDER__SPARK_ENDPOINTS": json.dumps(endpoints),
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
            {"spark_shared": {"cluster": "shared-yarn", "cluster_vcores": "64", "cluster_memory_gib": "256"}}
        ),
        "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book),
    }
    run = airflow_env.dags_test("cost_spark", env=env)
    (folder / "dags-test.log").write_text(run.output)
    assert run.process.returncode == 0, f"{folder / 'dags-test.log'}: {run.output[-3000:]}"
    run.plan_file = plan_file
    return run


@pytest.fixture(scope="module")
def events(spark_run) -> dict[str, dict]:
    events = spark_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def spark_facet(events, task_id: str) -> tuple[list[dict], list[dict]]:
    facet = events[task_id]["run"]["facets"][FACET]
    return (
        [line for line in facet["lines"] if line["source"] == "spark"],
        [item for item in facet["unpriced"] if item["source"] == "spark"],
    )


def by_metric(lines: list[dict]) -> dict[str, dict]:
    found = {line["metric"]: line for line in lines}
    assert len(found) == len(lines)
    return found


def assert_priced(lines: list[dict], app_id: str, core_seconds: Decimal, memory_mib_seconds: Decimal) -> None:
    """vCPU-seconds and MiB-seconds at the shipped per vCPU-hour and GiB-hour prices, by hand."""
    core_price, core_unit = shipped_price("core_time")
    memory_price, memory_unit = shipped_price("memory_time")
    assert (core_unit, memory_unit) == ("vCPU-hour", "GiB-hour")
    found = by_metric(lines)
    assert set(found) == {"core_time", "memory_time"}
    core, memory = found["core_time"], found["memory_time"]
    assert core["externalId"] == memory["externalId"] == app_id
    assert core["unit"] == "vCPU-second" and Decimal(str(core["quantity"])) == core_seconds
    assert memory["unit"] == "MiB-second" and Decimal(str(memory["quantity"])) == memory_mib_seconds
    assert Decimal(str(core["amount"])) == quantize_amount(core_seconds * core_price / 3600)
    assert Decimal(str(memory["amount"])) == quantize_amount(
        memory_mib_seconds * memory_price / (1024 * 3600)
    )
    for line in (core, memory):
        assert line["method"] == "list_price" and line["status"] == "estimated"
        assert line["priceRef"].endswith(f":spark/{line['metric']}")


def test_every_task_completes(events):
    expected = {
        "yarn_cluster",
        "kubernetes_cluster",
        "standalone_client",
        "standalone_cluster",
        "livy_batch",
        "livy_deferrable",
        "shared_cluster",
        "history_down",
        "unknown_app",
        "slow_history",
    }
    assert expected <= set(events)
    assert all(events[t]["eventType"] == "COMPLETE" for t in expected)


def test_the_spark_conf_carries_the_task_identity(spark_run, events):
    calls = spark_submit_calls(spark_run.plan_file)
    yarn = conf_of(calls["yarn_etl"])
    ol_run_id = events["yarn_cluster"]["run"]["runId"]
    assert yarn["spark.airflow.openlineage_run_id"] == ol_run_id
    assert yarn["spark.airflow.dag_id"] == "cost_spark" and yarn["spark.airflow.task_id"] == "yarn_cluster"
    assert yarn["spark.airflow.try_number"] == "1"
    tags = yarn["spark.yarn.tags"].split(",")
    # the user's tag first and kept, then the identity; each a valid YARN tag
    assert tags[0] == "team-a"
    assert "airflow_dag_id:cost_spark" in tags and f"openlineage_run_id:{ol_run_id}" in tags
    assert all(len(t) <= 100 and "," not in t for t in tags)
    # what the user set is passed unchanged
    assert yarn["spark.executor.memory"] == "4g"
    k8s = conf_of(calls["k8s_etl"])
    assert k8s["spark.kubernetes.driver.label.team"] == "growth"
    for role in ("driver", "executor"):
        assert k8s[f"spark.kubernetes.{role}.label.airflow_dag_id"] == "cost_spark"
        assert (
            k8s[f"spark.kubernetes.{role}.label.openlineage_run_id"]
            == events["kubernetes_cluster"]["run"]["runId"]
        )
        run_label = k8s[f"spark.kubernetes.{role}.label.airflow_run_id"]
        # manual__2026-...+00:00 holds characters a label value cannot: sanitised as Airflow does
        assert len(run_label) <= 63 and all(c.isalnum() or c in "-_." for c in run_label)
        assert run_label.startswith("manual__2026")
    # the standalone master gets no Kubernetes labels
    assert not any(k.startswith("spark.kubernetes.") for k in conf_of(calls["standalone_report"]))


def test_yarn_application_is_priced_from_the_resource_manager(cluster, events):
    lines, unpriced = spark_facet(events, "yarn_cluster")
    assert unpriced == []
    assert_priced(lines, YARN_APP, Decimal(1234), Decimal(5_056_000))
    assert cluster.requested(f"/ws/v1/cluster/apps/{YARN_APP}")


def test_kubernetes_application_is_priced_from_the_history_server(events):
    lines, unpriced = spark_facet(events, "kubernetes_cluster")
    assert unpriced == []
    # executors: 4 cores and 4g + max(384m, 10%) = 4505 MiB each, one for 165 s, one until the app's
    # end (170 s); the driver (cluster mode) 2 cores and 2g + 384m for the app's 175 s
    cores = Decimal(4 * 165 + 4 * 170 + 2 * 175)
    memory = Decimal(4505 * (165 + 170) + (2048 + 384) * 175)
    assert_priced(lines, K8S_APP, cores, memory)


def test_standalone_client_mode_counts_only_the_executors(events):
    lines, unpriced = spark_facet(events, "standalone_client")
    assert unpriced == []
    # the driver ran in the task's own process (measured as the worker's compute); 1 executor of
    # 2 cores and 1g + 384m from 2 s to the app's end at 90 s
    assert_priced(lines, CLIENT_APP, Decimal(2 * 88), Decimal(1408 * 88))


def test_standalone_cluster_mode_finds_the_application_by_its_identity(cluster, events):
    lines, unpriced = spark_facet(events, "standalone_cluster")
    assert unpriced == []
    # found among the applications of that name by spark.airflow.openlineage_run_id, not the decoy;
    # 1 executor of 3 cores, 2g + 512m, from 1 s to the app's end at 60 s (it reports a removeTime
    # past the end: counted to the end), and the driver (1 core, 1g + 384m) for the app's 60 s
    assert_priced(lines, CLUSTER_APP, Decimal(3 * 59 + 60), Decimal(2560 * 59 + 1408 * 60))
    assert cluster.requested("/v1/submissions/status/" + DRIVER_ID)
    assert not cluster.requested(f"/api/v1/applications/{DECOY_APP}/allexecutors")


def test_livy_batch_is_tagged_and_priced_from_its_app_id(cluster, events):
    (body,) = [b for b in cluster.livy_posts() if b["file"] == APP and b.get("name") != "scoring_deferred"]
    assert body["name"] == "cost_spark.livy_batch.1"
    assert body["conf"]["spark.airflow.openlineage_run_id"] == events["livy_batch"]["run"]["runId"]
    assert "airflow_task_id:livy_batch" in body["conf"]["spark.yarn.tags"].split(",")
    lines, unpriced = spark_facet(events, "livy_batch")
    assert unpriced == []
    assert_priced(lines, LIVY_APP, Decimal(600), Decimal(2_457_600))
    # the operator's own read of the finished batch gave the appId: no extra call to Livy
    reads = [r for r in cluster.requested("/batches/0") if r.path == "/batches/0" and r.method == "GET"]
    assert len(reads) == 1


def test_deferrable_livy_batch_is_priced_after_resuming(cluster, events):
    (body,) = [b for b in cluster.livy_posts() if b.get("name") == "scoring_deferred"]
    # the user's name is kept; the conf carries the identity
    assert body["conf"]["spark.airflow.task_id"] == "livy_deferrable"
    lines, unpriced = spark_facet(events, "livy_deferrable")
    assert unpriced == []
    assert_priced(lines, LIVY_DEFERRED_APP, Decimal(90), Decimal(368_640))
    # the resumed task's read of the finished batch gave the appId to the restored capture
    reads = [r for r in cluster.requested("/batches/1") if r.path == "/batches/1" and r.method == "GET"]
    assert len(reads) == 1
    facet = events["livy_deferrable"]["run"]["facets"][FACET]
    assert len([line for line in facet["lines"] if line["source"] == "airflow_worker"]) == 4


def test_shared_cluster_is_allocated_from_its_cost_per_hour(events):
    lines, unpriced = spark_facet(events, "shared_cluster")
    assert unpriced == []
    (line,) = lines
    # vCPU share 7200 / 64 = 112.5 s; memory share 18432000 MiB-s / 1024 / 256 GiB = 70.3125 s
    assert line["metric"] == "cluster_time" and line["unit"] == "second" and line["method"] == "allocated"
    assert Decimal(str(line["quantity"])) == Decimal("112.5")
    assert Decimal(str(line["amount"])) == quantize_amount(Decimal("112.5") * SHARED_PRICE_PER_HOUR / 3600)
    assert line["priceRef"] == "test-spark:spark/cluster_time[cluster=shared-yarn]"
    assert line["externalId"] == SHARED_APP


@pytest.mark.parametrize(
    ("task_id", "app_id", "words"),
    [
        ("history_down", DOWN_APP, "connection"),
        ("unknown_app", MISSING_APP, "404"),
        ("slow_history", SLOW_APP, "timed out"),
    ],
)
def test_faults_leave_the_task_alone_and_the_application_unpriced(events, task_id, app_id, words):
    assert events[task_id]["eventType"] == "COMPLETE"
    lines, unpriced = spark_facet(events, task_id)
    assert lines == []
    (item,) = unpriced
    assert item["externalId"] == app_id
    assert "Spark history server" in item["reason"] and words in item["reason"].lower(), item["reason"]


def test_ledger_holds_what_the_facet_shows(spark_run, events):
    rows = ledger_rows(
        spark_run.ledger_url,
        "SELECT r.task_id, r.ol_run_id, u.metric, u.quantity, u.unit, u.external_id, u.attributes, "
        "l.amount_nanos, l.method, l.unpriced_reason FROM cost_usage u JOIN cost_task_runs r ON "
        "u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'spark'",
    )
    for task_id, event in events.items():
        lines, unpriced = spark_facet(events, task_id)
        mine = [r for r in rows if r["task_id"] == task_id]
        assert len(mine) == len(lines) + len(unpriced), task_id
        assert all(r["ol_run_id"] == event["run"]["runId"] for r in mine)
        assert sum(r["amount_nanos"] or 0 for r in mine) == sum(
            int(Decimal(str(line["amount"])) * 10**9) for line in lines
        )
    (core,) = [r for r in rows if r["task_id"] == "kubernetes_cluster" and r["metric"] == "core_time"]
    attributes = json.loads(core["attributes"]) if isinstance(core["attributes"], str) else core["attributes"]
    assert attributes["measured_by"] == "spark_history_server" and attributes["executors"] == 2
    assert attributes["driver_counted"] is True and attributes["deploy_mode"] == "cluster"
    assert attributes["master"] == "k8s://https://127.0.0.1:6443"
    (down,) = [r for r in rows if r["task_id"] == "history_down"]
    assert down["unpriced_reason"] and "history server" in down["unpriced_reason"]
