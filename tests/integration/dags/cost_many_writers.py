"""Test DAG for many writers at once under a real scheduler: mapped tasks that each run one SQL
statement (a worker line and a SQL line per try), and a task that fails its first try and is
retried. Triggered several times in parallel, every try writes the same ledger concurrently."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pendulum
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import dag, get_current_context, task

MAPPED_TASKS = 9  # test_many_writers.py counts on it


class MemorySqliteHook(DbApiHook):
    """A DbApiHook on an in-memory SQLite database: one local statement, no server."""

    conn_name_attr = "sqlite_conn_id"
    default_conn_name = "local_sqlite"  # defined by the tests as AIRFLOW_CONN_LOCAL_SQLITE
    conn_type = "sqlite"

    def get_conn(self) -> sqlite3.Connection:
        return sqlite3.connect(":memory:")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=16,
    tags=["many-writers"],
)
def cost_many_writers():
    @task
    def work(n: int) -> int:
        return MemorySqliteHook().get_first(f"SELECT {n} * 2")[0]

    @task(retries=1, retry_delay=dt.timedelta(seconds=1))
    def fails_once() -> str:
        if get_current_context()["ti"].try_number == 1:
            raise RuntimeError("the first try fails on purpose")
        return "second try"

    work.expand(n=list(range(MAPPED_TASKS)))
    fails_once()


cost_many_writers()
