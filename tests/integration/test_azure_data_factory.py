"""Azure Data Factory end to end: the provider's own AzureDataFactoryRunPipelineOperator and
AzureDataFactoryHook under `airflow dags test`, against the management REST API served on 127.0.0.1
(through an HTTPS proxy, with a test CA and Entra ID token endpoints). Asserts what the service received
(the user's pipeline parameters unchanged) and the facet and ledger lines: the activity run count and
each meter billingReference reports, priced from the price book, or unpriced with the reason."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support.airflow_env import ledger_rows
from tests.support.fake_azure_data_factory import Activity, PipelinePlan, client_env, fake_azure
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
SOURCE = "azure_data_factory"
COPY_ORDERS = PipelinePlan(
    running_reads=2,
    activities=(
        Activity("lookup_watermark", "Lookup", 61_000, (("PipelineActivity", "AzureIR", 0.0166, "Hours"),)),
        Activity("copy_orders", "Copy", 480_000, (("DataMovement", "AzureIR", 0.2667, "DIUHours"),)),
        Activity("copy_refunds", "Copy", 125_000, (("DataMovement", "AzureIR", 0.1333, "DIUHours"),)),
        Activity("notify", "WebActivity", 2_000, (("ExternalActivity", "AzureIR", 0.0167, "Hours"),)),
        Activity("set_flag", "SetVariable", 10),
    ),
)
PLANS = {
    "copy_orders": COPY_ORDERS,
    "flaky_pipeline": PipelinePlan(
        running_reads=0, fail_activity_queries=True, activities=COPY_ORDERS.activities
    ),
    "slow_pipeline": PipelinePlan(running_reads=0, slow_activity_queries_seconds=8),
}


def shipped_price(metric: str) -> tuple[Decimal, str]:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [p for p in book["prices"] if p["source"] == SOURCE and p["metric"] == metric]
    return Decimal(entry["amount"]), entry["unit"]


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    with fake_azure(tmp_path_factory.mktemp("azure-tls")) as server:
        for pipeline, plan in PLANS.items():
            server.plan(pipeline, plan)
        yield server


@pytest.fixture(scope="module")
def adf_run(airflow_env, azure):
    connection = {
        "conn_type": "azure_data_factory",
        "login": "11111111-2222-3333-4444-555555555555",
        "password": "client-secret",
        "extra": {
            "tenantId": "shop-tenant",
            "subscriptionId": "sub-0001",
            "resource_group_name": "rg-data",
            "factory_name": "shop-factory",
        },
    }
    run = airflow_env.dags_test(
        "cost_azure_data_factory",
        env={"AIRFLOW_CONN_AZURE_DATA_FACTORY_DEFAULT": json.dumps(connection), **client_env(azure)},
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def events(adf_run) -> dict[str, dict]:
    events = adf_run.events()
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
        {line["metric"]: line for line in facet["lines"] if line["source"] == SOURCE},
        [item for item in facet["unpriced"] if item["source"] == SOURCE],
    )


def test_the_pipeline_run_is_started_as_the_user_asked(adf_run, azure):
    (create,) = [
        r for r in azure.on_host("management.azure.com") if r.path.endswith("/copy_orders/createRun")
    ]
    # no tags exist for a run, and parameters belong to the pipeline: the body is the user's own
    assert create.body == {"day": "2026-01-02"}
    assert "/resourceGroups/rg-data/" in create.path and "/factories/shop-factory/" in create.path
    assert azure.refused_hosts == []  # nothing tried to leave the machine


def test_a_pipeline_run_is_priced_per_activity_run_and_billed_meter(adf_run, azure, events):
    state = azure.run_of("copy_orders")
    lines, unpriced = facet_of(events, "run_pipeline")
    assert set(lines) == {"activity_runs", "diu_time", "pipeline_activity_time", "external_activity_time"}
    assert all(
        line["externalId"] == state.run_id and line["resource"] == "rg-data/shop-factory"
        for line in lines.values()
    )
    assert all(line["method"] == "list_price" and line["status"] == "estimated" for line in lines.values())

    price, unit = shipped_price("activity_runs")
    assert unit == "activity_run"
    runs = lines["activity_runs"]
    assert Decimal(str(runs["quantity"])) == len(COPY_ORDERS.activities)
    assert Decimal(str(runs["amount"])) == quantize_amount(len(COPY_ORDERS.activities) * price)

    price, unit = shipped_price("diu_time")
    diu_hours = Decimal("0.2667") + Decimal("0.1333")
    assert unit == "DIU-hour" and lines["diu_time"]["unit"] == "DIU-hour"
    assert Decimal(str(lines["diu_time"]["quantity"])) == diu_hours
    assert Decimal(str(lines["diu_time"]["amount"])) == quantize_amount(diu_hours * price)

    price, unit = shipped_price("pipeline_activity_time")
    assert unit == "hour"
    assert Decimal(str(lines["pipeline_activity_time"]["amount"])) == quantize_amount(
        Decimal("0.0166") * price
    )

    # external activities have their own rate
    price, unit = shipped_price("external_activity_time")
    external = lines["external_activity_time"]
    assert unit == "hour" and external["unit"] == "hour"
    assert Decimal(str(external["quantity"])) == Decimal("0.0167")
    assert Decimal(str(external["amount"])) == quantize_amount(Decimal("0.0167") * price)
    assert unpriced == []


def test_a_run_the_operator_waited_for_is_read_once_more_for_its_activities_only(adf_run, azure):
    state = azure.run_of("copy_orders")
    # the operator read the run until it was terminal; the capture reused that and made one query
    assert state.reads == COPY_ORDERS.running_reads + 1
    assert state.activity_queries == 1


def test_failing_and_slow_look_ups_leave_the_task_alone_and_the_run_unpriced(adf_run, azure, events):
    for task_id, pipeline, words in (
        ("lookup_fails", "flaky_pipeline", "500"),
        ("lookup_times_out", "slow_pipeline", "timed out"),
    ):
        assert events[task_id]["eventType"] == "COMPLETE"
        state = azure.run_of(pipeline)
        lines, (item,) = facet_of(events, task_id)
        assert lines == {}
        assert item["externalId"] == state.run_id and item["metric"] == "queries"
        assert "queryActivityruns failed" in item["reason"] and words in item["reason"].lower(), item[
            "reason"
        ]
        assert state.activity_queries == 1  # one try: no retries within the finalize budget


def test_ledger_holds_what_the_facet_shows(adf_run, events):
    rows = ledger_rows(
        adf_run.ledger_url,
        "SELECT r.task_id, r.ol_run_id, u.metric, u.external_id, u.attributes, l.amount_nanos, l.unpriced_reason "
        "FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id "
        f"WHERE u.source = '{SOURCE}'",
    )
    for task_id, event in events.items():
        lines, unpriced = facet_of(events, task_id)
        mine = [r for r in rows if r["task_id"] == task_id]
        assert len(mine) == len(lines) + len(unpriced), task_id
        assert all(r["ol_run_id"] == event["run"]["runId"] for r in mine)
    (count,) = [r for r in rows if r["task_id"] == "run_pipeline" and r["metric"] == "activity_runs"]
    attributes = (
        json.loads(count["attributes"]) if isinstance(count["attributes"], str) else count["attributes"]
    )
    assert attributes["activity_types"] == "Copy:2,Lookup:1,SetVariable:1,WebActivity:1"
    assert attributes["pipeline"] == "copy_orders" and attributes["run_status"] == "Succeeded"
