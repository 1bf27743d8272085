"""BigQuery job labels from dbt: the shipped macro `cost_provider_job_labels`, rendered by dbt-core itself
as the query comment of every statement (`job-label: true`, as a BigQuery project sets it; here on
DuckDB, whose dbt writes each statement to its debug log). dbt-bigquery turns a JSON comment into the
job's labels, each key and value lowercased, anything but a-z 0-9 _ - replaced by `_` and cut at 63
characters (dbt/adapters/bigquery/connections.py, `_labels_from_query_comment`). The rendered labels
must already be valid, so that rule leaves them as they are, and be the labels the provider puts on
the jobs Airflow's own hooks start, whose `openlineage_run_id` the billing import reads."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from airflow_cost_provider.billing.scan import RUN_ID_TAG_KEYS
from airflow_cost_provider.tagging import bigquery_labels
from tests.support.dbt_tool import PROJECT, run_dbt

pytestmark = pytest.mark.integration

RUN_ID = "0193a1c2-5e4f-7abc-8def-0123456789ab"
# hostile on purpose: too long for a label, upper case, quotes, a comment's end, non-ASCII
AIRFLOW_CTX = {
    "AIRFLOW_CTX_DAG_ID": "Daily_Revenue_" + "x" * 70,
    "AIRFLOW_CTX_TASK_ID": "dbt build",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-11-22T10:00:00+00:00 ' */ é",
    "AIRFLOW_CTX_TRY_NUMBER": "2",
    "OPENLINEAGE_PARENT_ID": f"default/daily.dbt_build/{RUN_ID}",
}
LABEL = re.compile(r"^[a-z0-9_-]{0,63}$")
COMMENT = re.compile(r"/\* (\{.*?\}) \*/")


def dbt_bigquery_label(value: str) -> str:
    """What dbt-bigquery makes of a comment's key or value (`_sanitize_label`)."""
    return re.sub(r"[^a-z0-9_-]", "_", value.strip().lower())[:63]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[list[dict], dict]:
    work = tmp_path_factory.mktemp("dbt-labels")
    project = work / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    settings = project / "dbt_project.yml"
    configured, count = re.subn(
        r"query-comment:\n(?:  .*\n)+",
        'query-comment:\n  comment: "{{ cost_provider_job_labels(node) }}"\n  job-label: true\n  append: true\n',
        settings.read_text(),
    )
    assert count == 1
    settings.write_text(configured)
    run = run_dbt(
        "build",
        env={**AIRFLOW_CTX, "DBT_TARGET": "duckdb", "DBT_DUCKDB_PATH": str(work / "labels.duckdb")},
        work_dir=work,
        project=project,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    comments = [json.loads(c) for c in COMMENT.findall((work / "logs" / "dbt.log").read_text())]
    results = json.loads((work / "target" / "run_results.json").read_text())
    return comments, results


def test_every_comment_is_a_json_object_of_valid_labels(rendered):
    comments, _ = rendered
    assert len(comments) > 10
    for labels in comments:
        assert isinstance(labels, dict)
        for key, value in labels.items():
            assert LABEL.match(key) and key[0].isalpha() and LABEL.match(value), (key, value)
            # dbt-bigquery's own clean-up changes nothing
            assert (dbt_bigquery_label(key), dbt_bigquery_label(str(value))) == (key, value)


def test_the_labels_are_the_providers_own_and_name_the_node(rendered):
    comments, results = rendered
    task_try = {
        "airflow_dag_id": AIRFLOW_CTX["AIRFLOW_CTX_DAG_ID"],
        "airflow_task_id": "dbt build",
        "airflow_run_id": AIRFLOW_CTX["AIRFLOW_CTX_DAG_RUN_ID"],
        "airflow_try_number": "2",
        "airflow_map_index": "-1",
        "openlineage_run_id": RUN_ID,
        "dbt_invocation_id": results["metadata"]["invocation_id"],
    }
    expected = {
        None: bigquery_labels(task_try),
        **{
            r["unique_id"]: bigquery_labels({**task_try, "dbt_unique_id": r["unique_id"]})
            for r in results["results"]
        },
    }
    seen = set()
    for labels in comments:
        node = next((n for n, want in expected.items() if labels == want), "unknown")
        assert node != "unknown", labels
        seen.add(node)
    assert seen - {None} == {r["unique_id"] for r in results["results"]}
    # the long dag id is cut with a digest of the whole, as the provider's own labels are
    assert (
        expected[None]["airflow_dag_id"].startswith("daily_revenue_x")
        and len(expected[None]["airflow_dag_id"]) == 63
    )


def test_the_billing_import_reads_the_try_from_the_labels(rendered):
    comments, _ = rendered
    # a GCP billing export row carries the job's labels; the import takes the try's OpenLineage run id
    # from this key, and reconciliation matches it to the try's ledger lines
    assert "openlineage_run_id" in RUN_ID_TAG_KEYS
    assert {labels["openlineage_run_id"] for labels in comments} == {RUN_ID}
