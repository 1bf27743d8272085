"""The query comment the dbt project ships, end to end: dbt-postgres against the PostgreSQL server the
suite starts, whose statement log must show every statement dbt sent ending in the comment, with the
node's unique id and the Airflow task try, in the same sqlcommenter format as the provider's own."""

from __future__ import annotations

import json
import re

import pytest

from airflow_cost_provider.tagging import format_comment
from tests.support.dbt_tool import PROJECT, run_dbt

pytestmark = pytest.mark.integration

# hostile on purpose: a run id that would close the comment or the string if it were not encoded
AIRFLOW_CTX = {
    "AIRFLOW_CTX_DAG_ID": "dbt_daily",
    "AIRFLOW_CTX_TASK_ID": "dbt build",
    "AIRFLOW_CTX_DAG_RUN_ID": "manual__2026-11-22T10:00:00+00:00 ' */ é",
    "AIRFLOW_CTX_TRY_NUMBER": "2",
    "OPENLINEAGE_PARENT_ID": "default/dbt_daily.dbt_build/0193a1c2-5e4f-7abc-8def-0123456789ab",
}

TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK"}
SEED_INSERT = re.compile(r'\s*insert into "dbt_query_comment"\."cost_demo"\."raw_orders" ')


def test_every_dbt_statement_carries_the_node_and_the_task_try(postgres_server, tmp_path):
    database = "dbt_query_comment"
    postgres_server.create_database(database)
    logged_before = len(postgres_server.statements())
    run = run_dbt(
        "build",
        env={
            **AIRFLOW_CTX,
            "DBT_TARGET": "postgres",
            "DBT_POSTGRES_PORT": str(postgres_server.port),
            "DBT_POSTGRES_USER": "postgres",
            "DBT_POSTGRES_DBNAME": database,
        },
        work_dir=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    statements = postgres_server.statements()[logged_before:]
    results = json.loads((tmp_path / "target" / "run_results.json").read_text())
    task_try = {
        "airflow_dag_id": "dbt_daily",
        "airflow_task_id": "dbt build",
        "airflow_run_id": AIRFLOW_CTX["AIRFLOW_CTX_DAG_RUN_ID"],
        "airflow_try_number": "2",
        "airflow_map_index": "-1",
        "openlineage_run_id": "0193a1c2-5e4f-7abc-8def-0123456789ab",
        "dbt_invocation_id": results["metadata"]["invocation_id"],
    }
    # dbt writes the comment between `/* ` and ` */` on a line of its own; inside, the same text as
    # the provider's own comment for these tags
    comment_of = {
        None: "\n/* " + format_comment(task_try)[2:-2] + " */",
        **{
            result["unique_id"]: "\n/* "
            + format_comment({**task_try, "dbt_unique_id": result["unique_id"]})[2:-2]
            + " */"
            for result in results["results"]
        },
    }
    assert len(statements) > 20
    nodes_seen = set()
    for statement in statements:
        body = statement.rstrip().removesuffix(";")
        node = next((n for n, comment in comment_of.items() if body.endswith(comment)), "untagged")
        if node == "untagged":
            # psycopg2's own transaction control, and the seed's batched inserts, which dbt sends
            # through adapter.add_query, the one path that adds no query comment
            assert statement in TRANSACTION_CONTROL or SEED_INSERT.match(statement), statement
        nodes_seen.add(node)
    # every seed, model and test ran statements that name it
    assert nodes_seen - {None, "untagged"} == {r["unique_id"] for r in results["results"]}
    assert {n.split(".")[0] for n in nodes_seen - {None, "untagged"}} == {"seed", "model", "test"}
    assert "model.cost_demo.daily_orders" in nodes_seen


def test_the_shipped_macro_is_the_one_the_project_uses():
    from importlib.resources import files

    shipped = files("airflow_cost_provider.tagging").joinpath("dbt_query_comment.sql").read_text()
    assert (PROJECT / "macros" / "cost_provider_query_comment.sql").read_text() == shipped
