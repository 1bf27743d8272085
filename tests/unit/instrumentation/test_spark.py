"""Spark applications: the pure parts (Spark conf tagging, application ids in spark-submit's output,
container memory, usage from YARN and the history server, allocation) and the [cost_provider]
spark_endpoints option; the operators end to end are in tests/integration/test_spark.py."""

from __future__ import annotations

import dataclasses
import os
from decimal import Decimal

import pytest
from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

from airflow_cost_provider import conf
from airflow_cost_provider.capture import deferral, worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation.spark import (
    SparkApplication,
    application_ids,
    application_usage,
    container_mib,
    history_measured,
    k8s_label_value,
    memory_mib,
    resolve_applications,
    spark_time_ms,
    tagged_spark_conf,
    yarn_measured,
    yarn_tags,
)
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.pricing.price_book import load_price_book
from tests.support.fake_spark import HistoryApp, yarn_app

TAGS = {
    "airflow_dag_id": "dag",
    "airflow_task_id": "task",
    "airflow_run_id": "manual__2026-01-02T00:00:00+00:00",
    "airflow_try_number": "1",
    "airflow_map_index": "-1",
    "openlineage_run_id": "0192f0c1-0000-7000-8000-000000000001",
}
START = 1_767_312_000_000


def test_the_conf_gets_the_identity_and_keeps_what_the_user_set():
    user = {
        "spark.yarn.tags": "team-a,nightly",
        "spark.airflow.task_id": "mine",
        "spark.executor.memory": "4g",
    }
    tagged = tagged_spark_conf(user, TAGS)
    assert user == {
        "spark.yarn.tags": "team-a,nightly",
        "spark.airflow.task_id": "mine",
        "spark.executor.memory": "4g",
    }
    assert tagged["spark.airflow.dag_id"] == "dag" and tagged["spark.airflow.task_id"] == "mine"
    assert tagged["spark.airflow.openlineage_run_id"] == TAGS["openlineage_run_id"]
    assert tagged["spark.executor.memory"] == "4g"
    tags = tagged["spark.yarn.tags"].split(",")
    assert tags[:2] == ["team-a", "nightly"] and "airflow_task_id:task" in tags
    assert not any(k.startswith("spark.kubernetes.") for k in tagged)
    # a second tagging (a retried submit of the same hook) adds nothing twice
    assert tagged_spark_conf(tagged, TAGS)["spark.yarn.tags"] == tagged["spark.yarn.tags"]


def test_kubernetes_labels_are_sanitised_as_airflow_sanitises_its_own():
    tagged = tagged_spark_conf(
        {"spark.kubernetes.driver.label.airflow_dag_id": "keep"}, TAGS, kubernetes=True
    )
    assert tagged["spark.kubernetes.driver.label.airflow_dag_id"] == "keep"
    assert tagged["spark.kubernetes.executor.label.airflow_dag_id"] == "dag"
    run_label = tagged["spark.kubernetes.driver.label.airflow_run_id"]
    assert run_label == make_safe_label_value(TAGS["airflow_run_id"]) and len(run_label) <= 63
    for value in ("x" * 80, "-leading", "ok.value_1", "é", ""):
        assert k8s_label_value(value) == make_safe_label_value(value)


def test_yarn_tags_are_cut_and_hold_no_commas():
    tags = yarn_tags({"cost_label_x": "a,b" + "y" * 200}).split(",")
    assert tags == [("cost_label_x:a_b" + "y" * 200)[:100]]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            "INFO YarnClientImpl: Submitted application application_1767312000000_0007",
            {"yarn": "application_1767312000000_0007"},
        ),
        (
            "INFO StandaloneSchedulerBackend: Connected to Spark cluster with app ID app-20260102000000-0003",
            {"standalone": "app-20260102000000-0003"},
        ),
        (
            "\t labels: spark-app-name -> etl, spark-app-selector -> spark-0f3c9d2e, spark-role -> driver",
            {"kubernetes": "spark-0f3c9d2e"},
        ),
        ("INFO ClientEndpoint: Driver successfully submitted as driver-20260102000100-0001", {}),
    ],
)
def test_application_ids_in_spark_submit_output(line, expected):
    assert application_ids(line) == expected


def test_memory_sizes_and_container_overheads():
    assert memory_mib("4g", Decimal(0)) == 4096 and memory_mib("512m", Decimal(0)) == 512
    assert memory_mib("2048", Decimal(0)) == 2048 and memory_mib(None, Decimal(7)) == 7
    assert memory_mib("1t", Decimal(0)) == 1024 * 1024
    with pytest.raises(ValueError, match="cannot read"):
        memory_mib("lots", Decimal(0))
    assert container_mib({}, "executor") == 1024 + 384  # defaults: 1g and the 384 MiB minimum
    assert container_mib({"spark.executor.memory": "8g"}, "executor") == 8192 + 819  # 10%, floored
    assert container_mib({"spark.driver.memory": "2g", "spark.driver.memoryOverhead": "1g"}, "driver") == 3072
    factor = {"spark.executor.memory": "10g", "spark.executor.memoryOverheadFactor": "0.4"}
    assert container_mib(factor, "executor") == 10240 + 4096


def test_history_server_times():
    assert spark_time_ms("2026-01-02T00:00:05.123GMT") == START + 5_123
    assert spark_time_ms(START) == START and spark_time_ms(None) is None and spark_time_ms("soon") is None


def test_history_usage_counts_executor_lifetimes_and_the_driver_in_cluster_mode():
    app = HistoryApp("app-1", "etl", 100_000, [("1", 4, 10_000, 70_000), ("2", 2, 20_000, None)])
    app = dataclasses.replace(app, properties={"spark.executor.memory": "2g"})
    environment = {k: v for k, v in app.environment()["sparkProperties"]}
    cluster = history_measured(app.info(), app.allexecutors(), environment, driver_in_cluster=True)
    # 4 cores x 60 s + 2 cores x 80 s + the driver's 1 core x 100 s
    assert cluster.core_seconds == 4 * 60 + 2 * 80 + 100
    # (2048 + 384) MiB x 140 s + the driver's (1024 + 384) MiB x 100 s
    assert cluster.memory_mib_seconds == 2432 * 140 + 1408 * 100
    assert (cluster.start_ms, cluster.end_ms) == (START, START + 100_000)
    client = history_measured(app.info(), app.allexecutors(), environment, driver_in_cluster=False)
    assert client.core_seconds == 400 and client.memory_mib_seconds == 2432 * 140
    assert client.attributes["executors"] == 2 and client.attributes["driver_counted"] is False


def test_an_unfinished_application_is_not_measured():
    app = HistoryApp("app-1", "etl", 100_000, [])
    info = app.info()
    info["attempts"][0]["completed"] = False
    with pytest.raises(ValueError, match="not completed"):
        history_measured(info, [], {}, True)


def test_yarn_usage_is_priced_per_vcpu_hour_and_gib_hour():
    measured = yarn_measured(yarn_app("application_1767312000000_0001", "etl", 3600, 1_843_200, 600_000))
    usages = application_usage(
        measured, "application_1767312000000_0001", "rm:8088", {"conn_id": "spark_default"}, {}
    )
    lines, unpriced = estimate_all(usages, load_price_book(None))
    assert unpriced == []
    core, memory = lines
    assert core.usage.quantity == 3600 and core.usage.unit == "vCPU-second"
    assert core.amount == quantize_amount(Decimal("0.04048"))  # one vCPU-hour
    assert memory.usage.unit == "MiB-second"
    assert memory.amount == quantize_amount(Decimal("0.5") * Decimal("0.004445"))  # 1800 MiB-h = 0.5 GiB-h
    assert {core.method, memory.method} == {"list_price"}
    assert core.price.source_url == "https://aws.amazon.com/fargate/pricing/"


def test_a_cluster_with_a_capacity_is_allocated_by_its_dominant_share():
    measured = yarn_measured(yarn_app("application_1767312000000_0002", "etl", 6400, 52_428_800, 600_000))
    pricing = {"cluster": "shared", "cluster_vcores": "64", "cluster_memory_gib": "128"}
    (usage,) = application_usage(measured, "application_1767312000000_0002", "rm:8088", {}, pricing)
    # vcores: 6400 / 64 = 100 s; memory: 52428800 / 1024 / 128 = 400 s -> memory dominates
    assert usage.metric == "cluster_time" and usage.quantity == 400 and usage.unit == "second"
    assert usage.attributes["cost_method"] == "allocated"
    assert usage.attributes["allocation_basis"] == "dominant share of the cluster's memory"
    lines, (unpriced,) = estimate_all([usage], load_price_book(None))
    assert lines == [] and "spark/cluster_time" in unpriced.reason and "cluster: shared" in unpriced.reason


def test_without_endpoints_or_an_id_the_application_is_kept_unpriced_with_the_reason():
    no_endpoint = SparkApplication("spark_default", "spark_submit", app_id="app-20260102000000-0001")
    no_id = SparkApplication("spark_default", "spark_submit", driver_id="driver-20260102000000-0001")
    (first, second) = resolve_applications([no_endpoint, no_id], 5.0)
    assert (
        "spark_endpoints" in first.attributes["why_unpriced"]
        and first.external_id == "app-20260102000000-0001"
    )
    assert "application id is not known" in second.attributes["why_unpriced"]
    assert second.external_id == "driver-20260102000000-0001"


def test_a_pending_application_survives_a_deferral():
    item = SparkApplication(
        "livy_default", "livy", livy_batch_id=3, identity={"task_id": "t"}, resource_manager="http://rm:8088"
    )
    document = deferral.snapshot([], {resolve_applications: [item]})
    _, pending = deferral.restore(document)
    ((resolve, restored),) = pending
    assert resolve is resolve_applications and restored == item


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"spark_default": "http://shs:18080"}', "must be an object"),
        ('{"spark_default": {"history": "http://shs:18080"}}', "must be an object"),
        ('{"spark_default": {"history_server": "shs:18080"}}', "http:// or https://"),
        ('{"spark_default": {"history_server": "http://user:secret@shs:18080"}}', "without credentials"),
    ],
)
def test_bad_spark_endpoints_are_named(monkeypatch, value, message):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__SPARK_ENDPOINTS", value)
    conf.clear_cache()
    try:
        with pytest.raises(conf.ConfigError, match=message):
            conf.spark_endpoints()
    finally:
        conf.clear_cache()


def test_spark_endpoints_per_connection_and_default(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__SPARK_ENDPOINTS",
        '{"spark_k8s": {"history_server": "http://shs:18080/"}, "*": {"resource_manager": "https://rm:8090"}}',
    )
    conf.clear_cache()
    try:
        assert conf.spark_endpoints_for("spark_k8s") == {"history_server": "http://shs:18080"}
        assert conf.spark_endpoints_for("other") == {"resource_manager": "https://rm:8090"}
    finally:
        conf.clear_cache()


# ---------------------------------------------------------------------------- the real hooks


@pytest.fixture
def spark_submit(tmp_path, monkeypatch):
    """SparkSubmitHook instrumented, with the spark-submit stand-in first on PATH."""
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook

    from airflow_cost_provider.instrumentation.spark import SparkSubmitApplications
    from tests.support.fake_spark import install_spark_submit, yarn_cluster_lines

    plan = install_spark_submit(
        tmp_path,
        {
            "ok": {"lines": yarn_cluster_lines("application_1767312000000_0001")},
            "broken": {"lines": ["ERROR Client: Application diagnostics: the queue is full"], "exit": 1},
        },
    )
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPARK_DEFAULT",
        '{"conn_type": "spark", "host": "yarn", "extra": {"deploy-mode": "cluster"}}',
    )
    instrumentation = SparkSubmitApplications()
    instrumentation.instrument()
    yield SparkSubmitHook, plan
    instrumentation.uninstrument()
    clear_sessions()


@pytest.fixture
def session():
    return open_session(
        TaskTry("dag", "task", "run", 1, -1, ol_run_id=TAGS["openlineage_run_id"]), worker.sample()
    )


def pending(session) -> list[SparkApplication]:
    return session.pending.get(resolve_applications, [])


def test_submit_is_tagged_and_captured_and_the_hook_keeps_its_own_conf(spark_submit, session):
    from tests.support.fake_spark import conf_of, spark_submit_calls

    hook_class, plan = spark_submit
    user_conf = {"spark.executor.memory": "4g"}
    hook = hook_class(conf=user_conf, name="ok")
    hook.submit("job.py")
    assert hook._conf is user_conf and user_conf == {"spark.executor.memory": "4g"}
    sent = conf_of(spark_submit_calls(plan)["ok"])
    assert sent["spark.airflow.openlineage_run_id"] == TAGS["openlineage_run_id"]
    assert sent["spark.executor.memory"] == "4g"
    (item,) = pending(session)
    assert item.app_id == "application_1767312000000_0001" and item.deploy_mode == "cluster"
    assert item.master == "yarn" and item.driver_in_cluster and item.app_name == "ok"
    assert not hasattr(hook, "_cost_provider_ids")


def test_a_failed_submit_raises_as_before_and_keeps_the_attempt(spark_submit, session):
    from airflow.providers.common.compat.sdk import AirflowException

    hook_class, _ = spark_submit
    hook = hook_class(name="broken")
    with pytest.raises(AirflowException, match="Cannot execute"):
        hook.submit("job.py")
    (item,) = pending(session)
    assert item.app_id is None
    (usage,) = resolve_applications([item], 5.0)
    assert "application id is not known" in usage.attributes["why_unpriced"]


def test_a_tagging_failure_leaves_the_submit_as_it_was(spark_submit, session, monkeypatch):
    from airflow_cost_provider.instrumentation import spark
    from tests.support.fake_spark import conf_of, spark_submit_calls

    def broken(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(spark, "tagged_spark_conf", broken)
    hook_class, plan = spark_submit
    hook_class(conf={"spark.executor.memory": "4g"}, name="ok").submit("job.py")
    assert conf_of(spark_submit_calls(plan)["ok"]) == {"spark.executor.memory": "4g"}
    assert len(pending(session)) == 1


def test_outside_a_task_nothing_is_changed(spark_submit):
    from tests.support.fake_spark import conf_of, spark_submit_calls

    hook_class, plan = spark_submit
    hook_class(conf={"a.b": "c"}, name="ok").submit("job.py")
    assert conf_of(spark_submit_calls(plan)["ok"]) == {"a.b": "c"}


def test_livy_batches_are_tagged_by_keyword_only_and_take_their_app_id_from_get_batch(session, monkeypatch):
    from airflow.providers.apache.livy.hooks.livy import LivyHook

    from airflow_cost_provider.instrumentation.spark import LivyBatches
    from tests.support.fake_spark import fake_spark_cluster

    with fake_spark_cluster() as server:
        server.livy_apps["named"] = "application_1767312000000_0009"
        monkeypatch.setenv(
            "AIRFLOW_CONN_LIVY_DEFAULT",
            f'{{"conn_type": "livy", "host": "127.0.0.1", "port": {server.port}}}',
        )
        instrumentation = LivyBatches()
        instrumentation.instrument()
        try:
            hook = LivyHook()
            first = hook.post_batch(file="job.py", name="named", conf={"spark.executor.cores": "2"})
            # build_post_batch_body(file, args, class_name, jars, py_files, files, archives, name, ...)
            hook.post_batch("job.py", None, None, None, None, None, None, "positional", conf={"user": "conf"})
            hook.post_batch(*(["job.py"] + [None] * 14 + [{"all": "positional"}]))
            hook.get_batch_state(first)
            hook.get_batch_state(first)
            hook.get_batch(first)
        finally:
            instrumentation.uninstrument()
        tagged, named_positionally, untouched = server.livy_posts()
    assert tagged["name"] == "named" and tagged["conf"]["spark.executor.cores"] == "2"
    assert tagged["conf"]["spark.airflow.dag_id"] == "dag"
    # a name given positionally is kept, the conf still tagged; a conf given positionally is left alone
    assert named_positionally["name"] == "positional"
    assert (
        named_positionally["conf"]["user"] == "conf" and "spark.airflow.dag_id" in named_positionally["conf"]
    )
    assert untouched["conf"] == {"all": "positional"} and "name" not in untouched
    first_item, *others = pending(session)
    assert first_item.app_id == "application_1767312000000_0009" and first_item.livy_batch_id == first
    assert [item.app_id for item in others] == [None, None]


def test_a_local_master_is_left_to_the_worker_measurement(spark_submit, session, monkeypatch):
    from tests.support.fake_spark import conf_of, spark_submit_calls

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_LOCAL", '{"conn_type": "spark", "host": "local[4]"}')
    hook_class, plan = spark_submit
    hook_class(conn_id="spark_local", name="ok").submit("job.py")
    assert conf_of(spark_submit_calls(plan)["ok"])["spark.airflow.task_id"] == "task"
    assert pending(session) == []


def test_a_bad_cluster_capacity_is_named():
    measured = yarn_measured(yarn_app("application_1767312000000_0003", "etl", 10, 10, 1_000))
    with pytest.raises(ValueError, match="cluster_vcores = 'none' is not a number above 0"):
        application_usage(measured, "application_1767312000000_0003", "rm", {}, {"cluster_vcores": "none"})


def test_free_text_cost_label_keys_cannot_break_the_conf_or_the_pod():
    tags = {**TAGS, "cost_label_cost center=eu/1": "x y", "cost_label_" + "k" * 80: "v", "--": "w"}
    tagged = tagged_spark_conf({}, tags, kubernetes=True)
    assert tagged["spark.airflow.cost_label_cost_center_eu_1"] == "x y"
    assert all("=" not in key and " " not in key for key in tagged)
    labels = [k.split(".label.", 1)[1] for k in tagged if k.startswith("spark.kubernetes.driver.label.")]
    assert "cost_label_cost_center_eu_1" in labels and ("cost_label_" + "k" * 52) in labels
    assert all(len(name) <= 63 and name[0].isalnum() and name[-1].isalnum() for name in labels)
    assert tagged["spark.kubernetes.driver.label.cost_label_cost_center_eu_1"] == make_safe_label_value("x y")
    assert not any(k.endswith(".label.") for k in tagged)  # a key with nothing valid in it is left out
