"""dags/example_dbt_cosmos.py under real `airflow dags test`: Astronomer Cosmos runs dbt (its own
environment, `.tools/dbt`, as a subprocess) in a temporary copy of the cost_demo project.

LOCAL (`example_dbt_cosmos`, on the suite's PostgreSQL server): each task's try gets the lines of the
nodes its own `dbt build --select` ran, priced at the project's instance rate, in the ledger and on its
COMPLETE event; every statement dbt sent ends in the query comment naming its node and that task's try,
whose OpenLineage run id is the one on the task's events.
WATCHER (`example_dbt_cosmos_watcher`, on DuckDB with a user price): the producer's try gets one line
per node, the sensors none, so the run counts each node once."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from airflow_cost_provider.tagging import format_comment
from tests.support.airflow_env import REPO, ledger_rows
from tests.support.dbt_tool import (
    MATERIALIZED,
    MODELS,
    PER_HOUR,
    SEED,
    TESTS,
    dbt_binary,
    duckdb_price_book,
)
from tests.support.openlineage import complete_events

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"
INSTANCE = "db.t3.micro"
PRICE_BOOK = REPO / "airflow_cost_provider" / "pricing" / "price_book.yaml"
# LOCAL with TestBehavior.BUILD: a task per seed and model, each building its node and its tests
TASK_NODES = {
    "raw_orders_seed_build": SEED,
    "stg_orders_model_build": ["model.cost_demo.stg_orders", *TESTS[:2]],
    "stg_customers_model_build": ["model.cost_demo.stg_customers"],
    "customer_totals_model_build": ["model.cost_demo.customer_totals", TESTS[2]],
    "daily_orders_model_build": ["model.cost_demo.daily_orders"],
}
PRODUCER = "dbt_producer_watcher"
SENSORS = {
    "raw_orders_seed",
    "stg_orders_run",
    "stg_customers_run",
    "customer_totals_run",
    "daily_orders_run",
}
# psycopg2's own transaction control, and the seed's batched inserts (adapter.add_query adds no comment)
UNCOMMENTED = ("BEGIN", "COMMIT", "ROLLBACK", 'insert into "dbt_cosmos"."cost_demo"."raw_orders" ')
# Cosmos reports its usage to a remote endpoint unless told not to: the tests stay offline
COSMOS_OFFLINE = {"AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False", "DO_NOT_TRACK": "1"}


def cosmos_run(airflow_env, tmp_path_factory, dag_id: str, env: dict[str, str]):
    dbt_binary()  # made before the DAG runs, as scripts/setup.sh does
    ledger = f"sqlite:///{tmp_path_factory.mktemp('cosmos-ledger') / 'ledger.db'}"
    run = airflow_env.dags_test(
        dag_id,
        ledger_url=ledger,
        env={"AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), **COSMOS_OFFLINE, **env},
    )
    assert run.process.returncode == 0, run.output[-4000:]
    assert "(no impact on the task)" not in run.output
    return run


@pytest.fixture(scope="module")
def local_run(airflow_env, postgres_server, tmp_path_factory):
    postgres_server.create_database("dbt_cosmos")
    logged_before = len(postgres_server.statements())
    run = cosmos_run(
        airflow_env,
        tmp_path_factory,
        "example_dbt_cosmos",
        {
            "DBT_TARGET": "postgres",
            "DBT_POSTGRES_PORT": str(postgres_server.port),
            "DBT_POSTGRES_USER": "postgres",
            "DBT_POSTGRES_DBNAME": "dbt_cosmos",
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                {"dbt:cost_demo": {"instance_type": INSTANCE}}
            ),
        },
    )
    return run, postgres_server.statements()[logged_before:]


@pytest.fixture(scope="module")
def watcher_run(airflow_env, tmp_path_factory):
    book = duckdb_price_book(tmp_path_factory.mktemp("cosmos-prices"))
    (airflow_env.home / "example_dbt_cosmos_watcher.duckdb").unlink(missing_ok=True)
    return cosmos_run(
        airflow_env,
        tmp_path_factory,
        "example_dbt_cosmos_watcher",
        {"AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book)},
    )


def lines_by_task(ledger: str, source: str) -> dict[str, dict[str, dict]]:
    """task id -> node -> its ledger line; a node twice in a task fails here."""
    rows = ledger_rows(
        ledger,
        "SELECT t.task_id, t.run_id, t.try_number, t.map_index, u.resource, u.quantity, u.attributes, "
        "l.amount_nanos, l.metric, l.method, l.unpriced_reason FROM cost_lines l "
        "JOIN cost_usage u ON u.id = l.usage_id JOIN cost_task_runs t ON t.id = l.task_run_id "
        f"WHERE l.source = '{source}'",
    )
    found: dict[str, dict[str, dict]] = {}
    for row in rows:
        nodes = found.setdefault(row["task_id"], {})
        assert row["resource"] not in nodes, row
        nodes[row["resource"]] = {**row, "attributes": json.loads(row["attributes"])}
    return found


def facet_lines(complete: dict, source: str) -> dict[str, dict]:
    return {
        line["resource"]: line
        for line in complete["run"]["facets"][FACET]["lines"]
        if line["source"] == source
    }


def assert_node_line(node: str, line: dict, relation_schema: str) -> None:
    attributes = line["attributes"]
    assert attributes["dbt_unique_id"] == node and attributes["status"] == "success"
    assert attributes["dbt_resource_type"] == node.split(".")[0]
    assert line["metric"] == "instance_time" and line["method"] == "runtime_rate"
    assert line["unpriced_reason"] is None
    assert Decimal(line["quantity"]) == Decimal(attributes["execution_time"]) > 0
    if node in MATERIALIZED:
        assert attributes["dbt_materialization"] == MATERIALIZED[node]
        assert attributes["dbt_relation"].endswith(f'{relation_schema}."{node.split(".")[-1]}"')


def test_each_local_task_gets_the_lines_of_the_nodes_it_built(local_run):
    run, _ = local_run
    hourly = next(
        Decimal(price["amount"])
        for price in yaml.safe_load(PRICE_BOOK.read_text())["prices"]
        if price["source"] == "postgres" and price.get("match") == {"instance_type": INSTANCE}
    )
    lines = lines_by_task(run.ledger_url, "postgres")
    assert {task: sorted(nodes) for task, nodes in lines.items()} == {
        task: sorted(nodes) for task, nodes in TASK_NODES.items()
    }
    completes = complete_events(run)
    for task_id, nodes in lines.items():
        invocations = set()
        for node, line in nodes.items():
            assert_node_line(node, line, '"dbt_cosmos"."cost_demo"')
            assert line["amount_nanos"] == int(
                quantize_amount(Decimal(line["quantity"]) * hourly / 3600).scaleb(9)
            )
            assert line["attributes"]["instance_type"] == INSTANCE
            invocations.add(line["attributes"]["dbt_invocation_id"])
        assert len(invocations) == 1  # the task's own dbt command, one per task
        on_event = facet_lines(completes[task_id], "postgres")
        assert sorted(on_event) == sorted(nodes)
        for node, line in on_event.items():
            assert Decimal(str(line["amount"])) == Decimal(nodes[node]["amount_nanos"]).scaleb(-9)
            assert line["method"] == "runtime_rate"
        # dbt's process is the task's child: its CPU time is on the task's worker lines
        assert {line["source"] for line in completes[task_id]["run"]["facets"][FACET]["lines"]} == {
            "postgres",
            "airflow_worker",
        }


def test_every_statement_names_its_node_and_the_task_try_that_ran_it(local_run):
    run, statements = local_run
    completes = complete_events(run)
    comments = {}  # the comment dbt appends -> (task, node or None for the task's own statements)
    for task_id, nodes in lines_by_task(run.ledger_url, "postgres").items():
        line = next(iter(nodes.values()))
        task_try = {
            "airflow_dag_id": "example_dbt_cosmos",
            "airflow_task_id": task_id,
            "airflow_run_id": line["run_id"],
            "airflow_try_number": str(line["try_number"]),
            "airflow_map_index": str(line["map_index"]),
            # the run id of the task's own OpenLineage events
            "openlineage_run_id": completes[task_id]["run"]["runId"],
            "dbt_invocation_id": line["attributes"]["dbt_invocation_id"],
        }
        for node in [None, *nodes]:
            tags = task_try if node is None else {**task_try, "dbt_unique_id": node}
            comments["\n/* " + format_comment(tags)[2:-2] + " */"] = (task_id, node)
    seen: dict[str, set] = {}
    assert len(statements) > 40
    for statement in statements:
        body = statement.rstrip().removesuffix(";")
        owner = next((who for comment, who in comments.items() if body.endswith(comment)), None)
        if owner is None:
            assert statement.strip().startswith(UNCOMMENTED), statement
            continue
        seen.setdefault(owner[0], set()).add(owner[1])
    assert {task: nodes - {None} for task, nodes in seen.items()} == {
        task: set(nodes) for task, nodes in TASK_NODES.items()
    }


def test_the_watcher_producer_gets_a_line_per_node_and_the_sensors_none(watcher_run):
    lines = lines_by_task(watcher_run.ledger_url, "duckdb")
    assert list(lines) == [PRODUCER]
    nodes = lines[PRODUCER]
    assert sorted(nodes) == sorted(SEED + MODELS + TESTS)
    assert len({line["attributes"]["dbt_invocation_id"] for line in nodes.values()}) == 1
    for node, line in nodes.items():
        assert_node_line(node, line, '"main"')
        assert line["amount_nanos"] == int(
            quantize_amount(Decimal(line["quantity"]) * PER_HOUR / 3600).scaleb(9)
        )
    completes = complete_events(watcher_run)
    assert set(completes) == {PRODUCER, *SENSORS}
    on_event = facet_lines(completes[PRODUCER], "duckdb")
    assert sorted(on_event) == sorted(nodes)
    for node, line in on_event.items():
        assert Decimal(str(line["amount"])) == Decimal(nodes[node]["amount_nanos"]).scaleb(-9)
    for sensor in SENSORS:  # each follows its node; the producer ran it
        facet = completes[sensor]["run"]["facets"][FACET]
        assert {line["source"] for line in facet["lines"]} == {"airflow_worker"}
        assert facet["unpriced"] == []
