"""dbt Cloud end to end: the provider's own DbtCloudRunJobOperator (waiting, deferrable, not waiting with a
DbtCloudJobRunSensor after it) under `airflow dags test`, against dbt Cloud's API served over HTTPS on
127.0.0.1. Asserts the facet and ledger lines: one per node of every dbt step, with the BigQuery bytes
each billed priced as BigQuery jobs are, one `models_built` line per run priced per successful model
built, the run, job, project and account ids on them, and unpriced lines with the reason for a missing or
truncated artifact and a run still going when its task ended. A failed run fails its task as before and
is costed all the same."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_dbt_cloud import AD_HOC_JOB, BROKEN_JOB, FAILING_JOB, HOURLY_JOB, NIGHTLY_JOB
from tests.support.airflow_env import ledger_rows
from tests.support.fake_dbt_cloud import JobPlan, Node, Step, client_env, fake_dbt_cloud
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
TOKEN = "dbtc_test_token_0123456789"
ACCOUNT = 4242
GIB = 2**30
TIB = Decimal(2**40)

NIGHTLY = JobPlan(
    "nightly",
    (
        Step("dbt seed", (Node("seed.shop.raw_orders", seconds=1.5, bytes_billed=0, materialized="seed"),)),
        Step(
            "dbt build --exclude tag:hourly",
            (
                Node("model.shop.stg_orders", seconds=3.25, bytes_billed=40 * GIB, materialized="view"),
                Node("model.shop.daily_revenue", seconds=12.5, bytes_billed=600 * GIB),
                Node("test.shop.not_null_daily_revenue_day.5f1c", status="pass", bytes_billed=10 * 2**20),
            ),
        ),
    ),
    running_reads=2,
)
HOURLY = JobPlan(
    "hourly",
    (
        Step(
            "dbt run --select tag:hourly",
            (Node("model.shop.hourly_sessions", seconds=4.0, bytes_billed=3 * GIB),),
        ),
    ),
    running_reads=3,
)
AD_HOC = JobPlan(
    "ad hoc",
    (Step("dbt build", (Node("model.shop.customers", seconds=7.0, bytes_billed=25 * GIB),)),),
    running_reads=2,
)
BROKEN = JobPlan(
    "broken artifacts",
    (
        Step(
            "dbt seed",
            (Node("seed.shop.raw_orders", bytes_billed=0, materialized="seed"),),
            run_results="missing",
        ),
        Step(
            "dbt snapshot", (Node("snapshot.shop.orders_history", bytes_billed=GIB),), run_results="truncated"
        ),
        Step("dbt run", (Node("model.shop.orders", bytes_billed=2 * GIB),), manifest="missing"),
    ),
    running_reads=0,
)
FAILING = JobPlan(
    "failing",
    (
        Step(
            "dbt build",
            (
                Node("model.shop.stg_payments", seconds=2.0, bytes_billed=5 * GIB, materialized="view"),
                Node("model.shop.payments", status="error", seconds=1.0),
                Node("model.shop.finance_report", status="skipped", seconds=0.0),
            ),
            status=20,
        ),
    ),
    running_reads=0,
    status=20,
)
JOBS = {
    NIGHTLY_JOB: NIGHTLY,
    HOURLY_JOB: HOURLY,
    AD_HOC_JOB: AD_HOC,
    BROKEN_JOB: BROKEN,
    FAILING_JOB: FAILING,
}


def shipped_price(source: str, metric: str, match: dict | None = None) -> Decimal:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == source and p["metric"] == metric and p.get("match") == match
    ]
    return Decimal(entry["amount"])


@pytest.fixture(scope="module")
def cloud(tmp_path_factory):
    with fake_dbt_cloud(tmp_path_factory.mktemp("tls"), TOKEN, ACCOUNT, JOBS) as server:
        yield server


@pytest.fixture(scope="module")
def dbt_cloud_run(airflow_env, cloud):
    run = airflow_env.dags_test(
        "cost_dbt_cloud",
        env={"AIRFLOW_CONN_DBT_CLOUD_DEFAULT": json.dumps(cloud.connection()), **client_env(cloud)},
        timeout=600,
    )
    assert "Traceback" not in run.output or "DbtCloudJobRunException" in run.output, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def events(dbt_cloud_run) -> dict[str, dict]:
    events = dbt_cloud_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] in ("COMPLETE", "FAIL") and e["job"]["name"].startswith("cost_dbt_cloud.")
    }


def run_of(cloud, job_id: int):
    (run,) = cloud.triggered(job_id)
    return run


def facet(events, task_id: str) -> dict:
    return events[task_id]["run"]["facets"][FACET]


def lines_of(events, task_id: str, source: str) -> list[dict]:
    return [line for line in facet(events, task_id)["lines"] if line["source"] == source]


def expected_bigquery(bytes_billed: int) -> Decimal:
    return quantize_amount(
        Decimal(bytes_billed)
        / TIB
        * shipped_price("bigquery", "bytes_billed", {"pricing_model": "on_demand"})
    )


def assert_node_lines(lines: list[dict], nodes: list[Node], run_id: int) -> None:
    by_node = {line["resource"]: line for line in lines}
    assert sorted(by_node) == sorted(n.unique_id for n in nodes)
    for node in nodes:
        line = by_node[node.unique_id]
        assert line["metric"] == "bytes_billed" and line["unit"] == "byte"
        assert Decimal(str(line["quantity"])) == node.bytes_billed
        assert Decimal(str(line["amount"])) == expected_bigquery(node.bytes_billed)
        assert line["externalId"] == f"job_{run_id}_{node.unique_id.rsplit('.', 1)[-1]}"
        assert line["method"] == "list_price" and line["priceRef"].endswith(
            "bigquery/bytes_billed[pricing_model=on_demand]"
        )


def assert_models_built(events, task_id: str, run, built: int) -> dict:
    (line,) = lines_of(events, task_id, "dbt_cloud")
    assert line["metric"] == "models_built" and line["unit"] == "model"
    assert line["quantity"] == built
    assert Decimal(str(line["amount"])) == quantize_amount(built * shipped_price("dbt_cloud", "models_built"))
    assert line["externalId"] == str(run.id)
    assert line["resource"] == f"accounts/{ACCOUNT}/projects/{run.plan.project_id}/jobs/{run.job_id}"
    assert line["method"] == "list_price" and line["status"] == "estimated"
    return line


def test_the_tasks_behave_as_without_the_provider(dbt_cloud_run, events):
    for task_id in ("nightly_build", "hourly_deferrable", "start_ad_hoc", "wait_ad_hoc", "broken_artifacts"):
        assert events[task_id]["eventType"] == "COMPLETE", task_id
    # a failed dbt Cloud run fails its task, with the provider's own exception
    assert events["failing_job"]["eventType"] == "FAIL"
    error = events["failing_job"]["run"]["facets"]["errorMessage"]["message"]
    assert "reached terminal status ERROR" in error, error


def test_waiting_operator_costs_every_node_of_every_dbt_step(cloud, events):
    run = run_of(cloud, NIGHTLY_JOB)
    nodes = [n for step in NIGHTLY.steps for n in step.nodes]
    assert_node_lines(lines_of(events, "nightly_build", "bigquery"), nodes, run.id)
    # two models built: the seed and the test are not billed by dbt Cloud
    assert_models_built(events, "nightly_build", run, 2)
    # each dbt step's artifacts were read by their step index; the setup steps' were not
    steps = sorted({r.query["step"][0] for r in cloud.artifact_reads(run.id) if "step" in r.query})
    assert steps == ["4", "5"]
    assert facet(events, "nightly_build")["unpriced"] == []


def test_deferrable_operator_is_costed_when_it_resumes(cloud, events):
    run = run_of(cloud, HOURLY_JOB)
    assert_node_lines(lines_of(events, "hourly_deferrable", "bigquery"), list(HOURLY.steps[0].nodes), run.id)
    assert_models_built(events, "hourly_deferrable", run, 1)


def test_a_run_not_waited_for_is_costed_by_the_sensor_that_waits(cloud, events):
    run = run_of(cloud, AD_HOC_JOB)
    assert lines_of(events, "start_ad_hoc", "bigquery") == lines_of(events, "start_ad_hoc", "dbt_cloud") == []
    (still,) = [i for i in facet(events, "start_ad_hoc")["unpriced"] if i["source"] == "dbt_cloud"]
    assert still["externalId"] == str(run.id) and "DbtCloudJobRunSensor" in still["reason"]
    assert "still" in still["reason"]
    assert_node_lines(lines_of(events, "wait_ad_hoc", "bigquery"), list(AD_HOC.steps[0].nodes), run.id)
    assert_models_built(events, "wait_ad_hoc", run, 1)


def test_missing_and_truncated_artifacts_are_unpriced_with_the_reason(cloud, events):
    run = run_of(cloud, BROKEN_JOB)
    unpriced = {
        i["reason"]: i for i in facet(events, "broken_artifacts")["unpriced"] if i["source"] == "dbt_cloud"
    }
    missing = [i for r, i in unpriced.items() if "step 4 run_results.json" in r]
    truncated = [i for r, i in unpriced.items() if "step 5 run_results.json" in r]
    assert len(missing) == 1 and "404" in missing[0]["reason"]
    assert len(truncated) == 1 and "truncated" in truncated[0]["reason"]
    assert all(i["externalId"] == str(run.id) for i in missing + truncated)
    # the readable step still counts; without its manifest its line lacks relation, not its bytes
    assert_node_lines(lines_of(events, "broken_artifacts", "bigquery"), list(BROKEN.steps[2].nodes), run.id)
    assert_models_built(events, "broken_artifacts", run, 1)


def test_a_failed_run_keeps_the_models_it_built_and_its_failures(cloud, events, dbt_cloud_run):
    run = run_of(cloud, FAILING_JOB)
    (built,) = lines_of(events, "failing_job", "bigquery")
    assert built["resource"] == "model.shop.stg_payments"
    assert_models_built(events, "failing_job", run, 1)
    rows = ledger_rows(
        dbt_cloud_run.ledger_url,
        "SELECT u.resource, u.attributes FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "WHERE r.task_id = 'failing_job' AND u.resource LIKE 'model.%'",
    )
    statuses = {r["resource"]: _attributes(r)["status"] for r in rows}
    assert statuses == {
        "model.shop.stg_payments": "success",
        "model.shop.payments": "error",
        "model.shop.finance_report": "skipped",
    }


def _attributes(row: dict) -> dict:
    return json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]


def test_ledger_lines_carry_the_dbt_cloud_ids(cloud, events, dbt_cloud_run):
    rows = ledger_rows(
        dbt_cloud_run.ledger_url,
        "SELECT r.task_id, r.ol_run_id, u.source, u.metric, u.resource, u.attributes, l.amount_nanos "
        "FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id JOIN cost_lines l ON l.usage_id = u.id "
        "WHERE u.source IN ('bigquery', 'dbt_cloud')",
    )
    tasks = {
        "nightly_build": NIGHTLY_JOB,
        "hourly_deferrable": HOURLY_JOB,
        "wait_ad_hoc": AD_HOC_JOB,
        "broken_artifacts": BROKEN_JOB,
        "failing_job": FAILING_JOB,
    }
    for task_id, job_id in tasks.items():
        run = run_of(cloud, job_id)
        mine = [r for r in rows if r["task_id"] == task_id]
        assert mine and all(r["ol_run_id"] == events[task_id]["run"]["runId"] for r in mine)
        for row in mine:
            attributes = _attributes(row)
            assert attributes["dbt_cloud_run_id"] == str(run.id)
            assert attributes["dbt_cloud_job_id"] == str(job_id)
            assert attributes["dbt_cloud_project_id"] == str(run.plan.project_id)
            assert attributes["dbt_cloud_account_id"] == str(ACCOUNT)
            assert attributes["dbt_cloud_environment_id"] == str(run.plan.environment_id)
        # the ledger's total is the facet's
        total = sum(
            Decimal(str(line["amount"]))
            for line in facet(events, task_id)["lines"]
            if line["source"] in ("bigquery", "dbt_cloud")
        )
        assert sum(r["amount_nanos"] or 0 for r in mine) == int(total * 10**9)
    (sensed,) = [r for r in rows if r["task_id"] == "wait_ad_hoc" and r["source"] == "dbt_cloud"]
    assert _attributes(sensed)["started_by"] == "sensor"
    assert _attributes(sensed)["dbt_cloud_run_seconds"] == "17.0"
    # the token never reaches the ledger or the events
    assert TOKEN not in json.dumps(rows, default=str) and TOKEN not in json.dumps(events)
