"""BigQuery labels, Snowflake QUERY_TAG and statement names from the task identity."""

from __future__ import annotations

import json
import re

from airflow_cost_provider.tagging import bigquery_labels, snowflake_query_tag, statement_name

LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")
IDENTITY = {
    "airflow_dag_id": "Daily.Sales",
    "airflow_task_id": "load*/'x\nnaïve",
    "airflow_run_id": "manual__2026-11-22T10:00:00.123456+00:00",
    "airflow_try_number": "1",
    "airflow_map_index": "-1",
    "openlineage_run_id": "0193a1c2-1234-7abc-8def-0123456789ab",
}


def test_bigquery_labels_are_valid_label_syntax():
    labels = bigquery_labels({**IDENTITY, "9starts_with_digit": "x" * 200})
    for key, value in labels.items():
        assert LABEL.match(key) and key[0].isalpha(), key
        assert LABEL.match(value), value
    assert labels["airflow_run_id"] == "manual__2026-11-22t10_00_00_123456_00_00"
    assert labels["openlineage_run_id"] == IDENTITY["openlineage_run_id"]


def test_long_label_values_stay_distinct_when_cut():
    first = bigquery_labels({"airflow_task_id": "t" * 70 + "a"})["airflow_task_id"]
    second = bigquery_labels({"airflow_task_id": "t" * 70 + "b"})["airflow_task_id"]
    assert len(first) == len(second) == 63 and first != second


def test_query_tag_is_json_and_keeps_the_users_tag():
    assert json.loads(snowflake_query_tag(IDENTITY)) == IDENTITY
    merged = json.loads(snowflake_query_tag({"airflow_task_id": "t"}, existing='{"team": "finance"}'))
    assert merged == {"team": "finance", "airflow_task_id": "t"}
    plain = json.loads(snowflake_query_tag({"airflow_task_id": "t"}, existing="nightly"))
    assert plain == {"query_tag": "nightly", "airflow_task_id": "t"}


def test_query_tag_never_exceeds_snowflakes_limit():
    huge = {"airflow_task_id": "x" * 3000}
    assert len(snowflake_query_tag(huge)) <= 2000
    assert snowflake_query_tag(huge, existing="mine") == "mine"


def test_statement_name():
    assert statement_name(IDENTITY) == "Daily.Sales.load*/'x\nnaïve.1"
    assert len(statement_name({"airflow_dag_id": "d" * 900})) == 500
