"""BigQuery end to end: the Google provider's own operator and hook under `airflow dags test`, against a
BigQuery REST server on 127.0.0.1. Asserts on what the server received (job labels and the query
comment carrying the task's identity) and on the facet and ledger (one line per job from its own
statistics, priced from the price book, or unpriced with the reason)."""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal
from importlib import resources
from urllib.parse import unquote

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.integration.dags.cost_bigquery import EDITION_PROJECT, ON_DEMAND_PROJECT, SUMMARY_SQL
from tests.support.airflow_env import ledger_rows
from tests.support.fake_bigquery import JobPlan, fake_bigquery
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
TIB = Decimal(2**40)
SLOT_MS_PER_HOUR = Decimal(3_600_000)
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_COMMENT = re.compile(r"/\*(airflow_dag_id=.*?)\*/")

# task id -> (the text its query contains, how the fake runs it)
PLANS = {
    "insert_job_operator": (
        "shop.orders GROUP BY",
        JobPlan(bytes_billed=123_456_789_012, slot_ms=98_765, running_reads=2),
    ),
    "cached_query": ("orders_cached", JobPlan(bytes_billed=5_000_000, cache_hit=True, running_reads=0)),
    "edition_query": ("clickstream", JobPlan(bytes_billed=777_000_000, slot_ms=5_432_100)),
    "hook_nowait": ("shop.events", JobPlan(bytes_billed=987_654_321, slot_ms=1_000, running_reads=3)),
    "failing_job": ("shop.payments", JobPlan(bytes_billed=10_485_760, error_reason="invalidQuery")),
    "left_running": ("rebuild_all", JobPlan(never_finishes=True, statement_type="SCRIPT")),
}


def shipped_price(metric: str, match: dict) -> tuple[Decimal, str]:
    book = yaml.safe_load(
        resources.files("airflow_cost_provider.pricing").joinpath("price_book.yaml").read_text()
    )
    (entry,) = [
        p
        for p in book["prices"]
        if p["source"] == "bigquery" and p["metric"] == metric and p["match"] == match
    ]
    return Decimal(entry["amount"]), entry["unit"]


def comment_tags(statement: str) -> dict[str, str] | None:
    match = _COMMENT.search(statement)
    if match is None:
        return None
    pairs = re.findall(r"([\w%]+)='((?:[^'\\]|\\.)*)'", match.group(1))
    return {unquote(key): unquote(value.replace("\\'", "'")) for key, value in pairs}


@pytest.fixture(scope="module")
def bigquery():
    with fake_bigquery() as server:
        for text, plan in PLANS.values():
            server.plan(text, plan)
        yield server


@pytest.fixture(scope="module")
def bq_run(airflow_env, bigquery):
    run = airflow_env.dags_test(
        "cost_bigquery",
        env={
            "BIGQUERY_EMULATOR_HOST": bigquery.url,
            "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                {
                    "conn_type": "google_cloud_platform",
                    "extra": {"is_anonymous": True, "project": ON_DEMAND_PROJECT, "use_legacy_sql": False},
                }
            ),
            "AIRFLOW__COST_PROVIDER__BIGQUERY_PRICING": json.dumps({EDITION_PROJECT: "enterprise"}),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run


@pytest.fixture(scope="module")
def events(bq_run) -> dict[str, dict]:
    events = bq_run.events()
    for event in events:
        validate_event(event)
    return {
        e["job"]["name"].split(".", 1)[1]: e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"].count(".") == 1
    }


def inserted(server, task_id: str) -> dict:
    (body,) = server.inserted_where(PLANS[task_id][0])
    return body


def bigquery_facet(events, task_id: str) -> tuple[list[dict], list[dict]]:
    facet = events[task_id]["run"]["facets"][FACET]
    return (
        [line for line in facet["lines"] if line["source"] == "bigquery"],
        [item for item in facet["unpriced"] if item["source"] == "bigquery"],
    )


def usage_rows(url: str) -> dict[str, dict]:
    rows = ledger_rows(
        url,
        "SELECT r.task_id, r.ol_run_id, u.metric, u.quantity, u.unit, u.resource, u.external_id, u.attributes, "
        "l.amount_nanos, l.currency, l.method, l.status, l.price_ref, l.unpriced_reason "
        "FROM cost_usage u JOIN cost_task_runs r ON u.task_run_id = r.id "
        "JOIN cost_lines l ON l.usage_id = u.id WHERE u.source = 'bigquery'",
    )
    by_task: dict[str, dict] = {}
    for row in rows:
        assert row["task_id"] not in by_task, f"one BigQuery job per task, got more for {row['task_id']}"
        if isinstance(row["attributes"], str):
            row["attributes"] = json.loads(row["attributes"])
        by_task[row["task_id"]] = row
    return by_task


def test_every_job_carries_the_task_identity_as_labels(bq_run, bigquery, events):
    for task_id in PLANS:
        labels = inserted(bigquery, task_id)["configuration"]["labels"]
        assert all(LABEL_KEY.match(k) and LABEL_VALUE.match(v) for k, v in labels.items()), labels
        assert len(labels) <= 64
        assert labels["openlineage_run_id"] == events[task_id]["run"]["runId"]
        assert labels["airflow_dag_id"] == "cost_bigquery"
        assert labels["airflow_try_number"] == "1" and labels["airflow_map_index"] == "-1"
        # the run id `manual__<timestamp with : + .>` becomes a valid label value
        assert labels["airflow_run_id"].startswith("manual__") and ":" not in labels["airflow_run_id"]
        if task_id != "insert_job_operator":
            assert labels["airflow_task_id"] == task_id
    # the user's own labels are kept and win on a clash; the operator's labels are kept too
    labels = inserted(bigquery, "insert_job_operator")["configuration"]["labels"]
    assert labels["team"] == "finance" and labels["airflow_task_id"] == "mine"
    assert labels["airflow-dag"] == "cost_bigquery" and labels["airflow-task"] == "insert_job_operator"


def test_every_query_carries_the_sqlcommenter_comment(bq_run, bigquery, events):
    for task_id in PLANS:
        text = inserted(bigquery, task_id)["configuration"]["query"]["query"]
        assert text.count("/*airflow_dag_id=") == 1
        tags = comment_tags(text)
        assert tags["airflow_task_id"] == task_id
        assert tags["openlineage_run_id"] == events[task_id]["run"]["runId"]
    summary = inserted(bigquery, "insert_job_operator")["configuration"]["query"]["query"]
    assert summary.startswith(SUMMARY_SQL.rstrip(";") + " /*airflow_dag_id=") and summary.endswith("*/;")
    events_text = inserted(bigquery, "hook_nowait")["configuration"]["query"]["query"]
    assert "-- per customer\n/*airflow_dag_id=" in events_text


def test_on_demand_jobs_are_priced_per_tib_billed(bq_run, bigquery, events):
    price, unit = shipped_price("bytes_billed", {"pricing_model": "on_demand"})
    assert unit == "TiB"
    for task_id in ("insert_job_operator", "hook_nowait", "failing_job"):
        job_id = inserted(bigquery, task_id)["jobReference"]["jobId"]
        billed = int(bigquery.resource(ON_DEMAND_PROJECT, job_id)["statistics"]["query"]["totalBytesBilled"])
        assert billed == PLANS[task_id][1].bytes_billed
        (line,), unpriced = bigquery_facet(events, task_id)
        assert unpriced == []  # hook lineage reported the same job: not counted twice
        assert line["externalId"] == job_id and line["resource"] == f"{ON_DEMAND_PROJECT}:US"
        assert (line["metric"], line["unit"], line["method"]) == ("bytes_billed", "byte", "list_price")
        assert Decimal(str(line["quantity"])) == billed
        assert Decimal(str(line["amount"])) == quantize_amount(Decimal(billed) * price / TIB)
        assert line["priceRef"].endswith("bigquery/bytes_billed[pricing_model=on_demand]")


def test_edition_project_is_priced_per_slot_hour(bq_run, bigquery, events):
    price, unit = shipped_price("slot_time", {"edition": "enterprise"})
    assert unit == "slot-hour"
    job_id = inserted(bigquery, "edition_query")["jobReference"]["jobId"]
    slot_ms = int(bigquery.resource(EDITION_PROJECT, job_id)["statistics"]["totalSlotMs"])
    (line,), _ = bigquery_facet(events, "edition_query")
    assert (line["metric"], line["unit"], line["externalId"]) == ("slot_time", "slot-ms", job_id)
    assert line["resource"] == f"{EDITION_PROJECT}:EU"
    assert Decimal(str(line["quantity"])) == slot_ms
    assert Decimal(str(line["amount"])) == quantize_amount(Decimal(slot_ms) * price / SLOT_MS_PER_HOUR)
    assert line["priceRef"].endswith("bigquery/slot_time[edition=enterprise]")


def test_cache_hit_is_a_line_of_zero(bq_run, events):
    (line,), unpriced = bigquery_facet(events, "cached_query")
    assert unpriced == []
    assert line["metric"] == "bytes_billed" and line["quantity"] == 0 and line["amount"] == 0


def test_job_still_running_at_task_end_is_unpriced_with_the_reason(bq_run, bigquery, events):
    lines, (item,) = bigquery_facet(events, "left_running")
    assert lines == []
    assert item["externalId"] == inserted(bigquery, "left_running")["jobReference"]["jobId"]
    assert "still RUNNING when the task ended" in item["reason"]


def test_a_job_left_running_is_looked_up_once_at_task_end(bq_run, bigquery):
    # the task never polled it: the one jobs.get is the provider's, and it started no job of its own
    assert len(bigquery.inserted()) == len(PLANS)
    running = inserted(bigquery, "left_running")["jobReference"]["jobId"]
    assert len(bigquery.job_reads(running)) == 1


def test_ledger_holds_what_the_facet_shows(bq_run, bigquery, events):
    rows = usage_rows(bq_run.ledger_url)
    assert set(rows) == set(PLANS)
    for task_id, row in rows.items():
        assert row["ol_run_id"] == events[task_id]["run"]["runId"]
        assert row["external_id"] == inserted(bigquery, task_id)["jobReference"]["jobId"]
        lines, unpriced = bigquery_facet(events, task_id)
        if lines:
            assert row["amount_nanos"] == int(Decimal(str(lines[0]["amount"])) * 10**9)
            assert row["method"] == "list_price" and row["status"] == "estimated"
            assert Decimal(row["quantity"]) == Decimal(str(lines[0]["quantity"]))
        else:
            assert row["amount_nanos"] is None and "still RUNNING" in row["unpriced_reason"]
    summary = rows["insert_job_operator"]["attributes"]
    assert summary["statement_type"] == "SELECT" and summary["cache_hit"] is False
    assert summary["total_bytes_processed"] == PLANS["insert_job_operator"][1].bytes_billed
    assert rows["cached_query"]["attributes"]["cache_hit"] is True
    assert rows["cached_query"]["amount_nanos"] == 0
    assert rows["failing_job"]["attributes"]["failed"] is True
    assert rows["failing_job"]["attributes"]["error_reason"] == "invalidQuery"
    assert rows["edition_query"]["attributes"]["edition"] == "enterprise"


def test_job_labels_in_the_bill_reconcile_each_try(bq_run, tmp_path):
    """Each priced job billed in a FOCUS export under the labels the job carried (its try's
    OpenLineage run id), at 90 % of list price: each try's BigQuery line is reconciled to its share,
    found by the label alone, with nothing idle."""
    from collections import defaultdict

    from tests.support import bills

    ledger = bills.copy_ledger(bq_run.ledger_url, tmp_path)
    by_try: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for line in bills.ledger_lines(ledger):
        if line["source"] == "bigquery" and line["amount_nanos"]:
            by_try[(line["day"], line["ol_run_id"])].append(line)
    assert len(by_try) >= 2
    rows = [
        bills.charge(
            day,
            "Google Cloud",
            "BigQuery",
            "",
            bills.estimate(lines) * Decimal("0.9"),
            tags={"openlineage_run_id": run_id, "airflow_dag_id": "cost_bigquery"},
        )
        for (day, run_id), lines in by_try.items()
    ]
    bill = bills.write_focus(tmp_path / "focus.csv", rows)
    days = sorted(day for day, _ in by_try)
    until = (dt.date.fromisoformat(days[-1]) + dt.timedelta(days=1)).isoformat()
    document = bills.import_and_reconcile(ledger, bill, days[0], until)
    found = bills.reconciled(ledger)
    for lines in by_try.values():
        for line in lines:
            estimate, amount, status = found[line["id"]]
            assert status == "reconciled"
            assert abs(amount - estimate * Decimal("0.9")) <= 1  # nano-units: rounding alone
    (gcp,) = [row for row in document["rows"] if row["provider"] == "gcp"]
    assert Decimal(gcp["unattributed"]) == 0 and gcp["coverage"] == "1.0000"
    (bigquery,) = [row for row in document["accuracy"] if row["source"] == "bigquery"]
    assert bigquery["ratio"] == "0.9000"
