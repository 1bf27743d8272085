"""The ledger on SQLite and on a real PostgreSQL server: idempotent writes, nothing half-written."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import SCHEMA_REVISION, VERSION_TABLE
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult
from tests.support.airflow_env import ledger_rows
from tests.support.http_recorder import closed_port

T0 = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)
PRICE = Price(
    "athena",
    "data_scanned",
    "TB",
    Decimal("5"),
    "USD",
    "2026.11.0",
    source_url="https://aws.amazon.com/athena/pricing/",
)


def make_result(capture_id="c1", task_id="load", try_number=1, amounts=("0.123456789",), unpriced=1, end=T0):
    usage = Usage(
        "athena", "data_scanned", Decimal(10**9), "byte", external_id="q-1", attributes={"n": Decimal("1.5")}
    )
    lines = tuple(CostLine(usage, Decimal(a), "USD", "list_price", PRICE) for a in amounts)
    missing = tuple(
        Unpriced(Usage("postgres", "queries", Decimal(1), "query"), "no price") for _ in range(unpriced)
    )
    return CostResult(
        TaskTry("sales", task_id, "manual__1", try_number, -1, "01a1-run"),
        capture_id,
        "success",
        end - dt.timedelta(minutes=5),
        end,
        "worker-1",
        lines,
        missing,
    )


def test_schema_is_migrated_with_its_own_version_table(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.schema_revision(engine) == SCHEMA_REVISION
    inspector = sa.inspect(engine)
    assert {"cost_task_runs", "cost_usage", "cost_lines", VERSION_TABLE} <= set(inspector.get_table_names())
    fks = {fk["referred_table"] for fk in inspector.get_foreign_keys("cost_lines")}
    assert fks == {"cost_task_runs", "cost_usage"}
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("cost_task_runs")}
    assert ("end_time",) in indexed and ("dag_id", "end_time") in indexed
    store.ensure_schema(engine)  # a second call is a no-op


def test_store_writes_exact_amounts_and_keeps_unpriced_as_null(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.store(engine, make_result(amounts=("0.123456789", "7")))
    lines = ledger_rows(
        ledger_url,
        "SELECT amount_nanos, currency, status, price_ref, unpriced_reason FROM cost_lines ORDER BY id",
    )
    assert [r["amount_nanos"] for r in lines] == [123456789, 7_000_000_000, None]
    assert lines[2]["status"] == "unpriced" and lines[2]["unpriced_reason"] == "no price"
    assert lines[0]["price_ref"] == "2026.11.0:athena/data_scanned"
    usage = ledger_rows(ledger_url, "SELECT quantity, unit, external_id FROM cost_usage ORDER BY id")
    assert usage[0] == {"quantity": "1000000000", "unit": "byte", "external_id": "q-1"}
    run = ledger_rows(ledger_url, "SELECT status, ol_run_id, end_time FROM cost_task_runs")[0]
    assert run["status"] == "partial" and run["ol_run_id"] == "01a1-run"


def test_same_capture_twice_is_a_no_op_and_a_new_capture_replaces(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.store(engine, make_result("c1", amounts=("1",)))
    assert not store.store(engine, make_result("c1", amounts=("99",)))
    assert ledger_rows(ledger_url, "SELECT amount_nanos FROM cost_lines WHERE amount_nanos IS NOT NULL") == [
        {"amount_nanos": 10**9}
    ]
    assert store.store(engine, make_result("c2", amounts=("2", "3"), unpriced=0))
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_task_runs")) == 1
    amounts = sorted(
        r["amount_nanos"] for r in ledger_rows(ledger_url, "SELECT amount_nanos FROM cost_lines")
    )
    assert amounts == [2 * 10**9, 3 * 10**9]
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_usage")) == 2  # old usage gone with its lines


def test_a_failure_mid_write_leaves_nothing_half_written(ledger_url, monkeypatch):
    engine = store.get_engine(ledger_url)
    store.store(engine, make_result("c1", amounts=("1",)))

    def broken_line_values(_line):
        raise ValueError("disk full")

    monkeypatch.setattr(store, "_line_values", broken_line_values)
    with pytest.raises(ValueError):
        store.store(engine, make_result("c2", task_id="other"))
    with pytest.raises(ValueError):
        store.store(engine, make_result("c3"))  # a replacement of the first try fails too
    assert [r["capture_id"] for r in ledger_rows(ledger_url, "SELECT capture_id FROM cost_task_runs")] == [
        "c1"
    ]
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_lines")) == 2


def test_unreachable_postgres_gives_a_clear_error_without_the_password():
    url = f"postgresql+psycopg2://cost:hunter2@127.0.0.1:{closed_port()}/ledger"
    with pytest.raises(store.LedgerError) as raised:
        store.get_engine(url, timeout=2)
    message = str(raised.value)
    assert "unreachable" in message and "127.0.0.1" in message and "hunter2" not in message


def test_connection_id_is_resolved_through_airflow(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_COST_LEDGER", "postgres://cost:pw@db.internal:5432/ledger")
    assert store.resolve_url("cost_ledger", "sqlite://") == "postgresql://cost:pw@db.internal:5432/ledger"
    assert store.resolve_url("", "sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(store.LedgerError, match="no_such_conn"):
        store.resolve_url("no_such_conn", "sqlite://")
