"""Azure Synapse end to end: the provider's own AzureSynapseRunPipelineOperator and
AzureSynapseRunSparkBatchOperator under `airflow dags test`, against a workspace's development endpoint
served on 127.0.0.1 (through an HTTPS proxy, with a test CA and Entra ID token endpoints). Asserts the
Livy tags the Spark batch carried and the facet and ledger lines: a pipeline run from its activity runs,
a Spark batch as its vCores x running time, and unpriced lines with the reason."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_synapse import SPARK_POOL, WORKSPACE
from tests.support.airflow_env import ledger_rows
from tests.support.fake_azure_data_factory import Activity, PipelinePlan, client_env, fake_azure
from tests.support.fake_synapse import SparkPlan, SynapseWorkspace
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
SOURCES = ("synapse_pipelines", "synapse_spark")
LOAD_SALES = PipelinePlan(
    running_reads=1,
    activities=(
        Activity("copy_sales", "Copy", 300_000, (("DataMovement", "AzureIR", 0.5, "DIUHours"),)),
        Activity("check", "Lookup", 30_000, (("PipelineActivity", "AzureIR", 0.0167, "Hours"),)),
    ),
)
SPARK = {
    "daily_sessions": SparkPlan(queued_seconds=95.5, running_seconds=1234.5),
    # the operator's own status read answers; the look-up at the task's end fails
    "flaky_sessions": SparkPlan(fail_reads_after=1),
}
VCORES = 4 + 4 * 3  # driver cores + executor cores x executors, as the DAG asks


def shipped_price(source: str, metric: str) -> tuple[Decimal, str]:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [p for p in book["prices"] if p["source"] == source and p["metric"] == metric]
    return Decimal(entry["amount"]), entry["unit"]


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    with fake_azure(tmp_path_factory.mktemp("azure-tls")) as server:
        server.plan("load_sales", LOAD_SALES)
        workspace = SynapseWorkspace(server, WORKSPACE)
        for name, plan in SPARK.items():
            workspace.plan_spark(name, plan)
        server.workspace = workspace
        yield server


@pytest.fixture(scope="module")
def workspace(azure) -> SynapseWorkspace:
    return azure.workspace


@pytest.fixture(scope="module")
def synapse_run(airflow_env, azure, workspace):
    connection = {
        "conn_type": "azure_synapse",
        "host": workspace.endpoint,
        "login": "11111111-2222-3333-4444-555555555555",
        "password": "client-secret",
        "extra": {"tenantId": "shop-tenant", "subscriptionId": "sub-0001"},
    }
    studio = (
        "https://web.azuresynapse.net?workspace=%2Fsubscriptions%2Fsub-0001%2FresourceGroups%2Frg-data%2Fproviders%2FMicrosoft.Synapse%2Fworkspaces%2F"
        + WORKSPACE
    )
    run = airflow_env.dags_test(
        "cost_synapse",
        env={
            "AIRFLOW_CONN_AZURE_SYNAPSE_DEFAULT": json.dumps(connection),
            "AIRFLOW_CONN_AZURE_SYNAPSE_PIPELINES": json.dumps({**connection, "host": studio}),
            **client_env(azure),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def events(synapse_run) -> dict[str, dict]:
    events = synapse_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def facet_of(events, task_id: str) -> tuple[dict[str, dict], list[dict]]:
    facet = events[task_id]["run"]["facets"][FACET]
    return (
        {line["metric"]: line for line in facet["lines"] if line["source"] in SOURCES},
        [item for item in facet["unpriced"] if item["source"] in SOURCES],
    )


def test_spark_batches_carry_the_task_identity_as_livy_tags(synapse_run, workspace, events):
    created = {
        r.body["name"]: r.body
        for r in workspace.requests()
        if r.method == "POST" and r.path.endswith("/batches")
    }
    tags = created["daily_sessions"]["tags"]
    assert tags["openlineage_run_id"] == events["spark_batch"]["run"]["runId"]
    assert tags["airflow_dag_id"] == "cost_synapse" and tags["airflow_try_number"] == "1"
    assert tags["airflow_run_id"].startswith("manual__")
    # the user's own tags are kept and win on a clash
    assert tags["team"] == "web" and tags["airflow_task_id"] == "mine"
    assert created["flaky_sessions"]["tags"]["airflow_task_id"] == "spark_lookup_fails"
    assert f"/sparkPools/{SPARK_POOL}/batches" in next(
        iter(r.path for r in workspace.requests() if r.method == "POST" and "batches" in r.path)
    )


def test_a_pipeline_run_is_priced_from_its_activity_runs(synapse_run, azure, events):
    state = azure.run_of("load_sales")
    lines, unpriced = facet_of(events, "run_pipeline")
    assert unpriced == []
    assert set(lines) == {"activity_runs", "diu_time", "pipeline_activity_time"}
    assert all(
        line["externalId"] == state.run_id and line["source"] == "synapse_pipelines"
        for line in lines.values()
    )
    for metric, quantity in (
        ("activity_runs", Decimal(2)),
        ("diu_time", Decimal("0.5")),
        ("pipeline_activity_time", Decimal("0.0167")),
    ):
        price, _ = shipped_price("synapse_pipelines", metric)
        assert Decimal(str(lines[metric]["quantity"])) == quantity
        assert Decimal(str(lines[metric]["amount"])) == quantize_amount(quantity * price)
        assert lines[metric]["priceRef"].endswith(f"synapse_pipelines/{metric}")
    # the operator saw the run finish; the capture only queried its activities
    assert state.reads == LOAD_SALES.running_reads + 1 and state.activity_queries == 1


def test_a_spark_batch_is_priced_per_vcore_hour_of_its_running_time(synapse_run, workspace, events):
    batch = workspace.batch_named("daily_sessions")
    lines, unpriced = facet_of(events, "spark_batch")
    assert unpriced == []
    (line,) = lines.values()
    price, unit = shipped_price("synapse_spark", "vcore_time")
    assert unit == "vCore-hour" and line["unit"] == "vCore-second"
    seconds = Decimal(str(SPARK["daily_sessions"].running_seconds))
    assert line["externalId"] == str(batch["id"]) and line["resource"] == SPARK_POOL
    assert Decimal(str(line["quantity"])) == seconds * VCORES
    assert Decimal(str(line["amount"])) == quantize_amount(seconds * VCORES * price / 3600)
    assert line["priceRef"].endswith("synapse_spark/vcore_time[node_family=memory_optimized]")


def test_a_failing_look_up_leaves_the_task_alone_and_the_batch_unpriced(synapse_run, workspace, events):
    assert events["spark_lookup_fails"]["eventType"] == "COMPLETE"
    batch = workspace.batch_named("flaky_sessions")
    lines, (item,) = facet_of(events, "spark_lookup_fails")
    assert lines == {}
    assert item["externalId"] == str(batch["id"])
    assert "Spark batch look-up failed" in item["reason"] and "HTTP 500" in item["reason"], item["reason"]
    assert workspace.batch_reads[batch["id"]] == 2  # the operator's read, then the capture's one try


def test_ledger_holds_what_the_facet_shows(synapse_run, events):
    rows = ledger_rows(
        synapse_run.ledger_url,
        "SELECT r.task_id, r.ol_run_id, u.source, u.metric, u.attributes, l.amount_nanos "
        "FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id "
        "WHERE u.source IN ('synapse_pipelines', 'synapse_spark')",
    )
    for task_id, event in events.items():
        lines, unpriced = facet_of(events, task_id)
        mine = [r for r in rows if r["task_id"] == task_id]
        assert len(mine) == len(lines) + len(unpriced), task_id
        assert all(r["ol_run_id"] == event["run"]["runId"] for r in mine)
    (spark,) = [r for r in rows if r["task_id"] == "spark_batch"]
    attributes = (
        json.loads(spark["attributes"]) if isinstance(spark["attributes"], str) else spark["attributes"]
    )
    assert attributes["vcores"] == VCORES and attributes["spark_pool"] == SPARK_POOL
