"""Databricks pipeline updates (Lakeflow Declarative Pipelines, formerly Delta Live Tables) end to end:
the provider's own DatabricksSubmitRunOperator with a `pipeline_task`, DatabricksRunNowOperator on a job
holding a pipeline task, and DatabricksHook.submit_run, under `airflow dags test` against the fake
workspace (Jobs API and GET api/2.0/pipelines/{id}). Asserts the lines: the update cluster's DBUs at the
pipeline edition's DBU price and its VMs, the update id that joins system.billing.usage, a serverless
pipeline kept unpriced with those ids, and a pipeline that cannot be read kept with the reason."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_databricks_pipelines import (
    CLASSIC_PIPELINE,
    JOBS,
    MISSING_PIPELINE,
    PIPELINE_JOB_ID,
    PIPELINES,
    SERVERLESS_PIPELINE,
)
from tests.support.airflow_env import ledger_rows
from tests.support.fake_databricks_jobs import EPOCH_MS, RunPlan, fake_databricks_jobs
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
TOKEN = "dapi-test-token"
VM_PER_HOUR = Decimal("0.312")  # i3.xlarge, the test's own instance price
PLANS = {
    "refresh_orders": RunPlan(running_reads=2, task_ms={"refresh_orders": (0, 1_800_000, 0)}),
    "events_refresh": RunPlan(
        running_reads=1, task_ms={"refresh_events": (0, 600_000, 0), "publish": (30_000, 90_000, 0)}
    ),
    "missing_pipeline": RunPlan(running_reads=0),
}


def dbu_price(compute_type: str) -> Decimal:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == "databricks"
        and p["metric"] == "dbu"
        and p.get("match") == {"compute_type": compute_type}
    ]
    return Decimal(entry["amount"])


@pytest.fixture(scope="module")
def workspace():
    with fake_databricks_jobs(TOKEN, jobs=JOBS, pipelines=PIPELINES) as server:
        for name, plan in PLANS.items():
            server.plan(name, plan)
        # a scheduled update an hour before: not the task's
        server.start_update(CLASSIC_PIPELINE, EPOCH_MS - 3_600_000, "SCHEDULER")
        yield server


@pytest.fixture(scope="module")
def pipelines_run(airflow_env, workspace, tmp_path_factory):
    book = tmp_path_factory.mktemp("book") / "prices.yaml"
    book.write_text(
        yaml.safe_dump(
            {
                "version": "test-vm",
                "prices": [
                    {
                        "source": "databricks",
                        "metric": "instance_time",
                        "unit": "instance-hour",
                        "amount": str(VM_PER_HOUR),
                        "currency": "USD",
                        "effective_date": "2026-01-01",
                        "match": {"node_type": "i3.xlarge"},
                    }
                ],
            }
        )
    )
    run = airflow_env.dags_test(
        "cost_databricks_pipelines",
        env={
            "AIRFLOW_CONN_DATABRICKS_DEFAULT": json.dumps(workspace.connection()),
            "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "(no impact on the task)" not in run.output
    return run


@pytest.fixture(scope="module")
def facets(pipelines_run) -> dict[str, dict]:
    events = pipelines_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e["run"]["facets"][FACET]
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def databricks(facet: dict) -> tuple[list[dict], list[dict]]:
    return (
        [line for line in facet["lines"] if line["source"] == "databricks"],
        [item for item in facet["unpriced"] if item["source"] == "databricks"],
    )


def test_a_classic_pipeline_update_is_priced_at_its_editions_dbu_price(pipelines_run, workspace, facets):
    lines, unpriced = databricks(facets["submit_pipeline_task"])
    assert not unpriced
    (submitted,) = [body for body in workspace.submitted() if body.get("run_name") == "refresh_orders"]
    assert submitted["pipeline_task"] == {"pipeline_id": CLASSIC_PIPELINE, "full_refresh": True}
    run = workspace.run_named("refresh_orders")
    by_metric = {line["metric"]: line for line in lines}
    assert set(by_metric) == {"dbu", "instance_time"}
    dbu = by_metric["dbu"]
    # the default (update) cluster, not the maintenance one: i3.xlarge driver + 2 workers = 3 DBU/h,
    # for the task's 30 minutes = 1.5 DBU, at the Pro edition's price
    assert Decimal(str(dbu["quantity"])) == Decimal("1.5")
    assert Decimal(str(dbu["amount"])) == quantize_amount(Decimal("1.5") * dbu_price("dlt_pro"))
    assert dbu["priceRef"].endswith(":databricks/dbu[compute_type=dlt_pro]")
    assert dbu["resource"] == CLASSIC_PIPELINE and dbu["externalId"] == str(run["run_id"])
    vms = by_metric["instance_time"]
    assert Decimal(str(vms["quantity"])) == 3 * 1800  # instance-seconds
    assert Decimal(str(vms["amount"])) == quantize_amount(3 * VM_PER_HOUR / 2)
    # one pipeline read, after the run ended
    assert len([r for r in workspace.requests if r.path == f"/api/2.0/pipelines/{CLASSIC_PIPELINE}"]) == 1


def test_the_update_the_task_started_is_named(pipelines_run, workspace):
    rows = ledger_rows(
        pipelines_run.ledger_url,
        "SELECT r.task_id, u.metric, u.attributes FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "WHERE u.source = 'databricks' AND r.task_id = 'submit_pipeline_task'",
    )
    ours, scheduled = workspace.updates[CLASSIC_PIPELINE][0], workspace.updates[CLASSIC_PIPELINE][1]
    assert ours["cause"] == "JOB_TASK" and scheduled["cause"] == "SCHEDULER"
    assert len(rows) == 2
    for row in rows:
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        assert attributes["pipeline_id"] == CLASSIC_PIPELINE and attributes["update_id"] == ours["update_id"]
        assert attributes["edition"] == "pro" and attributes["compute_type"] == "dlt_pro"
        assert attributes["pipeline_name"] == "orders_pipeline" and attributes["full_refresh"] is True
        assert attributes["billing_lookup"] == (
            f"usage_metadata.dlt_pipeline_id = {CLASSIC_PIPELINE} AND usage_metadata.dlt_update_id = {ours['update_id']}"
        )


def test_a_serverless_pipeline_is_kept_with_the_ids_of_its_billed_dbus(pipelines_run, workspace, facets):
    lines, unpriced = databricks(facets["run_now_pipeline_job"])
    (update,) = workspace.updates[SERVERLESS_PIPELINE]
    (pipeline,) = [u for u in unpriced if u["resource"] == SERVERLESS_PIPELINE]
    assert pipeline["metric"] == "run_time" and Decimal(str(pipeline["quantity"])) == 600_000
    assert f"usage_metadata.dlt_pipeline_id = {SERVERLESS_PIPELINE}" in pipeline["reason"]
    assert f"usage_metadata.dlt_update_id = {update['update_id']}" in pipeline["reason"]
    # the job's other task, on its own new cluster, is priced as jobs compute
    (dbu,) = [line for line in lines if line["metric"] == "dbu"]
    assert dbu["priceRef"].endswith(":databricks/dbu[compute_type=jobs_compute]")


def test_a_pipeline_that_cannot_be_read_is_kept_with_the_reason(pipelines_run, workspace, facets):
    lines, unpriced = databricks(facets["missing_pipeline"])
    assert not lines
    (item,) = unpriced
    assert item["resource"] == MISSING_PIPELINE
    assert f"pipelines/get {MISSING_PIPELINE} failed: DatabricksApiError" in item["reason"]
    assert "RESOURCE_DOES_NOT_EXIST" in item["reason"]
    assert item["externalId"] == str(workspace.run_named("missing_pipeline")["run_id"])


def test_the_bill_reconciles_each_pipeline_update_and_job_run_by_its_id(
    pipelines_run, workspace, monkeypatch
):
    """system.billing.usage of the runs' day, read through the SQL Statement Execution API fake and
    reconciled against the lines the DAG wrote (run last: it reconciles the module's ledger). Our
    update of the classic pipeline goes to its DBU line, the scheduled update of that pipeline stays
    the pipeline's idle bill, the serverless update to its unpriced line, the run-now job run's
    cluster DBUs to its `publish` DBU line; the VM lines are the cloud's bill and stay estimated."""
    import datetime as dt

    import sqlalchemy as sa

    from airflow_cost_provider.billing import databricks_usage, importer
    from airflow_cost_provider.billing.scan import DateWindow
    from airflow_cost_provider.ledger import store
    from airflow_cost_provider.ledger.schema import lines, reconciliations, task_runs, usage
    from tests.support.billing_rows import nanos, reconcile_window
    from tests.support.fake_databricks_statements import fake_statement_api

    day = dt.datetime.fromtimestamp(EPOCH_MS / 1000, dt.timezone.utc).date()
    ours, scheduled = (update["update_id"] for update in workspace.updates[CLASSIC_PIPELINE])
    (serverless,) = workspace.updates[SERVERLESS_PIPELINE]
    job_run = str(workspace.run_named("events_refresh")["run_id"])
    d = day.isoformat()
    bill = [
        (
            d,
            0,
            "PREMIUM_DLT_PRO_COMPUTE",
            "1.25",
            "u-cl",
            None,
            None,
            None,
            {},
            "ORIGINAL",
            CLASSIC_PIPELINE,
            ours,
        ),
        (
            d,
            1,
            "PREMIUM_DLT_PRO_COMPUTE",
            "2",
            "s-cl",
            None,
            None,
            None,
            {},
            "ORIGINAL",
            CLASSIC_PIPELINE,
            scheduled,
        ),
        (d, 0, "PREMIUM_JOBS_SERVERLESS_COMPUTE", "0.8", None, None, None, None, {}, "ORIGINAL")
        + (SERVERLESS_PIPELINE, serverless["update_id"]),
        (d, 0, "PREMIUM_JOBS_COMPUTE", "0.5", "p-cl", str(PIPELINE_JOB_ID), None, job_run, {}, "ORIGINAL"),
    ]
    prices = [
        ("PREMIUM_DLT_PRO_COMPUTE", "AWS", "DBU", "0.36", "2020-01-01", None),
        ("PREMIUM_JOBS_SERVERLESS_COMPUTE", "AWS", "DBU", "0.35", "2020-01-01", None),
        ("PREMIUM_JOBS_COMPUTE", "AWS", "DBU", "0.15", "2020-01-01", None),
    ]
    engine = store.get_engine(pipelines_run.ledger_url)
    with fake_statement_api(TOKEN, {"wh-billing"}) as api:
        api.insert("acct-1", "6051921418418893", bill, prices)
        monkeypatch.setenv("AIRFLOW_CONN_DATABRICKS_BILLING", json.dumps(api.connection("wh-billing")))
        collected = databricks_usage.fetch(
            DateWindow(day, day + dt.timedelta(days=1)), databricks_conn_id="databricks_billing", timeout=30
        )
    importer.save(engine, collected, replace_days=True)
    # the tries ended today; their usage began on the runs' day
    reconcile_window(engine, day, dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=1))
    with engine.connect() as conn:
        found = {
            (row.task_id, row.metric): row.reconciled_nanos
            for row in conn.execute(
                sa.select(task_runs.c.task_id, usage.c.metric, lines.c.reconciled_nanos)
                .join(task_runs, task_runs.c.id == lines.c.task_run_id)
                .join(usage, usage.c.id == lines.c.usage_id)
                .where(lines.c.source == "databricks")
            )
        }
        pools = {row.pool: row for row in conn.execute(sa.select(reconciliations))}
    assert found == {
        ("submit_pipeline_task", "dbu"): nanos("0.45"),  # 1.25 DBU of our update at 0.36
        ("submit_pipeline_task", "instance_time"): None,
        ("run_now_pipeline_job", "run_time"): nanos("0.28"),  # the serverless update: 0.8 DBU at 0.35
        ("run_now_pipeline_job", "dbu"): nanos("0.075"),  # the job run's cluster: 0.5 DBU at 0.15
        ("run_now_pipeline_job", "instance_time"): None,
        ("missing_pipeline", "queries"): None,
    }
    assert pools[f"dlt_update:{ours}"].pool_kind == "run" and pools[f"job_run:{job_run}"].basis == "run"
    idle = pools[CLASSIC_PIPELINE]
    assert (idle.pool_kind, idle.lines, idle.unattributed_nanos) == ("resource", 0, nanos("0.72"))
    assert all(p.attributed_nanos + p.unattributed_nanos == p.billed_nanos for p in pools.values())
