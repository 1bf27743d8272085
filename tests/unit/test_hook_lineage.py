"""Reading hook lineage: a capture reads Airflow's hook-lineage collector but never creates it, since
creating it imports every provider's asset handlers (over a second in a fresh task process)."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest
from airflow.providers.common.sql.hooks.lineage import send_sql_hook_lineage
from airflow.providers.common.sql.hooks.sql import DbApiHook
from airflow.sdk import lineage

from airflow_cost_provider.capture import hook_lineage


class ScratchSqliteHook(DbApiHook):
    conn_name_attr = "sqlite_conn_id"
    default_conn_name = "local_sqlite"
    conn_type = "sqlite"

    def get_conn(self) -> sqlite3.Connection:
        return sqlite3.connect(":memory:")


@pytest.fixture
def no_collector_yet():
    """This process as a fresh task process finds it: no collector created."""
    lineage.get_hook_lineage_collector.cache_clear()
    yield
    lineage.get_hook_lineage_collector.cache_clear()


def test_a_try_whose_hooks_reported_nothing_leaves_the_collector_uncreated(no_collector_yet):
    start = hook_lineage.mark()
    assert start == []
    assert hook_lineage.usage_since(start, dt.datetime.now(dt.timezone.utc)) == []
    assert lineage.get_hook_lineage_collector.cache_info().currsize == 0


def test_statements_a_hook_reports_after_the_start_are_read(no_collector_yet):
    start = hook_lineage.mark()  # before any hook: nothing to remember
    hook = ScratchSqliteHook()
    send_sql_hook_lineage(context=hook, sql="SELECT 1", job_id="q-1")
    send_sql_hook_lineage(context=hook, sql="SELECT 2", job_id="q-2")
    if isinstance(lineage.get_hook_lineage_collector(), lineage.NoOpCollector):
        pytest.fail("no hook-lineage reader registered: the cost plugin should register one")

    usages = hook_lineage.usage_since(start, dt.datetime.now(dt.timezone.utc))
    assert sorted((u.source, u.metric, u.quantity, u.external_id) for u in usages) == [
        ("sqlite", "queries", 1, "q-1"),
        ("sqlite", "queries", 1, "q-2"),
    ]
    # a later try in the same process reads only what came after its own start
    assert hook_lineage.usage_since(hook_lineage.mark(), dt.datetime.now(dt.timezone.utc)) == []
