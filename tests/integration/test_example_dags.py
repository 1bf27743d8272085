"""The example DAGs in dags/: every one imports without errors and without cloud credentials, uses the
installed providers' own operators and the usual connection ids, and the ones the demo runs deliver
their cost to Marquez: a real `airflow dags test` posting to an HTTP server on 127.0.0.1 that stands in
for the Marquez lineage API."""

from __future__ import annotations

import ast
import datetime as dt
import functools
import json
import subprocess
import sys
from decimal import Decimal
from importlib.metadata import distributions, version
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_cost_provider.pricing.money import quantize_amount
from tests.support.airflow_env import REPO, AirflowEnv, airflow_bin
from tests.support.http_recorder import recording_server
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

DAGS = REPO / "dags"
PRICE_BOOK = REPO / "airflow_cost_provider" / "pricing" / "price_book.yaml"
FACET = "costProvider_cost"
LINEAGE_PATH = "/api/v1/lineage"

# dag id -> (the provider it shows off, as tagged, and the default connection ids it uses)
PROVIDER_DAGS = {
    "example_bigquery": ("google", {"google_cloud_default"}),
    "example_dataproc": ("google", {"google_cloud_default"}),
    "example_snowflake": ("snowflake", {"snowflake_default"}),
    "example_athena": ("amazon", {"aws_default"}),
    "example_redshift": ("amazon", {"aws_default"}),
    "example_glue": ("amazon", {"aws_default"}),
    "example_emr_serverless": ("amazon", {"aws_default"}),
    "example_databricks": ("databricks", {"databricks_default"}),
    "example_dbt_cloud": ("dbt-cloud", {"dbt_cloud_default"}),
    "example_spark": ("apache-spark", {"spark_default", "livy_default"}),
    "example_azure_data_factory": ("microsoft-azure", {"azure_data_factory_default"}),
    "example_synapse": ("microsoft-azure", {"azure_synapse_default", "azure_synapse_connection"}),
    "example_postgres": ("postgres", {"postgres_default"}),
    "example_mysql": ("mysql", {"mysql_default"}),
    "example_trino": ("trino", {"trino_default"}),
    "example_dremio": ("http", {"dremio_default"}),
    "example_kubernetes": ("cncf-kubernetes", {"kubernetes_default"}),
}
# Providers a DAG the demo runs may use: nothing that needs an account anywhere.
LOCAL_PROVIDERS = {
    "apache-airflow-providers-standard",
    "apache-airflow-providers-common-sql",
    "airflow-cost-provider",
}
# The demo DAGs whose events are checked on their way to Marquez.
MARQUEZ_DAGS = ["example_local_sql", "example_worker_compute"]
# Statements each task of example_local_sql runs: run() with 3, 2 and 0 statements, then one get_first.
LOCAL_SQL_STATEMENTS = {"load_raw_orders": 4, "build_daily_revenue": 3, "check_daily_revenue": 1}


def demo_dag_ids() -> list[str]:
    """The DAGs scripts/demo.sh runs, chosen the way it chooses them."""
    listed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo_dags.py")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return listed.stdout.split()


DEMO_DAGS = demo_dag_ids()


def without_cloud_credentials(env: dict[str, str], home: Path) -> dict[str, str]:
    """The environment with no cloud account: no credential variables, no ~/.aws or gcloud config."""
    prefixes = ("AWS_", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "AZURE_", "DATABRICKS_", "SNOWFLAKE_", "TRINO_")
    clean = {k: v for k, v in env.items() if not k.startswith(prefixes)}
    clean.update(
        HOME=str(home),
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
        CLOUDSDK_CONFIG=str(home / "no-gcloud"),
    )
    return clean


@functools.cache
def airflow_provider_packages() -> dict[str, str]:
    """Python package -> distribution, for every installed distribution registered as an Airflow
    provider (its `apache_airflow_provider` entry point lives in the provider's package)."""
    packages = {}
    for dist in distributions():
        for entry_point in dist.entry_points:
            if entry_point.group == "apache_airflow_provider":
                packages[entry_point.module.rpartition(".")[0]] = dist.metadata["Name"]
    return packages


def provider_distribution(module: str) -> str | None:
    """The installed provider package a module belongs to: apache-airflow-providers-* for
    airflow.providers.*, or this project for its own operators."""
    owners = [package for package in airflow_provider_packages() if module.startswith(package + ".")]
    return airflow_provider_packages()[max(owners, key=len)] if owners else None


def module_docstring(path: str) -> str:
    return ast.get_docstring(ast.parse(Path(path).read_text())) or ""


@pytest.fixture(scope="module")
def examples_env(tmp_path_factory) -> AirflowEnv:
    env = AirflowEnv(tmp_path_factory.mktemp("examples-home"), dags_folder=DAGS)
    env.migrate()
    return env


@pytest.fixture(scope="module")
def inventory(examples_env, tmp_path_factory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("inventory") / "inventory.json"
    env = without_cloud_credentials(examples_env.base_env(), out.parent)
    process = subprocess.run(
        [sys.executable, "-m", "tests.support.dag_inventory", str(DAGS), str(out)],
        check=False,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(out.read_text())


def list_import_errors(env: dict[str, str]) -> tuple[int, list[dict[str, Any]]]:
    """The command's exit code (1 when there are import errors) and the errors it lists."""
    process = subprocess.run(
        [airflow_bin(), "dags", "list-import-errors", "--local", "--output", "json"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Airflow logs to stdout too; the JSON document is the last line that holds a list
    for line in reversed(process.stdout.splitlines()):
        if line.startswith("["):
            return process.returncode, json.loads(line)
    raise AssertionError(f"no JSON list in the output:\n{process.stdout[-2000:]}\n{process.stderr[-2000:]}")


# ------------------------------------------------------------------------------------------ parsing


def test_every_example_dag_imports_without_cloud_credentials(examples_env, tmp_path):
    env = without_cloud_credentials(examples_env.base_env(), tmp_path)
    assert list_import_errors(env) == (0, [])


def test_an_import_error_would_be_reported(examples_env, tmp_path):
    # the same command on a folder with a broken DAG: an empty list above means no errors, not no check
    broken = tmp_path / "dags"
    broken.mkdir()
    (broken / "example_broken.py").write_text(
        "from airflow.sdk import dag\nfrom airflow.providers.no_such_provider import Operator\n"
    )
    env = without_cloud_credentials(examples_env.base_env(), tmp_path)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(broken)
    exit_code, errors = list_import_errors(env)
    assert exit_code == 1
    assert len(errors) == 1 and errors[0]["filepath"].endswith("example_broken.py")
    assert "no_such_provider" in errors[0]["error"]


def test_every_dag_file_defines_its_dag(inventory):
    assert inventory["import_errors"] == {}
    files = {Path(d["fileloc"]).name for d in inventory["dags"].values()}
    assert {p.name for p in DAGS.glob("*.py")} <= files
    assert set(PROVIDER_DAGS) | {"example_local_sql"} <= set(inventory["dags"])


# ------------------------------------------------------------------------------ operators and tags


def test_every_task_uses_an_operator_of_an_installed_provider(inventory):
    for dag_id, dag in inventory["dags"].items():
        for task_id, task in dag["tasks"].items():
            assert provider_distribution(task["operator"]), f"{dag_id}.{task_id}: {task['operator']}"


@pytest.mark.parametrize("dag_id", sorted(PROVIDER_DAGS))
def test_each_provider_example_uses_its_provider_and_default_connections(inventory, dag_id):
    provider, connections = PROVIDER_DAGS[dag_id]
    dag = inventory["dags"][dag_id]
    assert version(f"apache-airflow-providers-{provider}")
    assert provider in dag["tags"] and "cost-provider" in dag["tags"]
    assert "local" not in dag["tags"]  # the demo runs those without a cloud account
    used = {conn for task in dag["tasks"].values() for conn in task["conn_ids"]}
    assert connections <= used, used
    packages = {provider_distribution(task["operator"]) for task in dag["tasks"].values()}
    # its own operators, or the common SQL operator on its connection
    assert f"apache-airflow-providers-{provider}" in packages or packages == {
        "apache-airflow-providers-common-sql"
    }
    doc = module_docstring(dag["fileloc"])
    assert "Cost" in doc and all(f"`{conn}`" in doc for conn in connections), doc
    assert dag["doc_md"].strip() == doc  # shown on the DAG's page in the Airflow UI


# Astronomer Cosmos's DAGs: not an apache-airflow-providers-* package, and not run by the demo (every
# task starts dbt)
COSMOS_DAGS = ["example_dbt_cosmos", "example_dbt_cosmos_watcher"]


@pytest.mark.parametrize("dag_id", sorted(PROVIDER_DAGS) + ["example_local_sql", *COSMOS_DAGS])
def test_examples_run_daily_without_catching_up(inventory, dag_id):
    dag = inventory["dags"][dag_id]
    assert dag["schedule"] in (None, "@daily") and dag["catchup"] is False


@pytest.mark.parametrize("dag_id", COSMOS_DAGS)
def test_the_cosmos_examples_use_cosmos_operators_and_no_connection(inventory, dag_id):
    dag = inventory["dags"][dag_id]
    assert {"cosmos", "dbt", "cost-provider"} <= set(dag["tags"]) and "local" not in dag["tags"]
    assert dag_id not in DEMO_DAGS
    for task_id, task in dag["tasks"].items():
        assert provider_distribution(task["operator"]) == "astronomer-cosmos", f"{dag_id}.{task_id}"
        assert not task["conn_ids"], f"{dag_id}.{task_id} uses {task['conn_ids']}"
    # shown on the DAG's page; Cosmos adds the project's hash after it
    assert dag["doc_md"].startswith(module_docstring(dag["fileloc"]))


def test_the_demo_runs_only_dags_that_need_no_cloud_account(inventory):
    assert set(MARQUEZ_DAGS) <= set(DEMO_DAGS)
    for dag_id in DEMO_DAGS:
        dag = inventory["dags"][dag_id]
        assert "local" in dag["tags"]
        for task_id, task in dag["tasks"].items():
            assert provider_distribution(task["operator"]) in LOCAL_PROVIDERS, f"{dag_id}.{task_id}"
            assert not task["conn_ids"], f"{dag_id}.{task_id} uses {task['conn_ids']}"
        assert "cost" in module_docstring(dag["fileloc"]).lower()


# ------------------------------------------------------------------ the cost on Marquez's lineage API


def job_type(event: dict[str, Any]) -> str | None:
    return event["job"].get("facets", {}).get("jobType", {}).get("jobType")


def event_time(event: dict[str, Any]) -> dt.datetime:
    return dt.datetime.fromisoformat(event["eventTime"].replace("Z", "+00:00"))


def marquez_run_facets(events: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's facets as Marquez shows them: merged in event-time order, a later facet of the same name
    replacing the earlier one."""
    merged: dict[str, Any] = {}
    for event in sorted(events, key=event_time):
        merged.update(event["run"].get("facets", {}))
    return merged


@pytest.fixture(scope="module", params=MARQUEZ_DAGS)
def marquez_run(request, examples_env, tmp_path_factory):
    dag_id = request.param
    warehouse = tmp_path_factory.mktemp("warehouse") / "local_warehouse.db"
    with recording_server() as marquez:
        run = examples_env.dags_test(
            dag_id,
            transport={"type": "http", "url": marquez.url, "endpoint": "api/v1/lineage", "timeout": 5},
            env={"AIRFLOW_CONN_LOCAL_SQLITE": json.dumps({"conn_type": "sqlite", "host": str(warehouse)})},
        )
        requests = list(marquez.requests)
    assert run.process.returncode == 0, run.output[-4000:]
    return dag_id, requests


def task_runs(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        if job_type(event) == "TASK":
            runs.setdefault(event["run"]["runId"], []).append(event)
    return runs


def test_every_event_is_posted_to_the_lineage_api_and_valid(marquez_run):
    _, requests = marquez_run
    assert requests
    assert {path for path, _ in requests} == {LINEAGE_PATH}
    for _, event in requests:
        validate_event(event)


def test_each_task_run_completes_with_its_cost(marquez_run, inventory):
    dag_id, requests = marquez_run
    runs = task_runs([event for _, event in requests])
    completed = {}
    for run_id, events in runs.items():
        completes = [e for e in events if e["eventType"] == "COMPLETE"]
        assert len(completes) == 1, [e["eventType"] for e in events]
        facet = completes[0]["run"]["facets"][FACET]
        assert facet["totals"] and facet["totals"][0]["amount"] > 0
        assert {line["source"] for line in facet["lines"]} >= {"airflow_worker"}
        completed[run_id] = completes[0]["job"]["name"]
    task_ids = {name.split(".", 1)[1] for name in completed.values()}
    assert task_ids == set(inventory["dags"][dag_id]["tasks"])
    assert all(name.startswith(f"{dag_id}.") for name in completed.values())


def test_marquez_keeps_the_cost_on_each_task_run(marquez_run):
    _, requests = marquez_run
    for events in task_runs([event for _, event in requests]).values():
        complete = next(e for e in events if e["eventType"] == "COMPLETE")
        # nothing arrives for the run after its COMPLETE, which would reopen it in Marquez
        assert [e["eventType"] for e in events if event_time(e) > event_time(complete)] == []
        merged = marquez_run_facets(events)
        assert merged[FACET] == complete["run"]["facets"][FACET]


@pytest.mark.parametrize("marquez_run", ["example_local_sql"], indirect=True)
def test_the_local_sql_statements_are_in_the_cost_with_the_reason_they_are_unpriced(marquez_run):
    _, requests = marquez_run
    completes = {
        e["job"]["name"].split(".", 1)[1]: e
        for e in (event for _, event in requests)
        if job_type(e) == "TASK" and e["eventType"] == "COMPLETE"
    }
    for task_id, statements in LOCAL_SQL_STATEMENTS.items():
        facet = completes[task_id]["run"]["facets"][FACET]
        sqlite = [u for u in facet["unpriced"] if u["source"] == "sqlite"]
        assert [u["count"] for u in sqlite] == [statements], sqlite  # one cause, counted
        for usage in sqlite:
            assert usage["metric"] == "instance_time" and usage["unit"] == "instance-second"
            assert usage["resource"] == "local_sqlite"
            assert "connection_pricing" in usage["reason"]
        assert facet["status"] == "partial"  # priced worker compute, unpriced statements


# ------------------------------------------------------------ example_postgres as docker compose runs it

# Statements each task of example_postgres runs.
POSTGRES_STATEMENTS = {
    "create_tables": 3,
    "load_orders": 2,
    "upsert_daily_revenue": 1,
    "check_daily_revenue": 1,
}


def test_example_postgres_runs_priced_as_docker_compose_wires_it(examples_env, postgres_server):
    """docker-compose.yaml points postgres_default at a database of its own and names its instance;
    the same settings here, on a real PostgreSQL server, give one priced line per statement."""
    compose_env = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["x-airflow-common"][
        "environment"
    ]
    pricing = json.loads(compose_env["AIRFLOW__COST_PROVIDER__CONNECTION_PRICING"])
    instance = pricing["postgres_default"]["instance_type"]
    hourly = next(
        Decimal(p["amount"])
        for p in yaml.safe_load(PRICE_BOOK.read_text())["prices"]
        if p["source"] == "postgres" and p["match"].get("instance_type") == instance
    )
    postgres_server.create_database("example_shop")
    run = examples_env.dags_test(
        "example_postgres",
        env={
            "AIRFLOW_CONN_POSTGRES_DEFAULT": postgres_server.conn_uri("example_shop"),
            "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(pricing),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    logged = [s for s in postgres_server.statements() if "airflow_dag_id='example_postgres'" in s]
    completes = {
        e["job"]["name"].split(".", 1)[1]: e
        for e in run.events()
        if job_type(e) == "TASK" and e["eventType"] == "COMPLETE"
    }
    for task_id, statements in POSTGRES_STATEMENTS.items():
        assert len([s for s in logged if f"airflow_task_id='{task_id}'" in s]) == statements, task_id
        facet = completes[task_id]["run"]["facets"][FACET]
        lines = [line for line in facet["lines"] if line["source"] == "postgres"]
        assert len(lines) == statements and facet["status"] == "estimated", facet
        for line in lines:
            assert line["method"] == "runtime_rate" and line["unit"] == "instance-second"
            assert line["priceRef"].endswith(f"postgres/instance_time[instance_type={instance}]")
            expected = quantize_amount(Decimal(str(line["quantity"])) * hourly / 3600)
            assert abs(Decimal(str(line["amount"])) - expected) <= Decimal("1e-9")
