"""Dremio end to end: the HTTP provider's hook and operator under `airflow dags test` against a fake
Dremio on 127.0.0.1 speaking the REST SQL and Job APIs (Dremio Cloud's project paths and Dremio
Software's api/v3). Asserts on what Dremio saw (the SQL comment on every query, the look-ups made and
their credentials) and on the facet and ledger (engine time in DCUs at the engine size's rate, priced
per DCU, or unpriced with the reason)."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from urllib.parse import unquote

import pytest

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_dremio import PROJECT, TOKEN
from tests.support.airflow_env import ledger_rows
from tests.support.fake_dremio import fake_dremio
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")
CLOUD_PER_DCU = Decimal("0.55")  # the test's own Dremio Cloud contract rate
SOFTWARE_PER_DCU = Decimal("0.04048")  # the shipped stand-in (1 DCU = 1 vCPU-hour)
MEDIUM_DCU_PER_HOUR = Decimal(128)  # docs.dremio.com/dremio-cloud/admin/engines


def comment_tags(statement: str) -> dict[str, str] | None:
    match = _COMMENT.search(statement)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


@pytest.fixture(scope="module")
def dremio():
    with fake_dremio(TOKEN, queue="etl-engine") as server:
        yield server


@pytest.fixture(scope="module")
def dremio_run(airflow_env, dremio, tmp_path_factory):
    book = tmp_path_factory.mktemp("dremio-prices") / "prices.yaml"
    book.write_text(
        'version: "test-1"\n'
        "prices:\n"
        "  - source: dremio\n"
        "    metric: dcu\n"
        "    unit: DCU\n"
        f'    amount: "{CLOUD_PER_DCU}"\n'
        "    currency: USD\n"
        "    match: {deployment: cloud}\n"
    )

    def connection(**extra):
        return json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": dremio.port, "schema": "http", "extra": extra}
        )

    run = airflow_env.dags_test(
        "cost_dremio",
        env={
            "AIRFLOW_CONN_DREMIO_CLOUD": connection(Authorization=f"Bearer {TOKEN}"),
            "AIRFLOW_CONN_DREMIO_SOFTWARE": connection(),
            "AIRFLOW_CONN_DREMIO_UNSIZED": connection(Authorization=f"Bearer {TOKEN}"),
            "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {"dremio_cloud": {"engine_size": "Medium"}, "dremio_software": {"dcu_per_hour": 16}}
            ),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "(no impact on the task)" not in run.output  # none of the provider's own steps failed
    return run


def task_jobs(dremio, task_id: str):
    return [
        j
        for j in dremio.jobs.values()
        if (tags := comment_tags(j.sql)) and tags["airflow_task_id"] == task_id
    ]


def dcus(rate: Decimal, ms: int) -> Decimal:
    return (rate * ms / Decimal(3_600_000)).quantize(Decimal("1e-12"))


def test_every_query_carries_the_task_identity(dremio_run, dremio):
    events = complete_events(dremio_run)
    assert len(dremio.jobs) == 7
    for task_id, count in (
        ("cloud_queries_waited", 2),
        ("software_operator", 1),
        ("unsized_queries", 2),
        ("faulty_lookups", 2),
    ):
        jobs = task_jobs(dremio, task_id)
        assert len(jobs) == count, task_id
        for job in jobs:
            tags = comment_tags(job.sql)
            assert tags["openlineage_run_id"] == events[task_id]["run"]["runId"]
            assert tags["airflow_dag_id"] == "cost_dremio" and tags["airflow_try_number"] == "1"
    (cloud_first, _second) = sorted(task_jobs(dremio, "cloud_queries_waited"), key=lambda j: j.submitted)
    # the comment goes before the statement's `;`, the rest of the body is kept
    assert cloud_first.sql.startswith("SELECT 1500, 'slow' AS pace FROM sales.orders /*airflow_dag_id=")
    assert cloud_first.sql.endswith("*/;")
    (software,) = task_jobs(dremio, "software_operator")
    body = next(
        r.body
        for r in dremio.requests
        if r.method == "POST" and isinstance(r.body, dict) and r.body["sql"] == software.sql
    )
    assert body["context"] == ["lake"]


def test_cloud_jobs_the_task_waited_for_are_priced_without_a_look_up(dremio_run, dremio):
    facet = complete_events(dremio_run)["cloud_queries_waited"]["run"]["facets"][FACET]
    lines = {line["externalId"]: line for line in facet["lines"] if line["source"] == "dremio"}
    jobs = task_jobs(dremio, "cloud_queries_waited")
    assert set(lines) == {j.job_id for j in jobs}
    for job in jobs:
        # the task's own polls only: the slow one read RUNNING then COMPLETED, the other FAILED at once
        expected_reads = 2 if "'slow'" in job.sql else 1
        assert [m for m, _ in job.requests].count("GET") == expected_reads
        assert all(path.startswith(f"/v0/projects/{PROJECT}/") for _, path in job.requests)
        line = lines[job.job_id]
        quantity = dcus(MEDIUM_DCU_PER_HOUR, job.engine_ms)
        assert line["metric"] == "dcu" and line["unit"] == "DCU"
        assert Decimal(str(line["quantity"])) == quantity
        assert Decimal(str(line["amount"])) == quantize_amount(quantity * CLOUD_PER_DCU)
        assert line["method"] == "runtime_rate" and line["resource"] == "etl-engine"
        assert line["priceRef"] == "test-1:dremio/dcu[deployment=cloud]"
    # 1500 ms on a Medium engine: 128 DCU/h x 1.5 s = 0.053333333333 DCU
    assert dcus(MEDIUM_DCU_PER_HOUR, 1500) == Decimal("0.053333333333")


def test_a_job_the_task_did_not_wait_for_is_looked_up_with_its_credentials(dremio_run, dremio):
    (job,) = task_jobs(dremio, "software_operator")
    assert job.requests == [("POST", "/api/v3/sql"), ("GET", f"/api/v3/job/{job.job_id}")]
    lookup = next(r for r in dremio.requests if r.method == "GET" and r.path == f"/api/v3/job/{job.job_id}")
    assert lookup.authorization == f"_dremio{TOKEN}"  # the operator's own header, the connection has none
    facet = complete_events(dremio_run)["software_operator"]["run"]["facets"][FACET]
    (line,) = [line for line in facet["lines"] if line["source"] == "dremio"]
    quantity = dcus(Decimal(16), 2400)  # 16 executor cores x 2.4 s
    assert Decimal(str(line["quantity"])) == quantity == Decimal("0.010666666667")
    assert Decimal(str(line["amount"])) == quantize_amount(quantity * SOFTWARE_PER_DCU)
    assert line["priceRef"].endswith(":dremio/dcu[deployment=software]")


def test_unsized_and_unfinished_jobs_are_kept_unpriced_with_the_reason(dremio_run, dremio):
    facet = complete_events(dremio_run)["unsized_queries"]["run"]["facets"][FACET]
    assert not [line for line in facet["lines"] if line["source"] == "dremio"]
    unpriced = {u["externalId"]: u for u in facet["unpriced"] if u["source"] == "dremio"}
    jobs = {("NEVER_ENDS" in j.sql): j for j in task_jobs(dremio, "unsized_queries")}
    assert set(unpriced) == {j.job_id for j in jobs.values()}
    sized = unpriced[jobs[False].job_id]
    assert sized["metric"] == "engine_time" and Decimal(str(sized["quantity"])) == 300
    assert "engine_size" in sized["reason"] and "dremio_unsized" in sized["reason"]
    running = unpriced[jobs[True].job_id]
    assert running["metric"] == "queries" and "still RUNNING" in running["reason"]
    # the catalog call was not taken for a query
    assert any(r.path == "/api/v3/catalog" for r in dremio.requests)


def test_ledger_rows_match_dremio_and_hold_no_credentials(dremio_run, dremio):
    rows = ledger_rows(
        dremio_run.ledger_url,
        "SELECT r.task_id, u.metric, u.quantity, u.unit, u.external_id, u.attributes, l.amount_nanos, "
        "l.method, l.unpriced_reason FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id "
        "JOIN cost_usage u ON l.usage_id = u.id WHERE l.source = 'dremio'",
    )
    assert {row["external_id"] for row in rows} == set(dremio.jobs)
    for row in rows:
        assert TOKEN not in json.dumps(row, default=str)
        job = dremio.jobs[row["external_id"]]
        attributes = (
            row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
        )
        if row["metric"] == "dcu":
            assert attributes["duration_ms"] == str(job.engine_ms)
            assert attributes["queue_name"] == "etl-engine" and attributes["query_type"] == "REST"
            rate = CLOUD_PER_DCU if job.project_id else SOFTWARE_PER_DCU
            per_hour = MEDIUM_DCU_PER_HOUR if job.project_id else Decimal(16)
            expected = quantize_amount(dcus(per_hour, job.engine_ms) * rate)
            assert row["amount_nanos"] == int(expected * 10**9)
            assert attributes["job_state"] == ("FAILED" if "FAIL_ME" in job.sql else "COMPLETED")
            assert attributes.get("failed", False) == ("FAIL_ME" in job.sql)
        else:
            assert row["amount_nanos"] is None and row["unpriced_reason"]


def test_a_failing_or_slow_job_api_leaves_the_task_alone_and_keeps_the_jobs(dremio_run, dremio):
    event = complete_events(dremio_run)["faulty_lookups"]
    facet = event["run"]["facets"][FACET]
    assert not [line for line in facet["lines"] if line["source"] == "dremio"]
    unpriced = {u["externalId"]: u for u in facet["unpriced"] if u["source"] == "dremio"}
    jobs = {("LOOKUP_SLOW" in j.sql): j for j in task_jobs(dremio, "faulty_lookups")}
    assert set(unpriced) == {j.job_id for j in jobs.values()}
    for job in jobs.values():
        assert [m for m, _ in job.requests] == ["POST", "GET"]  # one look-up each, no retry
    failed = unpriced[jobs[False].job_id]["reason"]
    assert f"GET v0/projects/{PROJECT}/job/{jobs[False].job_id} failed: AirflowException: 500" in failed
    slow = unpriced[jobs[True].job_id]["reason"]
    assert "failed" in slow and "timed out" in slow.lower(), slow
    # the look-ups stayed within the finalize budget (5 s by default, 70 % of it for look-ups): the
    # task's COMPLETE event, sent after them, came well before the slow answer's 8 seconds
    times = {
        e["eventType"]: dt.datetime.fromisoformat(e["eventTime"].replace("Z", "+00:00"))
        for e in dremio_run.events()
        if e["job"]["name"].endswith(".faulty_lookups")
    }
    assert times["COMPLETE"] - times["START"] < dt.timedelta(seconds=8)
