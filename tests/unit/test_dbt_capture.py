"""dbt's artifacts read at a task's end: one usage per node, priced as the SQL sources are, and every
unreadable artifact kept as one unpriced usage that names the problem."""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_cost_provider import tracker
from airflow_cost_provider.capture.dbt import command_invocation, dbt_invocation, usages_of_run
from airflow_cost_provider.pricing import CostLine, Unpriced, estimate_all
from airflow_cost_provider.pricing.money import quantize_amount

STARTED = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
INVOCATION = "5b0c5e4e-0000-4000-8000-000000000001"


def result(unique_id: str, status: str = "success", seconds: float = 1.5, **response) -> dict:
    return {
        "unique_id": unique_id,
        "status": status,
        "execution_time": seconds,
        "adapter_response": {"_message": "OK", **response},
        "timing": [
            {"name": "compile", "started_at": "2026-11-22T10:00:00Z", "completed_at": "2026-11-22T10:00:01Z"},
            {
                "name": "execute",
                "started_at": "2026-11-22T10:00:01Z",
                "completed_at": "2026-11-22T10:00:02.5Z",
            },
        ],
    }


def node(unique_id: str, materialized: str, relation: str | None) -> dict:
    return {
        "unique_id": unique_id,
        "resource_type": unique_id.split(".")[0],
        "relation_name": relation,
        "config": {"materialized": materialized},
    }


NODES = {
    "seed.shop.raw_orders": node("seed.shop.raw_orders", "seed", '"db"."main"."raw_orders"'),
    "model.shop.stg_orders": node("model.shop.stg_orders", "view", '"db"."main"."stg_orders"'),
    "model.shop.daily": node("model.shop.daily", "incremental", '"db"."main"."daily"'),
    "test.shop.unique_order.1a2b": node("test.shop.unique_order.1a2b", "test", None),
}


def write_run(
    target: Path,
    adapter: str,
    results: list[dict],
    select: list[str] | None = None,
    run_results_schema: str = "v6",
) -> None:
    target.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    metadata = {"invocation_id": INVOCATION, "invocation_started_at": now, "generated_at": now}
    (target / "manifest.json").write_text(
        json.dumps(
            {
                "metadata": {
                    **metadata,
                    "dbt_schema_version": "https://schemas.getdbt.com/dbt/manifest/v12.json",
                    "adapter_type": adapter,
                    "project_name": "shop",
                },
                "nodes": NODES,
            }
        )
    )
    (target / "run_results.json").write_text(
        json.dumps(
            {
                "metadata": {
                    **metadata,
                    "dbt_schema_version": f"https://schemas.getdbt.com/dbt/run-results/{run_results_schema}.json",
                },
                "results": results,
                "args": {"select": select or [], "which": "build"},
            }
        )
    )


def priced(usages):
    return estimate_all(usages, tracker.price_book())


def test_the_project_and_target_of_the_task_command(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: shop\ntarget-path: build_output\n")
    monkeypatch.delenv("DBT_PROJECT_DIR", raising=False)
    monkeypatch.delenv("DBT_TARGET_PATH", raising=False)

    def task(command, env=None, cwd=None):
        return SimpleNamespace(bash_command=command, env=env, cwd=cwd)

    assert dbt_invocation(task(f"dbt build --project-dir {project}")) == (project, project / "build_output")
    assert dbt_invocation(task(f"cd x && dbt --quiet run --project-dir={project} --target-path /t")) == (
        project,
        Path("/t"),
    )
    assert dbt_invocation(task("dbt build", env={"DBT_PROJECT_DIR": str(project)})) == (
        project,
        project / "build_output",
    )
    assert dbt_invocation(task("/venv/bin/dbt seed", cwd=str(project))) == (project, project / "build_output")
    monkeypatch.setenv("DBT_PROJECT_DIR", str(project))
    monkeypatch.setenv("DBT_TARGET_PATH", str(tmp_path / "t2"))
    assert dbt_invocation(task("dbt test")) == (project, tmp_path / "t2")
    # not a dbt run: nothing to read
    assert dbt_invocation(task("echo dbt is great; dbt docs generate")) is None
    assert dbt_invocation(task("dbt deps")) is None
    assert dbt_invocation(task("dbt docs generate --select test")) is None
    assert (
        dbt_invocation(task(f"dbt deps && dbt --log-level debug build --project-dir {project}"))[0] == project
    )
    assert dbt_invocation(SimpleNamespace(python_callable=print)) is None


def test_the_project_and_target_of_a_command_given_as_its_arguments(tmp_path):
    project = tmp_path / "copy"
    project.mkdir()
    (project / "dbt_project.yml").write_text("name: shop\n")
    # Cosmos's command: its dbt executable first, whatever its name, then flags, the command, options
    command = ["/opt/venv/bin/dbt-1.11", "--no-partial-parse", "build", "--select", "daily", "--project-dir"]
    assert command_invocation([*command, str(project)], {}, "/elsewhere") == (project, project / "target")
    assert command_invocation(["dbt", "run"], {"DBT_TARGET_PATH": "out"}, project) == (
        project,
        project / "out",
    )
    assert command_invocation(["dbt", "seed", "--target-path", "/t"], {}, project) == (project, Path("/t"))
    for words in (["deps"], ["ls", "--output", "json"], ["source", "freshness"], ["docs", "generate"], []):
        assert command_invocation(["dbt", *words], {}, project) is None
    assert command_invocation([], {}, project) is None


def test_postgres_models_are_priced_at_the_projects_instance_rate(tmp_path, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING", '{"dbt:shop": {"instance_type": "db.r6g.large"}}'
    )
    write_run(
        tmp_path / "target",
        "postgres",
        [
            result("seed.shop.raw_orders", seconds=0.25, rows_affected=6),
            result("model.shop.stg_orders", seconds=0.125),
            result("model.shop.daily", status="error", seconds=2),
            result("test.shop.unique_order.1a2b", status="skipped", seconds=0),
            result("operation.shop.on-run-end-0", seconds=1),
        ],
    )
    usages = usages_of_run(tmp_path, tmp_path / "target", STARTED)
    by_node = {u.resource: u for u in usages}
    assert list(by_node) == [
        "seed.shop.raw_orders",
        "model.shop.stg_orders",
        "model.shop.daily",
        "test.shop.unique_order.1a2b",
    ]
    daily = by_node["model.shop.daily"]
    assert (daily.source, daily.metric, daily.quantity, daily.unit) == (
        "postgres",
        "instance_time",
        Decimal(2),
        "instance-second",
    )
    assert daily.attributes["dbt_materialization"] == "incremental"
    assert daily.attributes["dbt_relation"] == '"db"."main"."daily"'
    assert daily.attributes["status"] == "error"
    assert daily.attributes["dbt_invocation_id"] == INVOCATION
    assert daily.start_time == dt.datetime(2026, 11, 22, 10, 0, 1, tzinfo=dt.timezone.utc)
    assert by_node["seed.shop.raw_orders"].attributes["rows_affected"] == 6
    assert by_node["test.shop.unique_order.1a2b"].quantity == 0
    assert by_node["test.shop.unique_order.1a2b"].attributes["status"] == "skipped"
    lines, unpriced = priced(usages)
    assert unpriced == []
    amounts = {line.usage.resource: line.amount for line in lines}
    hourly = Decimal("0.225")  # the shipped book's db.r6g.large
    assert amounts["model.shop.daily"] == quantize_amount(Decimal(2) * hourly / 3600)
    assert amounts["seed.shop.raw_orders"] == quantize_amount(Decimal("0.25") * hourly / 3600)
    assert {line.method for line in lines} == {"runtime_rate"}


def test_without_an_instance_postgres_and_duckdb_stay_unpriced_with_the_reason(tmp_path):
    write_run(tmp_path / "pg", "postgres", [result("model.shop.stg_orders")])
    write_run(tmp_path / "duck", "duckdb", [result("model.shop.stg_orders")])
    write_run(tmp_path / "other", "clickhouse", [result("model.shop.stg_orders")])
    (_, [pg]) = priced(usages_of_run(tmp_path, tmp_path / "pg", STARTED))
    (_, [duck]) = priced(usages_of_run(tmp_path, tmp_path / "duck", STARTED))
    (_, [other]) = priced(usages_of_run(tmp_path, tmp_path / "other", STARTED))
    assert "connection_pricing" in pg.reason and '"dbt:shop"' in pg.reason
    assert duck.reason.startswith("no price for duckdb/instance_time: DuckDB runs inside the dbt process")
    assert "dbt adapter 'clickhouse' is not one this provider prices" in other.reason
    assert duck.usage.quantity == Decimal("1.5")


def test_bigquery_bytes_billed_and_warehouse_query_ids(tmp_path):
    write_run(
        tmp_path / "bq",
        "bigquery",
        [
            result(
                "model.shop.daily",
                bytes_billed=2 * 1024**4,
                bytes_processed=2 * 1024**4 - 5,
                slot_ms=5000,
                job_id="job_abc",
                project_id="proj",
                location="US",
            )
        ],
    )
    ([line], []) = priced(usages_of_run(tmp_path, tmp_path / "bq", STARTED))
    assert isinstance(line, CostLine)
    assert (line.usage.source, line.usage.metric, line.usage.external_id) == (
        "bigquery",
        "bytes_billed",
        "job_abc",
    )
    assert line.usage.resource == "model.shop.daily"
    assert line.usage.attributes["total_slot_ms"] == 5000
    assert line.amount == 2 * line.price.amount  # 2 TiB at the book's per-TiB on-demand price
    write_run(tmp_path / "sf", "snowflake", [result("model.shop.daily", query_id="01b2-c3d4")])
    ([], [query]) = priced(usages_of_run(tmp_path, tmp_path / "sf", STARTED))
    assert isinstance(query, Unpriced)
    assert (query.usage.source, query.usage.external_id) == ("snowflake", "01b2-c3d4")
    assert "query history" in query.reason


def test_a_state_selected_run_marks_the_nodes_it_left_out_as_reused(tmp_path):
    write_run(tmp_path / "t", "duckdb", [result("model.shop.daily")], select=["state:modified+"])
    usages = {u.resource: u for u in usages_of_run(tmp_path, tmp_path / "t", STARTED)}
    assert {k: u.attributes["status"] for k, u in usages.items()} == {
        "model.shop.daily": "success",
        "seed.shop.raw_orders": "reused",
        "model.shop.stg_orders": "reused",
    }
    assert usages["model.shop.stg_orders"].quantity == 0
    # without state selection, a node not in the results was not part of the run at all
    write_run(tmp_path / "u", "duckdb", [result("model.shop.daily")], select=["daily"])
    assert [u.resource for u in usages_of_run(tmp_path, tmp_path / "u", STARTED)] == ["model.shop.daily"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("missing", "run_results.json does not exist"),
        ("truncated", "is not readable JSON (truncated?)"),
        ("schema", "has schema 'https://schemas.getdbt.com/dbt/run-results/v99.json'; this version reads"),
        ("stale", "is from an earlier run"),
        ("earlier", "is from an earlier run"),
    ],
)
def test_unreadable_artifacts_are_one_unpriced_usage_naming_the_problem(tmp_path, damage, reason):
    target = tmp_path / "target"
    write_run(
        target,
        "postgres",
        [result("model.shop.daily")],
        run_results_schema="v99" if damage == "schema" else "v6",
    )
    run_results = target / "run_results.json"
    started = STARTED
    if damage == "missing":
        run_results.unlink()
    elif damage == "truncated":
        run_results.write_text(run_results.read_text()[:40])
    elif damage == "stale":
        old = STARTED.timestamp() - 3600
        os.utime(run_results, (old, old))
    elif damage == "earlier":  # written a moment before the task started: dbt's own time tells
        started = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
    ([], [unreadable]) = priced(usages_of_run(tmp_path, target, started))
    assert unreadable.usage.source == "dbt"
    assert unreadable.reason.startswith("no price for dbt/queries: dbt's artifacts unreadable: ")
    assert reason in unreadable.reason


def test_a_manifest_of_another_invocation_is_not_used(tmp_path):
    target = tmp_path / "target"
    write_run(target, "postgres", [result("model.shop.daily")])
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["metadata"]["invocation_id"] = "another"
    (target / "manifest.json").write_text(json.dumps(manifest))
    ([], [usage]) = priced(usages_of_run(tmp_path, target, STARTED))
    assert usage.usage.source == "dbt"
    assert "dbt_materialization" not in usage.usage.attributes
    assert "no manifest.json of this invocation names dbt's adapter" in usage.reason


def test_a_bash_task_running_dbt_gets_its_nodes_at_the_end_and_bad_artifacts_leave_it_alone(tmp_path):
    from airflow_cost_provider.listener import make_listener
    from airflow_cost_provider.openlineage import get_cost_run_facets
    from tests.support.fake_ti import FakeTaskInstance

    def run(ti, work) -> dict:
        listener = make_listener("first")
        listener.on_task_instance_running(previous_state=None, task_instance=ti)
        work()
        listener.on_task_instance_success(previous_state=None, task_instance=ti)
        return get_cost_run_facets(ti, "success")["costProvider_cost"]

    target = tmp_path / "out"
    built = FakeTaskInstance(task_id="dbt_build")
    built.task = SimpleNamespace(bash_command=f"dbt build --project-dir {tmp_path} --target-path {target}")
    facet = run(
        built,
        lambda: write_run(target, "duckdb", [result("model.shop.daily"), result("seed.shop.raw_orders")]),
    )
    duckdb = [entry for entry in facet.unpriced if entry["source"] == "duckdb"]
    assert sorted(entry["resource"] for entry in duckdb) == ["model.shop.daily", "seed.shop.raw_orders"]
    # the next try finds only the earlier run's files: nothing of it is counted again
    again = FakeTaskInstance(task_id="dbt_build")
    again.task = built.task
    facet = run(again, lambda: None)
    [unreadable] = [entry for entry in facet.unpriced if entry["source"] in ("dbt", "duckdb")]
    assert unreadable["source"] == "dbt" and "is from an earlier run" in unreadable["reason"]
    assert any(line["source"] == "airflow_worker" for line in facet.lines)
