"""Test DAG: SQL through a third-party DbApiHook method that runs its statements its own way, on a
connection of its own outside run, _run_command and get_conn (so no instrumentation sees them), but
reports each one to Airflow's hook lineage; then a task with no SQL that must not inherit them."""

from __future__ import annotations

import sqlite3
import tempfile

import pendulum
from airflow.providers.common.sql.hooks.lineage import send_sql_hook_lineage
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import dag, task

SQL_STATEMENTS = [
    "CREATE TABLE orders (id INTEGER, amount REAL)",
    "INSERT INTO orders VALUES (1, 9.5), (2, 20.0)",
    "UPDATE orders SET amount = amount * 2",
]


class LocalSqliteHook(DbApiHook):
    """A DbApiHook on a scratch SQLite file with a method of its own that reports to hook lineage."""

    conn_name_attr = "sqlite_conn_id"
    default_conn_name = "local_sqlite"  # defined by the tests as AIRFLOW_CONN_LOCAL_SQLITE
    conn_type = "sqlite"

    def __init__(self, path: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = path

    def get_conn(self):
        return sqlite3.connect(self.path)

    def run_own_way(self, statements: list[str]) -> None:
        with sqlite3.connect(self.path) as conn:
            cur = conn.cursor()
            for sql_statement in statements:
                cur.execute(sql_statement)
                send_sql_hook_lineage(context=self, sql=sql_statement, cur=cur)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def cost_hook_lineage():
    @task
    def run_sql() -> None:
        with tempfile.TemporaryDirectory() as folder:
            LocalSqliteHook(f"{folder}/orders.db").run_own_way(SQL_STATEMENTS)

    @task
    def after_sql() -> str:
        return "no SQL here"

    run_sql() >> after_sql()


cost_hook_lineage()
