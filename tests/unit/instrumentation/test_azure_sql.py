"""Azure SQL (vCore rate x execution time) and Synapse serverless SQL (data processed, read back from
sys.dm_exec_requests_history by each statement's tag). The statements go through the real DbApiHook
path; SQLite stands in for the server, with the history view as an attached `sys` schema, so the
look-up query itself is executed."""

from __future__ import annotations

import re
import sqlite3
from decimal import Decimal

import pytest
from airflow.providers.common.sql.hooks.sql import DbApiHook

from airflow_cost_provider import conf
from airflow_cost_provider.capture import worker
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.capture.session import clear_sessions, open_session
from airflow_cost_provider.instrumentation.azure_sql import MINIMUM_MB, SERVERLESS_SOURCE
from airflow_cost_provider.instrumentation.sql import SqlStatements
from airflow_cost_provider.pricing import estimate_all
from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tracker import price_book


class MsSqlHook(DbApiHook):
    """Named like the provider's hook (the engine is chosen by hook class); SQLite underneath."""

    conn_name_attr = "mssql_conn_id"
    default_conn_name = "mssql_default"
    conn_type = "mssql"

    def __init__(self, path, conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path, self.conn_id, self.sent = str(path), conn_id, []

    def get_conn_id(self) -> str:
        return self.conn_id

    def get_conn(self):
        connection = sqlite3.connect(self.path)
        connection.execute(f"ATTACH '{self.path}.sys' AS sys")
        connection.set_trace_callback(self.sent.append)
        return connection


@pytest.fixture
def session(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING",
        '{"azure_db": {"tier": "general_purpose", "vcores": "4"}, "lake": {"service": "synapse_serverless"}}',
    )
    conf.clear_cache()
    price_book.cache_clear()
    instrumentation = SqlStatements()
    instrumentation.instrument()
    session = open_session(TaskTry("dag", "task", "run", 1, -1), worker.sample())
    yield session
    instrumentation.uninstrument()
    clear_sessions()
    conf.clear_cache()


def test_azure_sql_is_vcores_times_execution_time(session, tmp_path):
    MsSqlHook(tmp_path / "db", "azure_db").run("SELECT 1")
    (usage,) = session.usage
    assert (usage.source, usage.metric, usage.unit) == ("azure_sql", "vcore_time", "vCore-second")
    assert usage.quantity == Decimal(usage.attributes["elapsed_seconds"]) * 4 > 0
    (line,), unpriced = estimate_all(session.usage, price_book())
    assert unpriced == [] and line.method == "runtime_rate"
    assert line.amount == quantize_amount(usage.quantity * Decimal("0.2522") / 3600)


def test_azure_sql_without_tier_and_vcores_is_unpriced_with_the_reason(session, tmp_path):
    MsSqlHook(tmp_path / "db", "unknown_db").run("SELECT 1")
    lines, (unpriced,) = estimate_all(session.usage, price_book())
    assert lines == []
    assert "unknown_db" in unpriced.reason and "vcores" in unpriced.reason


def test_serverless_data_processed_is_read_back_by_statement_tag(session, tmp_path):
    hook = MsSqlHook(tmp_path / "db", "lake")
    with sqlite3.connect(f"{tmp_path / 'db'}.sys") as history:
        history.execute(
            "CREATE TABLE dm_exec_requests_history (distributed_statement_id TEXT, status TEXT, "
            "start_time TEXT, end_time TEXT, total_elapsed_time_ms INT, data_processed_mb REAL, query_text TEXT)"
        )
    hook.run(["SELECT 'big'", "SELECT 'tiny'", "SELECT 'lost'"])
    tagged = [s for s in hook.sent if "airflow_statement_id" in s]
    assert len(tagged) == 3
    ids = [re.search(r"airflow_statement_id='([0-9a-f]+)'", s).group(1) for s in tagged]
    with sqlite3.connect(f"{tmp_path / 'db'}.sys") as history:  # what the server's history would hold
        history.executemany(
            "INSERT INTO dm_exec_requests_history VALUES (?, 'Completed', NULL, NULL, 120, ?, ?)",
            [("D-1", 2048.0, tagged[0]), ("D-2", 0.5, tagged[1])],
        )
    assert session.usage == [] and len(next(iter(session.pending.values()))) == 3
    ((resolve, items),) = session.pending.items()
    usages = resolve(items, 5.0)
    by_id = {u.external_id: u for u in usages}
    assert by_id["D-1"].quantity == Decimal("2048.0") and by_id["D-1"].unit == "MB"
    assert by_id["D-2"].quantity == MINIMUM_MB  # billed at the 10 MB minimum
    missing = [u for u in usages if u.metric == "queries"]
    assert len(missing) == 1 and missing[0].attributes["statement_id"] == ids[2]
    lines, unpriced = estimate_all(usages, price_book())
    assert {line.usage.external_id: line.amount for line in lines} == {
        "D-1": quantize_amount(Decimal("2048.0") * Decimal(10) ** 6 * Decimal("5.00") / Decimal(10) ** 12),
        "D-2": quantize_amount(Decimal(10) * Decimal(10) ** 6 * Decimal("5.00") / Decimal(10) ** 12),
    }
    assert [u.usage.source for u in unpriced] == [SERVERLESS_SOURCE]
