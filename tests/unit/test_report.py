"""`airflow-cost report`: grouping, periods, formats, currencies kept apart, unpriced never zero."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal

import pytest

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult

T0 = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)


def line(source, amount, currency="USD"):
    usage = Usage(source, "m", Decimal(1), "query")
    return CostLine(
        usage,
        Decimal(amount),
        currency,
        "list_price",
        Price(source, "m", "query", Decimal(amount), currency, "v"),
    )


def result(dag, task, run, lines=(), unpriced=(), end=T0, try_number=1, capture="c"):
    missing = tuple(Unpriced(Usage(s, "queries", Decimal(1), "query"), "no price") for s in unpriced)
    return CostResult(
        TaskTry(dag, task, run, try_number, -1, None),
        f"{capture}{task}{run}{try_number}",
        "success",
        end - dt.timedelta(minutes=1),
        end,
        "w",
        tuple(lines),
        missing,
    )


@pytest.fixture
def ledger(ledger_url):
    engine = store.get_engine(ledger_url)
    for item in [
        result("sales", "extract", "r1", [line("airflow_worker", "0.10"), line("athena", "1.25")]),
        result("sales", "extract", "r2", [line("airflow_worker", "0.20")], unpriced=["postgres"]),
        result("sales", "load", "r1", [line("snowflake", "3.00"), line("bigquery", "2.00", "EUR")]),
        result("sales", "load", "r1", [line("airflow_worker", "0.05")], try_number=2),
        result("ops", "vacuum", "r1", unpriced=["postgres", "postgres"]),
        result("old", "t", "r0", [line("athena", "100")], end=T0 - dt.timedelta(days=90)),
    ]:
        store.store(engine, item)
    return ledger_url


def report(ledger, *args):
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["report", "--ledger", ledger, "--since", "2026-11-01", "--until", "2026-12-01", *args])
    assert code == 0
    return out.getvalue()


def test_json_by_task_sums_per_currency_and_marks_partial(ledger):
    rows = json.loads(report(ledger, "--by", "task", "--format", "json"))
    assert rows == [
        {
            "dag_id": "ops",
            "task_id": "vacuum",
            "amount": None,
            "currency": None,
            "status": "unpriced",
            "lines": 2,
            "unpriced": 2,
        },
        {
            "dag_id": "sales",
            "task_id": "extract",
            "amount": 1.55,
            "currency": "USD",
            "status": "partial",
            "lines": 4,
            "unpriced": 1,
        },
        {
            "dag_id": "sales",
            "task_id": "load",
            "amount": 2.0,
            "currency": "EUR",
            "status": "estimated",
            "lines": 1,
            "unpriced": 0,
        },
        {
            "dag_id": "sales",
            "task_id": "load",
            "amount": 3.05,
            "currency": "USD",
            "status": "estimated",
            "lines": 2,
            "unpriced": 0,
        },
    ]


def test_by_source_dag_run_and_try(ledger):
    by_source = {
        (r["source"], r["currency"]): r["amount"]
        for r in json.loads(report(ledger, "--by", "source", "--format", "json"))
    }
    assert by_source == {
        ("airflow_worker", "USD"): 0.35,
        ("athena", "USD"): 1.25,
        ("bigquery", "EUR"): 2.0,
        ("snowflake", "USD"): 3.0,
        ("postgres", None): None,
    }
    by_dag = json.loads(report(ledger, "--by", "dag", "--format", "json"))
    assert [(r["dag_id"], r["currency"], r["amount"]) for r in by_dag] == [
        ("ops", None, None),
        ("sales", "EUR", 2.0),
        ("sales", "USD", 4.6),
    ]
    by_try = json.loads(report(ledger, "--by", "try", "--format", "json"))
    assert {(r["task_id"], r["run_id"], r["try_number"]) for r in by_try if r["currency"] == "USD"} == {
        ("extract", "r1", 1),
        ("extract", "r2", 1),
        ("load", "r1", 1),
        ("load", "r1", 2),
    }
    by_run = json.loads(report(ledger, "--by", "run", "--format", "json"))
    assert {(r["dag_id"], r["run_id"]) for r in by_run} == {("ops", "r1"), ("sales", "r1"), ("sales", "r2")}


def test_period_filter_excludes_older_runs(ledger):
    everything = json.loads(report(ledger, "--by", "dag", "--format", "json", "--since", "2026-01-01"))
    assert ("old", 100.0) in {(r["dag_id"], r["amount"]) for r in everything}
    assert "old" not in {r["dag_id"] for r in json.loads(report(ledger, "--by", "dag", "--format", "json"))}


def test_csv_keeps_exact_decimals_and_table_is_aligned(ledger):
    rows = list(csv.DictReader(io.StringIO(report(ledger, "--by", "task", "--format", "csv"))))
    assert rows[1]["amount"] == "1.550000000" and rows[0]["amount"] == "" and rows[0]["status"] == "unpriced"
    table = report(ledger, "--by", "task").splitlines()
    assert table[0].split() == ["dag_id", "task_id", "amount", "currency", "status", "lines", "unpriced"]
    assert set(table[1]) <= {"-", " "}
    assert any("3.05" in row and "USD" in row for row in table)
    assert len({len(row) for row in table[:2]}) == 1


def test_unreachable_ledger_is_a_clear_error(capsys):
    code = main(["report", "--ledger", "postgresql+psycopg2://u:pw@127.0.0.1:9/none"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pw@" not in err
